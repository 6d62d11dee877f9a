"""The rvlite hybrid: conformance, crashes at each failpoint reconciled on reopen, the
metadata-ahead warning, the writer lock and lease, readers, and the rebuild tool.

Crashes run on the harness's simulated disk: ``disk.crash()`` kills the process's file system
(its handles die, the page cache survives), as a real process death would."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from conformance import conformance_test

from crashgate.backends import (
    BulkFetch,
    Env,
    LeaseExpired,
    LockHeld,
    SimulatedCrash,
    VectorRecord,
    VersionTooNew,
)
from crashgate.harness.clock import VirtualClock
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.model import block_disagreement
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.indexeddb import IndexedDB
from crashgate.reference.rvf.store import open_rvf
from crashgate.reference.rvf_migrate import rebuild
from crashgate.reference.rvlite import (
    FAILPOINTS,
    META_STORE,
    STATE_STORE,
    cache_path,
    open_rvlite,
    rvf_records,
)

TestRvliteConformance = conformance_test("rvlite", max_examples=25)
TestRvliteCosineConformance = conformance_test("rvlite?metric=cosine", max_examples=8)

PATH = "/data/store.rvf"


@dataclasses.dataclass
class World:
    """One simulated machine: a disk, a clock, failpoints, and what stores ``observe``d."""

    disk: SimDisk = dataclasses.field(default_factory=lambda: SimDisk(DiskImage.empty("/data")))
    clock: VirtualClock = dataclasses.field(default_factory=VirtualClock)
    failpoints: ArmedFailpoints = dataclasses.field(default_factory=ArmedFailpoints)
    events: list[tuple[str, dict[str, object]]] = dataclasses.field(default_factory=list)
    _env: Env | None = None

    @property
    def env(self) -> Env:
        """This process's env (one file system view, as one process has)."""
        if self._env is None:
            self._env = sim_env(self.disk, self.clock, self.failpoints,
                                observe=lambda e, d: self.events.append((e, d)))
        return self._env

    def crash(self) -> None:
        """The process dies; the next ``env`` is a new process on the same disk."""
        self.disk.crash()
        self.failpoints.disarm()
        self._env = None

    def actions(self) -> list[object]:
        return [d["action"] for e, d in self.events if e == "epoch.reconciled"]

    def read(self, path: str) -> bytes:
        f = self.env.fs.open(path, "r")
        try:
            return f.read(0, f.size())
        finally:
            f.close()

    def write(self, path: str, data: bytes) -> None:
        f = self.env.fs.open(path, "w")
        try:
            f.write(0, data)
        finally:
            f.close()

    def cached_metadata(self) -> dict[int, object]:
        db = IndexedDB(cache_path(PATH), self.env, readonly=True)
        try:
            return {int(k): v for k, v in db.items(META_STORE)}
        finally:
            db.close()

    def rvf_metadata(self) -> dict[int, object]:
        rvf = open_rvf(PATH, self.env, readonly="true", lock="false")
        try:
            return {r.id: dict(r.metadata) for r in rvf_records(rvf)}
        finally:
            rvf.close()


@pytest.fixture
def world() -> World:
    return World()


def recs(first: int, n: int, tag: str) -> list[VectorRecord]:
    return [VectorRecord.of(i, [i * 0.5, (i % 3) * 1.0, 1.0, -i / 7], {"tag": tag, "n": i})
            for i in range(first, first + n)]


def test_failpoints_are_hit_in_the_write_order(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 3, "a"))
    store.put("k", b"v")
    store.close()
    declared = store.declaration.failpoints
    assert declared[-3:] == FAILPOINTS
    writes = [n for n in declared if ".compact." not in n]   # compaction's are compact()'s
    assert [n for n in world.failpoints.trace if n in declared] == writes * 2


def test_compaction_keeps_records_metadata_and_epoch(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 4, "a"))
    store.remove([1])
    epoch = store.epoch
    store.compact()
    assert store.epoch == epoch
    assert [r.id for r in store.fetch(range(10))] == [0, 2, 3]
    assert {h.metadata["tag"] for h in store.query([0, 0, 0, 0], 3)} == {"a"}
    store.close()
    again = open_rvlite(PATH, world.env)
    assert world.actions()[-1] == "none"   # the cache is still in step with RVF
    assert again.fetch([2])[0].metadata == {"tag": "a", "n": 2}
    again.close()


@pytest.mark.parametrize("failpoint", FAILPOINTS)
@pytest.mark.parametrize("op", ["upsert", "remove", "put"])
def test_crash_at_each_failpoint_reconciles_on_reopen(world: World, failpoint: str,
                                                      op: str) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 4, "committed"))
    store.put("k0", b"committed")
    world.failpoints.arm(failpoint)
    with pytest.raises(SimulatedCrash):
        if op == "upsert":
            store.upsert(recs(2, 4, "in-flight"))   # replaces 2, 3 and adds 4, 5
        elif op == "remove":
            store.remove([1, 2])
        else:
            store.put("k1", b"in-flight")
    world.crash()
    again = open_rvlite(PATH, world.env)
    assert world.actions() == ["none", "rebuilt"]   # RVF committed before every failpoint
    assert again.epoch == again.metadata_epoch() == 3
    records = {r.id: r for r in again.fetch(range(10))}
    if op == "upsert":
        assert sorted(records) == [0, 1, 2, 3, 4, 5]
        assert records[5].metadata == {"tag": "in-flight", "n": 5}
    elif op == "remove":
        assert sorted(records) == [0, 3]
    else:
        assert again.get("k1") == b"in-flight"
    for hit in again.query([0.0, 0.0, 1.0, 0.0], 10):
        assert dict(hit.metadata) == dict(records[hit.id].metadata)
    assert world.cached_metadata() == world.rvf_metadata() == {
        i: dict(r.metadata) for i, r in records.items()}
    again.upsert(recs(9, 1, "after"))   # and the epochs carry on in step
    assert again.epoch == again.metadata_epoch() == 4
    again.close()


def test_a_crash_inside_the_rvf_commit_leaves_nothing_to_reconcile(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 2, "committed"))
    world.failpoints.arm("rvf.after-data-sync")   # data fsynced, manifest not written
    with pytest.raises(SimulatedCrash):
        store.upsert(recs(5, 2, "lost"))
    world.crash()
    again = open_rvlite(PATH, world.env)
    assert world.actions() == ["none", "none"]
    assert again.count() == 2 and again.epoch == again.metadata_epoch() == 1
    again.close()


def test_metadata_ahead_warns_and_trusts_rvf(world: World, caplog) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 3, "truth"))
    store.close()
    db = IndexedDB(cache_path(PATH), world.env)
    with db.transaction([META_STORE, STATE_STORE], "readwrite") as t:
        t.put(STATE_STORE, "epoch", 40)
        t.put(META_STORE, 1, {"tag": "from the future"})
        t.put(META_STORE, 77, {"tag": "never in RVF"})
    db.close()
    with caplog.at_level(logging.WARNING):
        again = open_rvlite(PATH, world.env)
    assert "metadata epoch 40 is ahead of the RVF epoch 1" in caplog.text
    ahead = [d for e, d in world.events if e == "epoch.metadata-ahead"]
    assert ahead == [{"path": PATH, "rvf_epoch": 1, "metadata_epoch": 40}]
    assert world.actions()[-1] == "rebuilt-metadata-ahead"
    assert again.metadata_epoch() == 1
    assert world.cached_metadata() == {i: {"tag": "truth", "n": i} for i in range(3)}
    assert [h.metadata["tag"] for h in again.query([0, 0, 1, 0], 5)] == ["truth"] * 3
    again.close()


def test_a_rebuild_leaves_the_cache_equal_to_rvf_as_json(world: World) -> None:
    """A rebuild writes only what differs; a value Python finds equal to RVF's but JSON does
    not (1 and 1.0 and True, 0.0 and -0.0) differs, and an id RVF no longer has is deleted."""
    store = open_rvlite(PATH, world.env)
    store.upsert([VectorRecord.of(i, [float(i), 1.0], {"n": i, "x": 1.0, "z": 0.0})
                  for i in range(6)])
    store.close()
    db = IndexedDB(cache_path(PATH), world.env)
    with db.transaction([META_STORE, STATE_STORE], "readwrite") as t:
        t.put(STATE_STORE, "epoch", 0)   # behind RVF: the next open rebuilds
        t.put(META_STORE, 1, {"n": 1, "x": 1, "z": 0.0})
        t.put(META_STORE, 2, {"n": 2, "x": True, "z": 0.0})
        t.put(META_STORE, 3, {"n": 3, "x": 1.0, "z": -0.0})
        t.put(META_STORE, 4, {"n": 4.0, "x": 1.0, "z": 0.0})
        t.put(META_STORE, 9, {"n": 9, "x": 1.0, "z": 0.0})
        t.delete(META_STORE, 5)
    db.close()
    again = open_rvlite(PATH, world.env)
    assert world.actions()[-1] == "rebuilt"
    want = {i: {"n": i, "x": 1.0, "z": 0.0} for i in range(6)}
    cached = world.cached_metadata()
    assert cached == want
    assert {i: repr(m) for i, m in cached.items()} == {i: repr(m) for i, m in want.items()}
    assert [repr(r.metadata) for r in again.fetch(range(10))] == [repr(want[i]) for i in range(6)]
    again.close()


def test_the_rvf_file_is_plain_rvf_both_ways(world: World) -> None:
    """ADR-032 row 5: written by rvlite, read and written by the plain RVF store, reopened by
    rvlite, which rebuilds its cache from what RVF wrote."""
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 5, "rvlite"))
    store.put("kv", b"1")
    want = store.query([1.0, 0.0, 1.0, 0.0], 3)
    store.close()
    rvf = open_rvf(PATH, world.env)
    assert rvf.query([1.0, 0.0, 1.0, 0.0], 3) == want and rvf.get("kv") == b"1"
    rvf.upsert(recs(3, 4, "node"))
    rvf.close()
    again = open_rvlite(PATH, world.env)
    assert world.actions()[-1] == "rebuilt"
    assert {h.id: h.metadata["tag"] for h in again.query([0, 0, 1, 0], 10, {"tag": "node"})} \
        == {3: "node", 4: "node", 5: "node", 6: "node"}
    again.close()


def test_second_writer_gets_elock_and_readers_are_unlimited(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 2, "a"))
    with pytest.raises(LockHeld, match="ELOCK"):
        open_rvlite(PATH, world.env)
    # another view of the same disk: the RVF lock knows its holder is alive in this process
    other = sim_env(world.disk, world.clock, ArmedFailpoints())
    with pytest.raises(LockHeld, match="ELOCK"):
        open_rvlite(PATH, other)
    reader = open_rvlite(PATH, world.env, readonly="true")
    assert reader.count() == 2 and reader.fetch([1])[0].metadata == {"tag": "a", "n": 1}
    with pytest.raises(PermissionError):
        reader.put("k", b"v")
    reader.close()
    store.upsert(recs(5, 1, "b"))   # the writer is unharmed
    assert store.count() == 3
    store.close()


def test_a_reader_never_sees_a_stale_cache_and_never_writes_it(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 2, "old"))
    world.failpoints.arm(FAILPOINTS[0])
    with pytest.raises(SimulatedCrash):
        store.upsert(recs(0, 2, "new"))
    world.crash()
    cache = world.read(cache_path(PATH))
    reader = open_rvlite(PATH, world.env, readonly="true")
    assert world.actions()[-1] == "read-from-rvf"
    assert {h.metadata["tag"] for h in reader.query([0, 0, 0, 0], 5)} == {"new"}
    assert {h.id for h in reader.query([0, 0, 0, 0], 5, {"tag": "old"})} == set()
    reader.close()
    assert world.read(cache_path(PATH)) == cache


def test_an_expired_lease_fences_the_writer_before_rvf_is_touched(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 2, "a"))
    world.clock.advance(20)
    store.heartbeat()                    # an idle writer's timer keeps it alive
    world.clock.advance(25)
    store.put("still", b"mine")          # 25 s after the last beat: fine, and renewed
    world.clock.advance(31)
    with pytest.raises(LeaseExpired, match="stale after 30 s"):
        store.put("late", b"write")
    assert store.epoch == 2
    with pytest.raises(LeaseExpired):    # fenced for good
        store.upsert(recs(9, 1, "late"))
    store.close()
    again = open_rvlite(PATH, world.env)
    assert again.get("late") is None and again.count() == 2 and again.epoch == 2
    again.close()


def test_an_idle_live_writer_keeps_the_store_past_the_lease_interval(world: World) -> None:
    """A stale heartbeat alone does not hand the store over while the RVF lock's holder lives,
    and the idle holder's late write is fenced (takeover fencing is tested on the lease itself,
    in test_indexeddb)."""
    old = open_rvlite(PATH, world.env)
    old.upsert(recs(0, 2, "a"))
    world.clock.advance(31)   # the holder idles past the stale interval
    with pytest.raises(LockHeld, match="ELOCK"):
        open_rvlite(PATH, sim_env(world.disk, world.clock, ArmedFailpoints()))
    # its own lease went stale without a heartbeat: it is fenced even with no one waiting
    with pytest.raises(LeaseExpired):
        old.upsert(recs(7, 1, "late"))
    old.close()
    again = open_rvlite(PATH, world.env)
    assert sorted(r.id for r in again.fetch(range(10))) == [0, 1]
    again.close()


def test_refresh_during_write_with_the_browser_rule(world: World) -> None:
    """ADR-032 row 6 with lease_recovery=stale: the dead tab's lease must go stale (30 s on
    the clock) before the next open gets a fresh one; nothing is corrupted."""
    store = open_rvlite(PATH, world.env, lease_recovery="stale")
    store.upsert(recs(0, 2, "a"))
    world.failpoints.arm(FAILPOINTS[1])
    with pytest.raises(SimulatedCrash):
        store.upsert(recs(2, 2, "b"))
    world.crash()
    with pytest.raises(LockHeld, match="holds the writer lease"):
        open_rvlite(PATH, world.env, lease_recovery="stale")
    world.clock.advance(30.5)
    again = open_rvlite(PATH, world.env, lease_recovery="stale")
    assert again.status()["lease_token"] == 2 and again.count() == 4
    again.close()


def test_default_recovery_takes_a_dead_writers_lease_at_once(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 2, "a"))
    world.failpoints.arm(FAILPOINTS[2])
    with pytest.raises(SimulatedCrash):
        store.upsert(recs(2, 2, "b"))
    world.crash()
    again = open_rvlite(PATH, world.env)
    recovered = [d for e, d in world.events if e == "lease.recovered"]
    assert len(recovered) == 1 and recovered[0]["token"] == 1
    assert again.status()["lease_token"] == 2 and again.count() == 4
    again.close()


def test_a_too_new_file_is_refused_and_left_alone(world: World) -> None:
    store = open_rvlite(PATH, world.env, wire_version="2")
    store.upsert(recs(0, 2, "v2"))
    store.close()
    before = sorted(world.env.fs.listdir("/data")), world.read(PATH)
    with pytest.raises(VersionTooNew, match="requires RVF wire version 2"):
        open_rvlite(PATH, world.env, wire_version="1")
    assert (sorted(world.env.fs.listdir("/data")), world.read(PATH)) == before


def test_rebuild_moves_a_damaged_cache_aside_and_rebuilds(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    store.upsert(recs(0, 3, "a"))
    store.close()
    world.write(cache_path(PATH), b"not an indexeddb file")
    report = rebuild(PATH, world.env)
    assert report.records == 3 and report.epoch == 1 and report.moved_aside is not None
    assert world.read(report.moved_aside) == b"not an indexeddb file"
    assert world.cached_metadata() == {i: {"tag": "a", "n": i} for i in range(3)}
    world.env.fs.remove(cache_path(PATH))   # a missing cache rebuilds just the same
    assert rebuild(PATH, world.env).on_open == "rebuilt"
    assert world.cached_metadata() == {i: {"tag": "a", "n": i} for i in range(3)}


def test_a_reader_of_a_plain_rvf_file_creates_no_cache(world: World) -> None:
    rvf = open_rvf(PATH, world.env)
    rvf.upsert(recs(0, 3, "node"))
    rvf.close()
    reader = open_rvlite(PATH, world.env, readonly="true")
    assert world.actions() == ["read-from-rvf"]
    assert [h.metadata for h in reader.query([0, 0, 1, 0], 1, {"n": 2})] == [
        {"tag": "node", "n": 2}]
    reader.close()
    assert world.env.fs.listdir("/data") == ["store.rvf"]


def test_a_cache_of_another_rvf_file_is_rebuilt_at_an_equal_epoch(world: World) -> None:
    for path, tag in ((PATH, "mine"), ("/data/other.rvf", "other")):
        store = open_rvlite(path, world.env)
        store.upsert(recs(0, 3, tag))
        store.close()
    world.write(PATH, world.read("/data/other.rvf"))   # a different file copied over this one
    again = open_rvlite(PATH, world.env)
    assert world.actions()[-1] == "rebuilt-other-file"
    assert {h.metadata["tag"] for h in again.query([0, 0, 1, 0], 5)} == {"other"}
    again.close()


def test_fetch_block_holds_what_fetch_returns_writer_and_stale_cache_reader(world: World) -> None:
    store = open_rvlite(PATH, world.env)
    assert isinstance(store, BulkFetch)
    store.upsert(recs(0, 6, "old"))
    store.remove([2])
    wanted = [5, 0, 2, 9, 3, 3]   # unordered, an id removed, one never written, one twice
    assert block_disagreement(store, store.fetch_block(wanted), store.fetch(wanted)) is None
    assert store.fetch_block(wanted).ids == (0, 3, 5)
    world.failpoints.arm(FAILPOINTS[0])   # the cache is left a commit behind RVF
    with pytest.raises(SimulatedCrash):
        store.upsert(recs(0, 2, "new"))
    world.crash()
    reader = open_rvlite(PATH, world.env, readonly="true")
    assert world.actions()[-1] == "read-from-rvf"
    block = reader.fetch_block(range(8))
    assert block_disagreement(reader, block, reader.fetch(range(8))) is None
    assert [m["tag"] for m in block.metadata] == ["new", "new", "old", "old", "old"]
    reader.close()
