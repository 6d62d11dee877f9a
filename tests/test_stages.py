"""ADR-072's stage adapters: where each stage reads and writes, the divergence queue and its
repair, stage 3's fallback, stage 4's untouched escape hatch, promotion and rollback through
every stage without losing a write, and crashes anywhere inside a transition or the escape
hatch's export reopening in exactly one stage with everything acknowledged."""

from __future__ import annotations

import dataclasses

import pytest
from conformance import conformance_test

from crashgate.backends import CorruptStore, SimulatedCrash, VectorRecord, resolve
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.powerloss import POWER_MODELS
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.stages import (
    ESCAPE_FAILPOINTS,
    TRANSITION_FAILPOINTS,
    StageAdapter,
    open_stage,
    roles,
    write_failpoint,
)
from crashgate.reference.stages.sync import BATCH

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


@pytest.fixture
def world() -> World:
    return World()


def recs(first: int, n: int, tag: str) -> list[VectorRecord]:
    return [VectorRecord.of(i, [i * 0.5, 1.0, -i / 7], {"tag": tag, "n": i})
            for i in range(first, first + n)]


def contents(store: object) -> tuple[list[tuple[str, bytes]], list[VectorRecord]]:
    return store.scan(""), store.fetch(store.ids())   # type: ignore[attr-defined]


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
    after = world.disk.cache_image().files
    assert {n: b for n, b in after.items() if "/sqlite.db" in n} == hatch
    store.close()


def test_promote_and_rollback_through_every_stage_keep_every_write(world: World) -> None:
    want_kv: dict[str, bytes] = {}
    want_vec: dict[int, VectorRecord] = {}
    store = world.open(0)
    path = [1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    for step, to in enumerate(path):
        key = f"k{step}"
        store.put(key, bytes([step]))
        want_kv[key] = bytes([step])
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
        store.close()
        store = world.open(0)   # the name's stage is for a new adapter only
        assert store.stage == to
        assert dict(store.scan("")) == want_kv
        assert store.fetch(range(100)) == sorted(want_vec.values(), key=lambda r: r.id)
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
    if stage in (2, 3):   # dual-write: the other store already has it; make it lag
        other = store.store(roles(stage).mirror)
        other.delete("k0003")
        other.remove([5])
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
            recs(0, 30, "before"))
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
    store.promote()
    store.put("new", b"rvf only")
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
    assert store.activate_escape_hatch() == 0
    assert dict(store.scan("")) == {"old": b"in sqlite", "new": b"rvf only"}
    with pytest.raises(ValueError, match="escape hatch is stage 4's"):
        store.activate_escape_hatch()
    store.close()


def test_the_write_failpoint_sits_between_the_two_writes() -> None:
    assert [write_failpoint(s) for s in range(5)] == [
        None, None, "stage2.after-sqlite-write", "stage3.after-rvf-write", None]
    assert resolve("stage2?sync=one").label == "stage2?sync=one"
