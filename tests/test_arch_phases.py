"""ARCH-001's phase adapters (``reference/arch/phases.py``) on the shared stage mechanism: what each
phase reads and writes, the phase-1 shadow's failures queued, phase 2's fallbacks and mismatches
recorded with their keys, phase 3's legacy import at open, phase 4's archive, moves and the
reconcile after a crash between a dual write's two writes."""

from __future__ import annotations

import dataclasses
import errno
import os

import pytest

from crashgate.backends import (
    Capability,
    CorruptStore,
    Env,
    LockHeld,
    MissionSchema,
    SimulatedCrash,
    Staged,
    resolve,
)
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.faultyfs import FaultyFS, FsOp
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.arch.factory import open_phase
from crashgate.reference.arch.phases import ARCH001, IMPORT_FAILPOINT, ArchPhaseAdapter
from crashgate.reference.stages import StageAdapter

PATH = "/data/arch"
DOC = {"mission_id": "m1", "phase": "PLANNING", "status": "in_progress",
       "tool_calls": [{"tool": "grep", "args": {"q": "ü"}}], "project_memory": {"narrative": []}}


class _Errors:
    """A FaultyFS trigger: EIO on every mutating operation of a path containing ``only``."""

    def __init__(self) -> None:
        self.only: str | None = None

    def __call__(self, op: FsOp) -> BaseException | None:
        if self.only is None or self.only not in op.path:
            return None
        return OSError(errno.EIO, f"injected EIO at {op.describe()}")


@dataclasses.dataclass
class World:
    disk: SimDisk = dataclasses.field(default_factory=lambda: SimDisk(DiskImage.empty("/data")))
    failpoints: ArmedFailpoints = dataclasses.field(default_factory=ArmedFailpoints)
    errors: _Errors = dataclasses.field(default_factory=_Errors)

    def env(self) -> Env:
        env = sim_env(self.disk, failpoints=self.failpoints)
        return dataclasses.replace(env, fs=FaultyFS(env.fs, self.errors))

    def open(self, phase: int) -> ArchPhaseAdapter:
        return open_phase(PATH, self.env(), phase)

    def crash(self) -> None:
        """The writer's process is gone (its file system with it; the page cache kept)."""
        self.disk.crash()
        self.failpoints.disarm()


def _legacy(world: World, name: str, text: bytes) -> None:
    f = world.env().fs.open(f"{PATH}/{name}", "w")
    f.write(0, text)
    f.sync()
    f.close()
    world.env().fs.sync_dir(PATH)


def test_the_names_resolve_and_declare_arch001_phases() -> None:
    for phase in (1, 2, 3, 4):
        store = resolve(f"arch-phase{phase}").open(PATH + str(phase), sim_env(
            SimDisk(DiskImage.empty("/data"))))
        try:
            assert isinstance(store, Staged) and isinstance(store, MissionSchema)
            assert store.stage == phase and store.stage_range == (1, 4)
            decl = store.declaration
            assert decl.migration == "ARCH-001" and decl.has(Capability.MISSIONS)
            assert decl.failpoints == ((f"phase{phase}.after-json-write",) if phase < 3 else ())
        finally:
            store.close()
    assert ARCH001.stage_range == (1, 4)


def test_the_plan_is_the_one_mechanism_adr072_runs_on() -> None:
    # one stage switch: both adapters are StagedStores, their plans data
    from crashgate.reference.stages.staged import StagedStores
    assert issubclass(ArchPhaseAdapter, StagedStores) and issubclass(StageAdapter, StagedStores)
    assert ArchPhaseAdapter._move is StageAdapter._move


def test_a_bad_phase_is_refused_before_anything_is_written() -> None:
    world = World()
    with pytest.raises(ValueError, match="not an ARCH-001 stage; the stages are 1-4"):
        world.open(0)
    assert not world.env().fs.exists(PATH + "/control.db")


def test_phase1_reads_json_and_a_failing_sqlite_never_fails_the_call() -> None:
    world = World()
    store = world.open(1)
    world.errors.only = "missions.db"
    store.put("handoff", b"h1")
    store.mission_put(DOC)
    assert store.get("handoff") == b"h1" and store.mission_get("m1") == DOC
    queued = store.divergences()
    assert [(d.op, d.behind) for d in queued] == [("put", "sqlite"), ("mission_put", "sqlite")]
    world.errors.only = None
    assert store.repair() == 2 and store.divergences() == []
    assert store.store("sqlite").mission_get("m1") == DOC
    assert store.store("sqlite").get("handoff") == b"h1"
    store.close()


def test_phase2_records_every_fallback_and_mismatch_with_its_key() -> None:
    world = World()
    store = world.open(2)
    store.put("a", b"1")
    store.mission_put(DOC)
    sqlite = store.store("sqlite")
    sqlite.delete("a")                                          # SQLite misses it
    sqlite.mission_put({**DOC, "status": "stale"})              # SQLite holds another version
    assert store.get("a") == b"1" and store.mission_get("m1") == DOC   # JSON's answers served
    kinds = {(d.kind, d.what, d.key) for d in store.discrepancies}
    assert ("fallback", "get", "a") in kinds
    assert ("mismatch", "mission_get", '["mission","m1"]') in kinds
    assert store.fallbacks["get"] == 1 and store.mismatches["mission_get"] == 1
    sqlite.put("a", b"1")
    sqlite.mission_put(DOC)
    before = len(store.discrepancies)
    assert store.get("a") == b"1" and store.mission_get("m1") == DOC
    assert len(store.discrepancies) == before          # agreement records nothing
    store.close()


def test_a_crash_between_the_two_writes_is_reconciled_at_the_next_open() -> None:
    world = World()
    store = world.open(1)
    store.mission_put(DOC)
    world.failpoints.arm("phase1.after-json-write")
    with pytest.raises(SimulatedCrash):
        store.mission_put({**DOC, "status": "done"})
    world.crash()
    again = world.open(1)
    assert again.reconciled >= 1
    assert again.store("sqlite").mission_get("m1") == {**DOC, "status": "done"}
    again.close()


def test_phase3_imports_legacy_files_at_open_and_renames_them_after_the_commit() -> None:
    world = World()
    world.open(3).close()
    _legacy(world, "active_mission.json", b'{"mission_id": "old", "phase": "P"}')
    _legacy(world, "broken.json", b'{"mission_id": ')
    store = world.open(3)
    assert store.mission_get("old") == {"mission_id": "old", "phase": "P"}
    names = world.env().fs.listdir(PATH)
    assert "active_mission.json" not in names and "broken.json" in names   # damaged: left
    assert any(n.startswith("active_mission_migrated_") for n in names)
    assert store.imported is not None and [f for f, _ in store.imported.damaged] \
        == [f"{PATH}/broken.json"]
    store.close()


def test_a_crash_inside_the_import_loses_no_legacy_mission() -> None:
    world = World()
    world.open(3).close()
    for i in range(3):
        _legacy(world, f"s{i}.json", f'{{"mission_id": "m{i}"}}'.encode())
    world.failpoints.arm(IMPORT_FAILPOINT)   # after the first file is handled
    with pytest.raises(SimulatedCrash):
        world.open(3)
    world.crash()
    store = world.open(3)
    assert store.mission_ids() == ["m0", "m1", "m2"]
    assert not [n for n in world.env().fs.listdir(PATH) if n.endswith(".json")
                and "_migrated_" not in n]
    store.close()


def test_the_phases_round_trip_and_phase4_archives_never_deletes() -> None:
    world = World()
    store = world.open(1)
    store.put("k", b"v")
    store.mission_put(DOC)
    assert store.promote() == 2 and store.promote() == 3
    store.mission_put({**DOC, "status": "phase3"})   # JSON does not get it
    assert store.promote() == 4
    names = world.env().fs.listdir(PATH)
    assert "json" not in names and "archive" in names
    (stamp,) = world.env().fs.listdir(PATH + "/archive")
    assert "json" in world.env().fs.listdir(f"{PATH}/archive/{stamp}")
    assert store.rollback() == 3 and store.rollback() == 2   # the export to JSON
    assert store.rollback() == 1                                # reads JSON only now
    assert store.mission_get("m1") == {**DOC, "status": "phase3"} and store.get("k") == b"v"
    with pytest.raises(ValueError, match="no previous stage"):
        store.rollback()
    store.close()
    assert world.open(4).stage == 1   # the recorded phase, not the name's


def test_one_writer_at_a_time() -> None:
    world = World()
    first = world.open(1)
    with pytest.raises(LockHeld, match="another store open in this process holds it"):
        world.open(1)
    first.mission_put(DOC)   # the first is unharmed
    first.close()
    again = world.open(1)
    assert again.mission_get("m1") == DOC
    again.close()


def test_a_damaged_control_record_naming_an_adr072_stage_is_refused() -> None:
    world = World()
    world.open(1).close()
    from crashgate.reference.sqlite_store import open_sqlite
    control = open_sqlite(PATH + "/control.db", world.env())
    control.put("stage", b'{"stage": 0, "moving_to": null, "sqlite": "sqlite.db"}')
    control.close()
    with pytest.raises(CorruptStore, match="not an ARCH-001 stage"):
        world.open(1)
    assert os.sep == "/"
