"""A dual-write stage's mirror never lags unseen (``reference/stages/reconcile.py``): a writer
killed between the truth's write and the mirror's leaves a record the next open reconciles from;
an I/O error on both the mirror write and the queue's record of it puts the adapter in doubt
(later writes refused, stage 3's fallback refused), and the reopen mends it; a crash inside the
reconcile is reconciled again; a clean close reconciles nothing and costs no control write per
op; a reader never writes the record nor reconciles."""

from __future__ import annotations

import dataclasses
import errno
from typing import Any

import pytest

from crashgate.backends import CorruptStore, Env, QValue, SimulatedCrash, VectorRecord
from crashgate.harness.divergence import DivergenceLedger
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.faultyfs import FaultyFS, FsOp
from crashgate.harness.gate_evidence import compare_shadow
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.rvf.store import open_rvf
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages import StageAdapter, open_stage, roles, write_failpoint
from crashgate.reference.stages.control import StageControl
from crashgate.reference.stages.reconcile import RECONCILE_FAILPOINT, InDoubt
from crashgate.reference.stages.sync import BATCH, relational_data

PATH = "/data/stage"
IDS = set(range(8))
DUAL = [2, 3]


class _Errors:
    """A FaultyFS trigger: once ``on``, every mutating file operation fails with EIO."""

    def __init__(self) -> None:
        self.on = False
        self.fired = 0

    def __call__(self, op: FsOp) -> BaseException | None:
        if not self.on:
            return None
        self.fired += 1
        return OSError(errno.EIO, f"injected EIO at {op.describe()}")


@dataclasses.dataclass
class World:
    disk: SimDisk = dataclasses.field(default_factory=lambda: SimDisk(DiskImage.empty("/data")))
    failpoints: ArmedFailpoints = dataclasses.field(default_factory=ArmedFailpoints)
    errors: _Errors = dataclasses.field(default_factory=_Errors)

    def env(self) -> Env:
        env = sim_env(self.disk, failpoints=self.failpoints)
        return dataclasses.replace(env, fs=FaultyFS(env.fs, self.errors))

    def open(self, stage: int, **options: str) -> StageAdapter:
        return open_stage(PATH, self.env(), stage, **options)

    def crash(self) -> None:
        self.disk.crash()
        self.failpoints.disarm()
        self.errors.on = False

    def files(self) -> dict[str, bytes]:
        return dict(self.disk.cache_image().files)

    def raw_differences(self) -> list[str]:
        """Where the two stores' files differ, opened by themselves (not the adapter: its
        writer's open would reconcile them; the RVF lock of the dead writer is not taken)."""
        env = sim_env(self.disk)
        sqlite = open_sqlite(f"{PATH}/sqlite.db", env)
        rvf = open_rvf(f"{PATH}/store.rvf", env, lock="false")
        try:
            return compare(sqlite, rvf)[1]
        finally:
            sqlite.close()
            rvf.close()

    def clean_record(self) -> bool | None:
        control = StageControl(open_sqlite(f"{PATH}/control.db", sim_env(self.disk)),
                               "control")
        try:
            return control.clean_shutdown()
        finally:
            control.close()


@pytest.fixture
def world() -> World:
    return World()


def recs(first: int, n: int, tag: str) -> list[VectorRecord]:
    return [VectorRecord.of(i, [float(i), 1.0], {"tag": tag}) for i in range(first, first + n)]


def fill(store: StageAdapter) -> None:
    store.write_batch({f"k{i:03d}": b"old" for i in range(20)})
    store.upsert(recs(0, 6, "old"))
    store.q_value_update("s", "a", 1.0)
    store.goap_store("p", {"steps": [1]})


def differences(store: StageAdapter) -> tuple[int, list[str]]:
    """(records compared, where the adapter's two stores differ)."""
    return compare(store.store("sqlite"), store.store("rvf"))


def compare(sqlite: Any, rvf: Any) -> tuple[int, list[str]]:
    """(records compared, where the two stores differ): key-value data and vectors by the
    gate's own shadow comparison, relational records as a whole ("relational")."""
    ledger = DivergenceLedger()
    compare_shadow(ledger, {"checks": 0, "incidents": 0}, sqlite, rvf, IDS)
    where = [m.key for t in ledger.tallies.values() for m in t.examples]
    if relational_data(sqlite) != relational_data(rvf):
        where.append("relational")
    return ledger.compared, where


CRASHING: dict[str, tuple[Any, str]] = {   # the write, and where the mirror then lags
    "put": (lambda s: s.put("k015", b"new"), "k015"),
    "upsert": (lambda s: s.upsert(recs(6, 1, "new")), "6"),
    "q_value_update": (lambda s: s.q_value_update("s", "a", 5.0), "relational"),
}


def crash_between_the_writes(world: World, stage: int, op: str, **options: str) -> str:
    """A filled writer killed between the truth's write and the mirror's (the in-process
    failpoint), the disk as the crash left it; returns where the mirror lags."""
    store = world.open(stage, **options)
    fill(store)
    world.failpoints.arm(str(write_failpoint(stage)))   # the truth has it, then the crash
    write, lags = CRASHING[op]
    with pytest.raises(SimulatedCrash):
        write(store)
    world.crash()
    return str(lags)


@pytest.mark.parametrize("stage", DUAL)
@pytest.mark.parametrize("op", sorted(CRASHING))
def test_a_writer_killed_between_the_two_writes_is_reconciled_by_the_next_open(
        world: World, stage: int, op: str) -> None:
    lags = crash_between_the_writes(world, stage, op)
    assert world.raw_differences() == [lags]   # the mirror lags, and nothing queued it
    assert world.clean_record() is False
    # the writer's open reconciles it: one record, the two stores then equal
    again = world.open(stage)
    assert again.reconciled == 1 and again.status().reconciled == 1
    compared, where = differences(again)
    assert compared >= 20 + len(IDS) and where == []
    assert again.get("k015") == (b"new" if op == "put" else b"old")
    assert again.q_value_get("s", "a") == (QValue(5.0, 2) if op == "q_value_update"
                                           else QValue(1.0, 1))
    again.close()
    assert world.clean_record() is True
    third = world.open(stage)
    assert third.reconciled == 0
    third.close()


@pytest.mark.parametrize("stage", DUAL)
def test_a_crash_inside_the_reconcile_is_reconciled_again_by_the_next_open(world: World,
                                                                           stage: int) -> None:
    store = world.open(stage)
    world.failpoints.arm(str(write_failpoint(stage)))
    with pytest.raises(SimulatedCrash):   # the mirror misses a whole batch and then some
        store.write_batch({f"b{i:04d}": b"x" for i in range(BATCH + 10)})
    world.crash()
    world.failpoints.arm(RECONCILE_FAILPOINT)   # after the reconcile's first batch
    with pytest.raises(SimulatedCrash):
        world.open(stage)
    world.crash()
    assert world.clean_record() is False
    again = world.open(stage)
    assert again.reconciled == 10   # the first batch stayed written: resumed, not redone
    assert differences(again)[1] == [] and len(again.scan("b")) == BATCH + 10
    again.close()


@pytest.mark.parametrize("stage", DUAL)
def test_an_io_error_on_the_mirror_and_the_queue_puts_the_adapter_in_doubt(world: World,
                                                                           stage: int) -> None:
    store = world.open(stage)
    fill(store)

    def fail_from_here(name: str) -> None:
        world.errors.on = True   # every file of the process, the mirror's and control.db
    world.failpoints.arm(str(write_failpoint(stage)), action=fail_from_here)
    with pytest.raises(OSError, match="could not be queued") as raised:
        store.put("k003", b"new")                # the truth took it: indeterminate
    assert not isinstance(raised.value, InDoubt)
    assert world.errors.fired >= 2 and store.in_doubt is not None
    world.errors.on = False   # the disk recovers; the adapter still cannot know what it lost
    assert store.divergences() == []             # nothing recorded it
    with pytest.raises(InDoubt, match="reopen|open it again") as refused:
        store.put("k004", b"refused")
    assert isinstance(refused.value, PermissionError)
    for call in (store.promote, lambda: store.upsert(recs(0, 1, "no"))):
        with pytest.raises(InDoubt):
            call()
    assert store.get("k004") == b"old"
    if stage == 3:   # SQLite may be behind on anything: no read is served from it
        rvf = store.store("rvf")

        def broken(key: str) -> None:
            raise CorruptStore("store.rvf", "injected damage")
        rvf.get = broken
        with pytest.raises(CorruptStore, match="in doubt"):
            store.get("k001")
        del rvf.get
    assert store.status().in_doubt == store.in_doubt
    store.close()                                # clean close, but not a clean shutdown
    assert world.clean_record() is False
    again = world.open(stage)
    assert again.reconciled == 1 and again.in_doubt is None
    assert differences(again)[1] == [] and again.get("k003") == b"new"
    again.put("k004", b"now")
    assert again.store(str(roles(stage).mirror)).get("k004") == b"now"
    again.close()
    assert world.clean_record() is True


def test_an_io_error_on_the_truths_write_puts_the_adapter_in_doubt(world: World) -> None:
    """The truth's write raised an I/O error after its commit record was written (its last
    fsync failed): the write is in the truth's file, and the mirror was never written;
    nothing is queued, so the adapter is in doubt and its reopen reconciles."""
    store = world.open(3)
    fill(store)
    world.failpoints.arm("rvf.after-manifest-write",
                         action=lambda name: setattr(world.errors, "on", True))
    with pytest.raises(OSError):
        store.put("k001", b"maybe")
    world.errors.on = False
    assert store.in_doubt is not None and "source of truth" in store.in_doubt
    with pytest.raises(InDoubt):
        store.put("k002", b"refused")
    store.close()
    assert world.clean_record() is False
    assert world.raw_differences() == ["k001"]   # RVF's file has it (its manifest is there)
    again = world.open(3)
    assert again.reconciled == 1 and differences(again)[1] == []
    assert again.get("k001") == b"maybe"
    again.close()


@pytest.mark.parametrize("stage", range(5))
def test_a_clean_close_reconciles_nothing_and_writes_the_record_only_at_open_and_close(
        world: World, stage: int) -> None:
    store = world.open(stage)
    fill(store)
    store.close()
    assert world.clean_record() is True
    again = world.open(stage)
    assert again.reconciled == 0
    assert world.clean_record() is False   # marked open, before any write
    control = {n: b for n, b in world.files().items() if "control.db" in n}
    for i in range(20):   # plain writes, none failing: no control write
        again.put(f"k{i:03d}", b"again")
    again.q_value_update("s", "a", 3.0)
    if roles(stage).kv == roles(stage).vectors:   # stage 1 records RVF's epoch per upsert
        again.upsert(recs(0, 2, "again"))
    assert {n: b for n, b in world.files().items() if "control.db" in n} == control
    again.close()
    assert world.clean_record() is True


@pytest.mark.parametrize("stage", DUAL)
def test_a_reader_never_writes_the_record_nor_reconciles(world: World, stage: int) -> None:
    # journal_mode DELETE: a reader of a crashed WAL file on the simulated disk fails at its
    # close (SQLite checkpoints into the file it opened read-only: sqlite_store's concern)
    lags = crash_between_the_writes(world, stage, "put", journal_mode="DELETE")
    before = world.files()
    reader = world.open(stage, readonly="true", journal_mode="DELETE")
    assert reader.reconciled == 0 and reader.get("k001") == b"old"
    assert differences(reader)[1] == [lags]   # it sees the lag and leaves it
    reader.close()
    assert world.files() == before and world.clean_record() is False
    again = world.open(stage, journal_mode="DELETE")
    assert again.reconciled == 1 and differences(again)[1] == []
    again.close()
