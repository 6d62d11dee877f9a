"""ADR-072's stage adapters: where each stage reads and writes (key-value data, vectors and the
relational records), the divergence queue and its repair, stage 3's fallback, stage 4's
untouched escape hatch, promotion and rollback through every stage without losing a write or a
Q-value's count, and crashes anywhere inside a transition or the escape hatch's export
reopening in exactly one stage with everything acknowledged."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
from conformance import conformance_test

from crashgate.backends import (
    Capability,
    CorruptStore,
    QValue,
    Relational,
    SimulatedCrash,
    VectorRecord,
    VersionTooNew,
    os_env,
    plan_json,
    resolve,
)
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.powerloss import POWER_MODELS
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages import (
    CATCH_UP,
    ESCAPE_FAILPOINTS,
    TRANSITION_FAILPOINTS,
    RelationalData,
    StageAdapter,
    catch_up,
    open_stage,
    relational_data,
    roles,
    write_failpoint,
)
from crashgate.reference.stages.control import StageControl, plan_ref, q_value_ref
from crashgate.reference.stages.sync import BATCH, sync_relational

TestStage0Conformance = conformance_test("stage0", max_examples=8)
TestStage2Conformance = conformance_test("stage2", max_examples=8)
TestStage3Conformance = conformance_test("stage3", max_examples=8)

PATH = "/data/stage"


@dataclasses.dataclass
class World:
    disk: SimDisk = dataclasses.field(default_factory=lambda: SimDisk(DiskImage.empty("/data")))
    failpoints: ArmedFailpoints = dataclasses.field(default_factory=ArmedFailpoints)

    def open(self, stage: int) -> StageAdapter:
        return open_stage(PATH, sim_env(self.disk, failpoints=self.failpoints), stage)

    def crash(self) -> None:
        self.disk.crash()
        self.failpoints.disarm()

    def read_file(self, path: str) -> bytes:
        f = sim_env(self.disk).fs.open(path, "r")
        try:
            return f.read(0, f.size())
        finally:
            f.close()

    def write_file(self, path: str, data: bytes) -> None:
        fs = sim_env(self.disk).fs
        fs.remove(path)
        f = fs.open(path, "w")
        try:
            f.write(0, data)
        finally:
            f.close()


@pytest.fixture
def world() -> World:
    return World()


def recs(first: int, n: int, tag: str) -> list[VectorRecord]:
    return [VectorRecord.of(i, [i * 0.5, 1.0, -i / 7], {"tag": tag, "n": i})
            for i in range(first, first + n)]


def contents(store: Any) -> tuple[list[tuple[str, bytes]], list[VectorRecord], RelationalData]:
    return store.scan(""), store.fetch(store.ids()), relational_data(store)


@dataclasses.dataclass
class RelModel:
    """What a store's relational records must be: Q-values with their counts, and plans."""

    q: dict[tuple[str, str], QValue] = dataclasses.field(default_factory=dict)
    plans: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def update(self, store: Any, state: str, action: str, value: float) -> None:
        old = self.q.get((state, action))
        self.q[state, action] = QValue(value, (old.updates if old else 0) + 1)
        assert store.q_value_update(state, action, value) == self.q[state, action]

    def store(self, store: Any, plan_id: str, plan: dict[str, Any] | None) -> None:
        if plan is None:
            store.goap_delete(plan_id)
            self.plans.pop(plan_id, None)
        else:
            store.goap_store(plan_id, plan)
            self.plans[plan_id] = plan

    def data(self) -> RelationalData:
        return RelationalData(tuple((s, a, q) for (s, a), q in sorted(self.q.items())),
                              tuple((p, plan_json(v)) for p, v in sorted(self.plans.items())))


def fill_relational(store: Any, n: int = 12) -> RelModel:
    """Q-values over three states (some updated twice, so counts differ) and plans."""
    m = RelModel()
    for i in range(n):
        m.update(store, f"s{i % 3}", f"a{i}", i * 0.5)
        if i % 4 == 0:
            m.update(store, f"s{i % 3}", f"a{i}", -i / 3)
    for i in range(5):
        m.store(store, f"p{i}", {"goal": f"g{i}", "steps": list(range(i))})
    return m


def filled_relational() -> RelationalData:
    """What ``fill_relational`` leaves in a store (filled into a memory store to find out)."""
    memory = resolve("memory").open("/data/m", sim_env(SimDisk(DiskImage.empty("/data"))))
    return fill_relational(memory).data()


def io_error(name: str) -> None:
    raise OSError(5, f"injected EIO at {name}")


@pytest.mark.parametrize("stage", range(5))
def test_each_stage_reads_and_writes_the_stores_adr072_names(world: World, stage: int) -> None:
    store = world.open(stage)
    store.put("k", b"v")
    store.upsert(recs(0, 2, "x"))
    r = roles(stage)
    for name in ("sqlite", "rvf"):
        if name not in r.stores:
            continue
        inner = store.store(name)
        kv_here = name in (r.kv, r.mirror)
        vec_here = name in (r.vectors, r.mirror)
        assert (inner.get("k") == b"v") is kv_here, name
        assert ([x.id for x in inner.fetch([0, 1])] == [0, 1]) is vec_here, name
    assert store.get("k") == b"v" and [x.id for x in store.fetch([0, 1, 2])] == [0, 1]
    assert store.declaration.failpoints[:1] + store.declaration.failpoints[-1:] in (
        (), ("stage2.after-sqlite-write", "rvf.after-manifest-write"),
        ("rvf.after-data-write", "stage3.after-rvf-write"),
        ("rvf.after-data-write", "rvf.after-manifest-write"))
    store.close()


def test_a_failed_shadow_write_is_a_durable_divergence_and_repair_replays_it(world: World
                                                                              ) -> None:
    store = world.open(2)
    store.put("a", b"1")
    world.failpoints.arm("rvf.after-data-write", action=io_error, times=None)
    store.put("a", b"2")                  # the call succeeds: SQLite, the truth, has it
    store.upsert(recs(0, 2, "shadowless"))
    world.failpoints.disarm()
    assert store.get("a") == b"2" and [r.id for r in store.fetch([0, 1])] == [0, 1]
    assert store.store("rvf").get("a") == b"1" and store.store("rvf").count() == 0
    queued = store.divergences()
    assert [(d.op, d.keys, d.ids, d.behind) for d in queued] == [
        ("put", ("a",), (), "rvf"), ("upsert", (), (0, 1), "rvf")]
    assert "injected EIO" in queued[0].error
    store.close()
    again = world.open(2)                 # the queue is durable
    assert len(again.divergences()) == 2
    assert again.repair() == 2
    assert again.divergences() == []
    assert contents(again.store("rvf")) == contents(again.store("sqlite"))
    again.close()


def test_stage3_serves_a_failed_rvf_read_from_sqlite_and_counts_it(world: World,
                                                                   monkeypatch) -> None:
    store = world.open(3)
    store.put("a", b"1")
    store.upsert(recs(0, 2, "x"))
    rvf = store.store("rvf")

    def broken(*args: object) -> None:
        raise CorruptStore("store.rvf", "injected damage")

    for name in ("get", "fetch", "scan"):
        monkeypatch.setattr(rvf, name, broken)
    assert store.get("a") == b"1"
    assert [r.id for r in store.fetch([0, 1])] == [0, 1]
    assert store.fallbacks == {"get": 1, "fetch": 1}
    assert "injected damage" in store.fallback_examples[0][1]
    monkeypatch.undo()
    # a write RVF took and SQLite did not: recorded, and never served from SQLite
    world.failpoints.arm("stage3.after-rvf-write", action=lambda n: None)
    sqlite = store.store("sqlite")
    monkeypatch.setattr(sqlite, "put", lambda k, v: io_error("sqlite put"))
    store.put("a", b"2")
    monkeypatch.undo()
    assert [(d.op, d.behind) for d in store.divergences()] == [("put", "sqlite")]
    monkeypatch.setattr(rvf, "get", broken)
    with pytest.raises(CorruptStore, match="SQLite is behind"):
        store.get("a")
    monkeypatch.undo()
    assert store.repair() == 1 and sqlite.get("a") == b"2"
    store.close()


def test_stage4_never_writes_the_escape_hatch(world: World) -> None:
    store = world.open(3)
    store.put("a", b"1")
    store.promote()
    before = world.disk.cache_image().files
    hatch = {n: b for n, b in before.items() if "/sqlite.db" in n}
    assert hatch
    store.put("b", b"2")
    store.upsert(recs(0, 3, "four"))
    store.delete("a")
    store.q_value_update("s", "a", 1.0)
    store.q_value_put("s", "b", QValue(2.0, 5))
    store.goap_store("p", {"n": 1})
    after = world.disk.cache_image().files
    assert {n: b for n, b in after.items() if "/sqlite.db" in n} == hatch
    store.close()


def test_promote_and_rollback_through_every_stage_keep_every_write(world: World) -> None:
    want_kv: dict[str, bytes] = {}
    want_vec: dict[int, VectorRecord] = {}
    rel = RelModel()
    store = world.open(0)
    path = [1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    for step, to in enumerate(path):
        key = f"k{step}"
        store.put(key, bytes([step]))
        want_kv[key] = bytes([step])
        for action in ("a", f"b{step % 2}"):   # counts grow in every stage
            rel.update(store, f"s{step % 3}", action, step / 4)
        rel.store(store, f"p{step % 4}", {"step": step, "stage": store.stage})
        if step % 5 == 4:
            rel.store(store, f"p{(step + 1) % 4}", None)
        for r in recs(step * 2, 3, f"s{store.stage}"):   # overlaps: replaces a record
            want_vec[r.id] = r
        store.upsert(recs(step * 2, 3, f"s{store.stage}"))
        if step % 3 == 0:
            store.remove([step])
            want_vec.pop(step, None)
        assert (store.promote() if to > store.stage else store.rollback()) == to
        for s in (store, world.open(to)) if False else (store,):
            assert dict(s.scan("")) == want_kv
            assert s.fetch(range(100)) == sorted(want_vec.values(), key=lambda r: r.id)
            assert relational_data(s) == rel.data()
        store.close()
        store = world.open(0)   # the name's stage is for a new adapter only
        assert store.stage == to
        assert dict(store.scan("")) == want_kv
        assert store.fetch(range(100)) == sorted(want_vec.values(), key=lambda r: r.id)
        assert relational_data(store) == rel.data()
        r = roles(to)
        for name in {r.kv, r.mirror} - {None}:   # every store that holds relational data
            assert relational_data(store.store(str(name))) == rel.data(), (to, name)
    with pytest.raises(ValueError, match="stage 4 has no next stage"):
        store.promote()
    store.close()


def test_a_stage_out_of_range_is_refused_before_anything_is_written(world: World) -> None:
    with pytest.raises(ValueError, match="stage 7 is not an ADR-072 stage"):
        world.open(7)
    with pytest.raises(Exception, match="no previous stage"):
        s = world.open(0)
        try:
            s.rollback()
        finally:
            s.close()


def _crashes_inside(world: World, act: str, stage: int, budget: int = 60
                    ) -> list[tuple[int | None, tuple[object, ...]]]:
    """Fill a stage-``stage`` adapter, then run ``act`` (promote, rollback, escape) and crash
    after each of its disk operations (process crash and power loss); returns, per crash
    state, the stage it reopened in and its contents (None and the error if it did not open)."""
    store = world.open(stage)
    store.write_batch({f"k{i:04d}": bytes([i % 251]) for i in range(BATCH + 40)})
    store.upsert(recs(0, 30, "before"))
    fill_relational(store)
    if stage in (2, 3):   # dual-write: the other store already has it; make it lag
        other = store.store(roles(stage).mirror)
        other.delete("k0003")
        other.remove([5])
        other.q_value_put("s0", "a0", QValue(0.0, 1))   # one update short
        other.q_value_delete("s1", "a1")
        other.q_value_put("stale", "x", QValue(9.0, 9))   # one the truth never had
        other.goap_delete("p1")
        other.goap_store("p2", {"goal": "old"})
    base = world.disk.cache_image()
    disk = SimDisk(base)
    env = sim_env(disk)
    store.close()
    moved = open_stage(PATH, env, stage)
    start = disk.position
    {"promote": moved.promote, "rollback": moved.rollback,
     "escape": moved.activate_escape_hatch}[act]()
    moved.close()
    inside = list(range(start + 1, disk.position))
    assert inside, "the transition did no disk operation"
    out = []
    models = [CrashModel.PROCESS, *POWER_MODELS]
    for _, image in enumerate_crash_states(disk.base, disk.trace, {m: inside for m in models},
                                           models, budget, 1):
        try:
            again = open_stage(PATH, sim_env(SimDisk(image)), 0)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            out.append((None, (type(exc).__name__, str(exc))))
            continue
        out.append((again.stage, contents(again)))
        again.close()
    return out


@pytest.mark.parametrize(("stage", "act", "to"), [
    (0, "promote", 1), (1, "promote", 2), (2, "promote", 3), (3, "promote", 4),
    (4, "rollback", 3), (3, "rollback", 2), (2, "rollback", 1), (1, "rollback", 0),
    (4, "escape", 0)])
def test_a_crash_anywhere_in_a_transition_reopens_in_one_stage_with_everything(
        world: World, stage: int, act: str, to: int) -> None:
    want = ([(f"k{i:04d}", bytes([i % 251])) for i in range(BATCH + 40)],
            recs(0, 30, "before"), filled_relational())
    seen = _crashes_inside(world, act, stage)
    assert len(seen) >= 10
    stages = {s for s, _ in seen}
    assert stages <= {stage, to}, seen
    assert all(got == want for _, got in seen), [s for s, got in seen if got != want][:3]


def test_crash_at_the_transition_failpoints(world: World) -> None:
    store = world.open(1)
    store.write_batch({f"k{i:04d}": b"x" for i in range(2 * BATCH + 5)})
    for name, hits in ((TRANSITION_FAILPOINTS[0], 1), (TRANSITION_FAILPOINTS[1], 0)):
        world.failpoints.arm(name, after_hits=hits)
        with pytest.raises(SimulatedCrash):
            store.promote()
        world.crash()
        store = world.open(0)
        assert store.stage == 1 and len(store.scan("")) == 2 * BATCH + 5
    assert store.promote() == 2   # resumed: the batches written before the crash stay
    assert store.store("rvf").scan("") == store.scan("")
    store.close()


def test_a_crash_in_the_export_leaves_the_previous_escape_hatch_as_it_was(world: World) -> None:
    store = world.open(3)
    store.put("old", b"in sqlite")
    store.q_value_update("s", "a", 1.0)
    store.promote()
    store.put("new", b"rvf only")
    store.q_value_update("s", "a", 2.0)
    store.goap_store("p", {"in": "rvf only"})
    assert store.escape_hatch()[2] == RelationalData((("s", "a", QValue(1.0, 1)),), ())
    hatch = {n: b for n, b in world.disk.durable_image().files.items() if "/sqlite.db" in n}
    for name in ESCAPE_FAILPOINTS[:1]:
        world.failpoints.arm(name)
        with pytest.raises(SimulatedCrash):
            store.activate_escape_hatch()
        world.crash()
        files = world.disk.durable_image().files
        assert {n: b for n, b in files.items() if n.endswith("/sqlite.db")} == {
            n: b for n, b in hatch.items() if n.endswith("/sqlite.db")}
        store = world.open(0)
        assert store.stage == 4
    assert store.escape_hatch()[2] == RelationalData((("s", "a", QValue(1.0, 1)),), ())
    assert store.activate_escape_hatch() == 0
    assert dict(store.scan("")) == {"old": b"in sqlite", "new": b"rvf only"}
    assert store.q_value_get("s", "a") == QValue(2.0, 2)   # exported with its count
    assert store.goap_retrieve("p") == {"in": "rvf only"}
    with pytest.raises(ValueError, match="escape hatch is stage 4's"):
        store.activate_escape_hatch()
    store.close()


def test_the_write_failpoint_sits_between_the_two_writes() -> None:
    assert [write_failpoint(s) for s in range(5)] == [
        None, None, "stage2.after-sqlite-write", "stage3.after-rvf-write", None]
    assert resolve("stage2?sync=one").label == "stage2?sync=one"


# -- relational records (ADR-072's Q-values and GOAP plans) ----------------------------------

@pytest.mark.parametrize("stage", range(5))
def test_each_stage_keeps_relational_records_where_its_key_value_data_goes(world: World,
                                                                           stage: int) -> None:
    store = world.open(stage)
    assert store.declaration.has(Capability.RELATIONAL) and isinstance(store, Relational)
    m = fill_relational(store)
    store.q_value_put("s9", "z", QValue(7.0, 40))
    m.q["s9", "z"] = QValue(7.0, 40)
    r = roles(stage)
    assert r.truth("relational") == r.kv
    for name in ("sqlite", "rvf"):
        if name in r.stores:
            here = name in (r.kv, r.mirror)
            assert (relational_data(store.store(name)) == m.data()) is here, name
            assert (relational_data(store.store(name)) == RelationalData((), ())) is not here
    assert relational_data(store) == m.data()
    assert store.q_value_get("s9", "z") == QValue(7.0, 40)
    assert store.relational_states() == ["s0", "s1", "s2", "s9"]
    assert store.goap_ids() == [f"p{i}" for i in range(5)]
    if r.mirror is not None:   # reads come from the truth only: a changed mirror is not seen
        mirror = store.store(r.mirror)
        mirror.q_value_put("s0", "a0", QValue(-5.0, 99))
        mirror.goap_store("p0", {"goal": "mirror"})
        mirror.q_value_put("only-in-mirror", "a", QValue(1.0, 1))
        assert relational_data(store) == m.data()
    store.close()


def test_a_failed_shadow_q_value_update_is_a_divergence_repair_fixes_with_the_count(
        world: World) -> None:
    store = world.open(2)
    store.q_value_update("s", "a", 1.0)
    store.goap_store("p", {"n": 1})
    world.failpoints.arm("rvf.after-data-write", action=io_error, times=None)
    assert store.q_value_update("s", "a", 2.0) == QValue(2.0, 2)   # SQLite, the truth, has it
    assert store.q_value_update("s", "a", 3.0) == QValue(3.0, 3)
    store.goap_store("p", {"n": 2})
    store.q_value_put("s", "b", QValue(4.0, 6))
    world.failpoints.disarm()
    assert store.q_value_update("t", "a", 5.0) == QValue(5.0, 1)
    rvf = store.store("rvf")
    assert rvf.q_value_get("s", "a") == QValue(1.0, 1) and rvf.goap_retrieve("p") == {"n": 1}
    assert rvf.q_value_get("s", "b") is None and rvf.q_value_get("t", "a") == QValue(5.0, 1)
    queued = store.divergences()
    assert [(d.op, d.keys, d.ids, d.relational, d.behind) for d in queued] == [
        ("q_value_update", (), (), (q_value_ref("s", "a"),), "rvf"),
        ("q_value_update", (), (), (q_value_ref("s", "a"),), "rvf"),
        ("goap_store", (), (), (plan_ref("p"),), "rvf"),
        ("q_value_put", (), (), (q_value_ref("s", "b"),), "rvf")]
    assert "injected EIO" in queued[0].error
    store.close()
    again = world.open(2)                 # the queue, relational names and all, is durable
    assert again.divergences() == queued
    assert again.repair() == 4 and again.divergences() == []
    rvf = again.store("rvf")
    assert rvf.q_value_get("s", "a") == QValue(3.0, 3)   # the exact count, not 1 + a replay
    assert rvf.q_value_get("s", "b") == QValue(4.0, 6) and rvf.goap_retrieve("p") == {"n": 2}
    assert contents(rvf) == contents(again.store("sqlite"))
    assert again.q_value_update("s", "a", 6.0) == QValue(6.0, 4)
    assert rvf.q_value_get("s", "a") == QValue(6.0, 4)
    again.close()


def test_stage3_serves_relational_reads_from_sqlite_unless_it_is_behind(world: World,
                                                                        monkeypatch) -> None:
    store = world.open(3)
    store.q_value_update("s", "a", 1.0)
    store.q_value_update("t", "a", 2.0)
    store.goap_store("p", {"n": 1})
    sqlite, rvf = store.store("sqlite"), store.store("rvf")
    monkeypatch.setattr(sqlite, "q_value_put", lambda *a: io_error("sqlite q_value_put"))
    assert store.q_value_update("s", "a", 3.0) == QValue(3.0, 2)   # RVF, the truth, has it
    monkeypatch.undo()
    assert [(d.op, d.relational, d.behind) for d in store.divergences()] == [
        ("q_value_update", (q_value_ref("s", "a"),), "sqlite")]

    def broken(*args: object) -> None:
        raise CorruptStore("store.rvf", "injected damage")

    for name in ("q_value_get", "q_values", "relational_states", "goap_retrieve", "goap_ids"):
        monkeypatch.setattr(rvf, name, broken)
    assert store.q_value_get("t", "a") == QValue(2.0, 1)
    assert store.q_values("t") == {"a": QValue(2.0, 1)}
    assert store.goap_retrieve("p") == {"n": 1} and store.goap_ids() == ["p"]
    assert store.fallbacks == {"q_value_get": 1, "q_values": 1, "goap_retrieve": 1,
                               "goap_ids": 1}
    for read in (lambda: store.q_value_get("s", "a"), lambda: store.q_values("s"),
                 store.relational_states):   # SQLite is a count short there: never served
        with pytest.raises(CorruptStore, match="SQLite is behind"):
            read()
    monkeypatch.undo()
    assert store.repair() == 1 and sqlite.q_value_get("s", "a") == QValue(3.0, 2)
    store.close()


def test_sync_relational_copies_exactly_and_only_what_differs(world: World) -> None:
    src = resolve("memory").open("/data/src", sim_env(world.disk))
    dst = world.open(0).store("sqlite")
    for i in range(BATCH + 5):
        src.q_value_put(f"s{i % 7}", f"a{i}", QValue(i / 3, i + 1))
    src.goap_store("same", {"a": [1, {"b": None}]})
    src.goap_store("typed", {"n": 1})
    dst.goap_store("same", {"a": [1, {"b": None}]})
    dst.goap_store("typed", {"n": True})         # equal in Python, not in JSON
    dst.goap_store("gone", {})
    dst.q_value_put("s0", "a0", QValue(0.0, 7))  # a count that differs
    dst.q_value_put("stale", "x", QValue(1.0, 1))
    batches: list[int] = []
    written = sync_relational(src, dst, lambda: batches.append(1))
    assert written == (BATCH + 5) + 1 + 1 + 1 and len(batches) == 2
    assert relational_data(dst) == relational_data(src)
    assert dst.goap_retrieve("typed") == {"n": 1} and dst.q_value_get("stale", "x") is None
    assert sync_relational(src, dst, lambda: batches.append(1)) == 0 and len(batches) == 2
    src.q_value_update("s1", "a1", 9.0)
    src.q_value_update("s2", "a2", 9.0)
    src.goap_delete("same")
    # only the states and plans named: s2's new count waits for a sync that names it
    assert sync_relational(src, dst, lambda: None, states=["s1"], plans=["same"]) == 2
    assert dst.q_value_get("s1", "a1") == QValue(9.0, 3) and dst.goap_retrieve("same") is None
    assert dst.q_value_get("s2", "a2") == QValue(2 / 3, 3)
    src.close()


def test_every_catch_up_of_key_value_data_carries_relational_data() -> None:
    for (here, to), entries in CATCH_UP.items():
        steps = catch_up(here, to)
        kv = [(src, dst) for data, src, dst in steps if data == "kv"]
        assert kv == [(src, dst) for data, src, dst in steps if data == "relational"], (here, to)
        assert kv == [(src, dst) for role, src, dst in entries if role == "kv"]
        assert [(s, d) for data, s, d in steps if data == "vectors"] == [
            (s, d) for role, s, d in entries if role == "vectors"]


@pytest.mark.parametrize("stage", [2, 3])
def test_concurrent_q_value_updates_leave_the_mirror_with_the_truths_count(
        tmp_path: Path, stage: int) -> None:
    store = open_stage(str(tmp_path / "stage"), os_env(), stage)
    died: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(25):
                store.q_value_update("s", "a", float(i))
        except BaseException as exc:  # noqa: BLE001 - reported in the test's thread
            died.append(exc)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not died, died
    truth = store.q_value_get("s", "a")
    assert truth is not None and truth.updates == 100
    r = roles(stage)
    assert store.store(str(r.mirror)).q_value_get("s", "a") == truth
    assert store.store(r.kv).q_value_get("s", "a") == truth
    store.close()


@pytest.mark.parametrize("stage", [2, 3])
def test_after_a_crash_between_the_two_writes_the_next_update_gives_the_mirror_the_count(
        world: World, stage: int) -> None:
    store = world.open(stage)
    store.q_value_update("s", "a", 1.0)
    world.failpoints.arm(str(write_failpoint(stage)))
    with pytest.raises(SimulatedCrash):
        store.q_value_update("s", "a", 2.0)
    world.crash()
    # the reopen would reconcile the mirror (test_stage_reconcile.py); recorded clean, it does
    # not, so the lag outlives the reopen and the next update alone must mend it
    control = StageControl(open_sqlite(f"{PATH}/control.db", sim_env(world.disk)), "control")
    control.set_clean_shutdown(True)
    control.close()
    store = world.open(0)
    assert store.reconciled == 0
    r = roles(stage)
    truth, mirror = store.store(r.kv), store.store(str(r.mirror))
    assert mirror.q_value_get("s", "a") == QValue(1.0, 1)   # not a recorded divergence
    got = truth.q_value_get("s", "a")
    assert got is not None and store.q_value_get("s", "a") == got
    new = store.q_value_update("s", "a", 3.0)
    assert new == QValue(3.0, got.updates + 1)
    assert mirror.q_value_get("s", "a") == new   # the truth's record, not a replayed update
    store.close()


def test_stage1_refuses_an_rvf_file_older_than_its_last_vector_write(world: World) -> None:
    """Stage 1 keeps key-value data in SQLite and vectors in RVF: RVF rolled back to an earlier
    commit (damage to its last commit reads as a torn one) beside SQLite's newer data would be
    a state that never was. It is refused; an RVF newer than the record (a crash between RVF's
    commit and the record) is accepted."""
    store = world.open(1)
    store.upsert(recs(0, 2, "first"))
    old_rvf = world.read_file(f"{PATH}/store.rvf")
    store.upsert(recs(2, 2, "second"))
    store.put("k", b"after the second upsert")
    store.close()
    newer_rvf = world.read_file(f"{PATH}/store.rvf")
    world.write_file(f"{PATH}/store.rvf", old_rvf)     # RVF back at its first commit
    with pytest.raises(CorruptStore, match="RVF lost committed writes"):
        world.open(1)
    # the other way round: the record behind RVF, as a crash before it was written leaves it
    world.write_file(f"{PATH}/store.rvf", newer_rvf)
    control = StageControl(open_sqlite(f"{PATH}/control.db", sim_env(world.disk)), "control")
    control.set_rvf_epoch(1)
    control.close()
    again = world.open(1)
    assert [r.id for r in again.fetch(range(10))] == [0, 1, 2, 3]
    assert again.get("k") == b"after the second upsert"
    again.close()


# -- wire version ------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", range(5))
def test_a_stage_that_opens_rvf_declares_its_wire_version_and_gates_on_it(world: World,
                                                                           stage: int) -> None:
    env = sim_env(world.disk, failpoints=world.failpoints)
    store = open_stage(PATH, env, stage, wire_version="2")
    opens_rvf = "rvf" in roles(stage).stores
    assert store.declaration.has(Capability.WIRE_VERSION) is opens_rvf
    assert store.declaration.wire_version == (2 if opens_rvf else None)
    store.put("k", b"v2")
    store.upsert(recs(0, 1, "v2"))
    store.close()
    if not opens_rvf:
        return
    before = world.disk.cache_image()
    for extra in ({}, {"readonly": "true"}):   # an older writer or reader: refused, untouched
        with pytest.raises(VersionTooNew, match="requires RVF wire version 2"):
            open_stage(PATH, sim_env(world.disk), stage, wire_version="1", **extra)
        assert before.diff(world.disk.cache_image()) == []
    newer = open_stage(PATH, sim_env(world.disk), stage, wire_version="3")
    assert newer.declaration.wire_version == 3
    assert newer.get("k") == b"v2" and [r.id for r in newer.fetch([0])] == [0]
    newer.close()
