"""ADR-0003's SQLite -> Postgres stage adapters (``pg-stage1`` ... ``pg-stage3``): the plan on the
shared stage mechanism, dual writes, stage 1's shadow reads compared and counted, stage 2's
fallback, a failed shadow write queued and repaired, promotion and rollback keeping every
record, crashes between the two writes and inside a move, and what each stage declares."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from conformance import conformance_test

from crashgate.backends import (
    BUILTIN_NAMES,
    Capability,
    Durability,
    Env,
    ServerBacked,
    Staged,
    VectorRecord,
)
from crashgate.harness.failpoints import ArmedFailpoints, SimulatedCrash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.stages.roles import StagePlan

PATH = "/data/migration"

# each stage meets the contract as a store: answers as the model does, after every step
TestPgStage1Conformance = pytest.mark.usefixtures("postgres_server")(
    conformance_test("pg-stage1", max_examples=8))
TestPgStage2Conformance = pytest.mark.usefixtures("postgres_server")(
    conformance_test("pg-stage2", max_examples=6))


def _plan() -> StagePlan:
    # the module imports psycopg's store; the plan itself is data
    pytest.importorskip("psycopg")
    from crashgate.reference.postgres.stages import ADR0003
    return ADR0003


@dataclasses.dataclass
class World:
    disk: SimDisk = dataclasses.field(default_factory=lambda: SimDisk(DiskImage.empty("/data")))
    failpoints: ArmedFailpoints = dataclasses.field(default_factory=ArmedFailpoints)

    def env(self) -> Env:
        return sim_env(self.disk, failpoints=self.failpoints)

    def open(self, stage: int = 1, **options: str) -> Any:
        from crashgate.reference.postgres.stages import open_pg_stage
        return open_pg_stage(PATH, self.env(), stage, **options)

    def crash(self) -> None:
        self.disk.crash()
        self.failpoints.disarm()


@pytest.fixture
def world(postgres_server: Any) -> World:
    return World()


def _records(n: int, start: int = 0) -> list[VectorRecord]:
    return [VectorRecord.of(i, [float(i), float(i % 3), 0.5],
                            {"tag": ("a", "b")[i % 2], "n": i}) for i in range(start, start + n)]


def _contents(store: Any) -> tuple[Any, Any]:
    """(key-value data, vector records) of a store, as its own reads give them."""
    return store.scan(""), store.fetch(store.ids())


def _fill(store: Any) -> None:
    store.put("k1", b"one")
    store.write_batch({"k2": b"two", "k3": b"three"}, [])
    store.upsert(_records(300))   # more than one catch-up batch (sync.BATCH = 256)
    store.remove([7])
    store.delete("k3")


# -- the plan, without a server -------------------------------------------------------------


def test_every_move_has_its_way_back_and_each_stage_its_roles() -> None:
    plan = _plan()
    assert plan.stage_range == (1, 3)
    for stage in (1, 2):
        assert (stage, stage + 1) in plan.catch_up and (stage + 1, stage) in plan.catch_up
    # 1 -> 2 catches Postgres up from SQLite before Postgres becomes the truth; the way back
    # catches SQLite up from Postgres
    assert {(src, dst) for _, src, dst in plan.steps(1, 2)} == {("sqlite", "postgres")}
    assert {(src, dst) for _, src, dst in plan.steps(2, 1)} == {("postgres", "sqlite")}
    assert {(src, dst) for _, src, dst in plan.steps(3, 2)} == {("postgres", "sqlite")}
    r1, r2, r3 = (plan.roles(s) for s in (1, 2, 3))
    assert (r1.kv, r1.vectors, r1.mirror, r1.mirror_as) == ("sqlite", "sqlite", "postgres",
                                                            "verified")
    assert (r2.kv, r2.vectors, r2.mirror, r2.mirror_as) == ("postgres", "postgres", "sqlite",
                                                            "fallback")
    assert r3.stores == frozenset({"postgres"})
    assert plan.write_failpoint(1) == "pg-stage1.after-sqlite-write"
    assert plan.write_failpoint(3) is None


def test_the_names_are_registered() -> None:
    from crashgate.backends.registry import BUILTIN
    for n in (1, 2, 3):
        assert f"pg-stage{n}" in BUILTIN_NAMES
        assert BUILTIN[f"pg-stage{n}"].target.endswith(f"stages:open_pg_stage{n}")
        assert "postgres" in BUILTIN[f"pg-stage{n}"].install


# -- stage 1 ---------------------------------------------------------------------------------


def test_stage1_writes_both_and_compares_every_read(world: World) -> None:
    store = world.open(1)
    try:
        _fill(store)
        assert _contents(store.store("sqlite")) == _contents(store.store("postgres"))
        assert store.get("k1") == b"one" and store.count() == 299
        hits = store.query([3.0, 0.0, 0.5], 4, {"tag": "b"})
        assert [h.id for h in hits][:1] == [3]
        assert store.shadow_reads["get"] == 1 and store.shadow_reads["query"] == 1
        assert not store.mismatches and not store.fallbacks
        # Postgres changed behind the adapter's back: the comparison sees it, SQLite answers
        store.store("postgres").put("k1", b"tampered")
        assert store.get("k1") == b"one"
        assert store.mismatches["get"] == 1
        assert store.discrepancies[-1].kind == "mismatch"
    finally:
        store.close()


def test_stage1_a_failing_shadow_never_fails_a_call(world: World,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg
    store = world.open(1)
    try:
        pg = store.store("postgres")

        def down(*_a: Any, **_k: Any) -> Any:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        monkeypatch.setattr(pg, "upsert", down)
        monkeypatch.setattr(pg, "get", down)
        store.upsert(_records(3))          # acknowledged: SQLite has it
        assert [d.op for d in store.divergences()] == ["upsert"]
        store.put("k", b"v")
        assert store.get("k") == b"v"      # the shadow read failed: counted, SQLite served
        assert store.fallbacks["get"] == 1 and store.shadow_reads["get"] == 1
        monkeypatch.undo()
        assert store.repair() == 1
        assert store.store("postgres").fetch([0, 1, 2]) == store.store("sqlite").fetch([0, 1, 2])
    finally:
        store.close()


def test_stage1_crash_between_the_two_writes_is_reconciled_at_open(world: World) -> None:
    store = world.open(1)
    store.upsert(_records(5))
    world.failpoints.arm("pg-stage1.after-sqlite-write")
    with pytest.raises(SimulatedCrash):
        store.upsert(_records(2, start=100))
    world.crash()
    store = world.open(1)
    try:
        assert store.reconciled == 2
        assert _contents(store.store("sqlite")) == _contents(store.store("postgres"))
        assert store.count() == 7
    finally:
        store.close()


# -- moves ------------------------------------------------------------------------------------


def test_promote_to_postgres_and_back_keeps_every_record(world: World) -> None:
    store = world.open(1)
    try:
        _fill(store)
        want = _contents(store)
        assert store.promote() == 2
        assert _contents(store) == want == _contents(store.store("sqlite"))
        store.put("k4", b"four")            # stage 2: Postgres first, then SQLite
        assert store.store("sqlite").get("k4") == b"four"
        assert store.promote() == 3
        assert set(store._stores) == {"postgres"}
        store.upsert(_records(1, start=1000))   # stage 3: Postgres only
        want = _contents(store)
        assert store.rollback() == 2            # catches SQLite up first
        assert _contents(store.store("sqlite")) == want
        assert store.rollback() == 1
        assert _contents(store) == want == _contents(store.store("postgres"))
        with pytest.raises(ValueError, match="no previous stage"):
            store.rollback()
    finally:
        store.close()


@pytest.mark.parametrize("failpoint, hits", [("pg-stage.backfill-batch", 0),
                                             ("pg-stage.backfill-batch", 1),
                                             ("pg-stage.before-switch", 0)])
def test_a_crash_inside_a_promotion_reopens_in_one_stage_with_everything(
        world: World, failpoint: str, hits: int) -> None:
    store = world.open(1)
    _fill(store)
    # records SQLite holds and Postgres lacks (written before the adapter, or while Postgres
    # was away): the promotion's catch-up copies them, in batches of 256
    store.store("sqlite").upsert(_records(600, start=2000))
    want = _contents(store)
    world.failpoints.arm(failpoint, after_hits=hits)
    with pytest.raises(SimulatedCrash):
        store.promote()
    world.crash()
    store = world.open(1)
    try:
        assert store.stage == 1               # the switch never happened
        assert _contents(store) == want
        assert store.promote() == 2           # the move resumes
        assert _contents(store) == want
    finally:
        store.close()


# -- stage 2 and declarations ----------------------------------------------------------------


def test_stage2_serves_a_read_postgres_fails_from_sqlite(world: World,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg
    store = world.open(2)
    try:
        store.put("k", b"v")

        def down(*_a: Any, **_k: Any) -> Any:
            raise psycopg.OperationalError("terminating connection")
        monkeypatch.setattr(store.store("postgres"), "get", down)
        assert store.get("k") == b"v"
        assert store.fallbacks["get"] == 1
    finally:
        store.close()


def test_each_stage_declares_adr0003_and_its_server(world: World) -> None:
    store = world.open(1)
    try:
        for stage in (1, 2, 3):
            decl = store.declaration
            assert store.stage == stage and isinstance(store, Staged)
            assert decl.migration == "ADR-0003" and decl.has(Capability.STAGES)
            assert decl.server is not None and "Postgres" in decl.server
            assert decl.durability is Durability.POWER_LOSS
            assert decl.has(Capability.FAILPOINTS) is (stage < 3)
            assert isinstance(store, ServerBacked)
            assert store.server_pids() == store.store("postgres").server_pids()
            assert store.session_pid() == store.store("postgres").session_pid()
            if stage < 3:
                store.promote()
    finally:
        store.close()


def test_synchronous_commit_off_weakens_the_adapter(world: World) -> None:
    store = world.open(2, synchronous_commit="off")
    try:
        assert store.declaration.durability is Durability.NONE
    finally:
        store.close()


def test_the_adr072_rows_are_not_this_adapters(world: World) -> None:
    from crashgate.scenarios.procedures_stages import needs_stages
    store = world.open(1)
    try:
        reason = needs_stages(store.declaration)
    finally:
        store.close()
    assert reason is not None and "ADR-0003" in reason
