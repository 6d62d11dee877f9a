"""The dual-write proxy (``pattern-proxy``): conformance, secondary failures queued and
reconciled (the row's procedure, and a proxy that only logs them, which the row fails), reads
served from the secondary and counted, statistics of both sides, crash recovery between the
two writes, and the first open's backfill of an existing AgentDB file."""

from __future__ import annotations

import dataclasses
import errno
import logging
from typing import Any

import pytest
from conformance import conformance_test

from crashgate.backends import (
    BadOption,
    Capability,
    CorruptStore,
    Env,
    os_env,
    resolve,
)
from crashgate.harness.failpoints import ArmedFailpoints, SimulatedCrash
from crashgate.harness.patterns import generate_patterns
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Verdict
from crashgate.reference.patterns.agentdb import open_agentdb
from crashgate.reference.patterns.proxy import (
    PATTERN_GUIDE,
    PRIMARY,
    SECONDARY,
    SECONDARY_FILE,
    PatternProxy,
    open_pattern_proxy,
)
from crashgate.scenarios.procedures_proxy import check_secondary_failures

TestPatternProxyConformance = conformance_test("pattern-proxy", max_examples=12)

PATH = "/data/proxy"
BETWEEN = PATTERN_GUIDE.write_failpoint(1)


@dataclasses.dataclass
class World:
    disk: SimDisk = dataclasses.field(default_factory=lambda: SimDisk(DiskImage.empty("/data")))
    failpoints: ArmedFailpoints = dataclasses.field(default_factory=ArmedFailpoints)

    def env(self) -> Env:
        return sim_env(self.disk, failpoints=self.failpoints)

    def open(self, **options: str) -> PatternProxy:
        return open_pattern_proxy(PATH, self.env(), **options)

    def crash(self) -> None:
        self.disk.crash()
        self.failpoints.disarm()


@pytest.fixture
def world() -> World:
    return World()


def _eio(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(errno.EIO, "injected by the test")


def _secondary(proxy: PatternProxy) -> Any:
    return proxy.store(SECONDARY)


# -- the row -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_secondary_failures_are_queued_and_reconciled(seed: int) -> None:
    ev = check_secondary_failures(resolve("pattern-proxy"), seed=seed)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["failed_calls"] == ev.measured["queued"] == ev.measured["repaired"] > 0


class LoggingProxy(PatternProxy):
    """The guide's first version: a failed secondary write is logged, never queued."""

    def _queue_divergence(self, op: str, keys: Any, ids: Any, refs: Any, behind: str,
                          exc: Exception) -> None:
        logging.getLogger("test").warning("Secondary store write failed: %s", exc)


def open_logging_proxy(path: str, env: Env, **options: str) -> PatternProxy:
    proxy = open_pattern_proxy(path, env, **options)
    proxy.close()
    proxy = open_pattern_proxy(path, env, **options)
    proxy.__class__ = LoggingProxy
    return proxy


def test_the_row_fails_a_proxy_that_only_logs() -> None:
    ev = check_secondary_failures(resolve("test_pattern_proxy:open_logging_proxy"), seed=3)
    assert ev.verdict is Verdict.FAIL
    assert "the queue holds 0 entries" in ev.summary


def test_the_row_is_na_for_a_store_with_no_secondary() -> None:
    for name in ("agentdb", "rvf", "stage3"):
        ev = check_secondary_failures(resolve(name), seed=1)
        assert ev.verdict is Verdict.NA and "not a dual-write proxy" in ev.summary, name


# -- reads the primary cannot serve ----------------------------------------------------------


def test_a_failed_primary_read_is_served_from_the_secondary_and_counted(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    records = generate_patterns(10, 4, seed=5)
    proxy = world.open()
    try:
        proxy.upsert(records)
        ids = [r.id for r in records[:3]]
        want = proxy.fetch(ids)
        primary = proxy.store(PRIMARY)
        for op in ("fetch", "query", "count", "fetch_block"):
            monkeypatch.setattr(primary, op, _eio)
        assert proxy.fetch(ids) == want
        assert proxy.query(records[0].vector, 3)[0].id == records[0].id
        assert proxy.count() == 10
        assert proxy.fetch_block(ids).ids == tuple(sorted(ids))
        stats = proxy.stats()
        assert stats.fallbacks == 4 and stats.primary_error is not None
        assert stats.primary_count is None and stats.secondary_count == 10
        assert sorted(stats.fallback_ids) == sorted(ids + ids)
        assert proxy.fallbacks == {"fetch": 1, "query": 1, "count": 1, "fetch_block": 1}
    finally:
        monkeypatch.undo()
        proxy.close()


def test_a_pattern_the_primary_lacks_is_served_from_the_secondary_with_its_id(
        world: World) -> None:
    records = generate_patterns(6, 4, seed=6)
    proxy = world.open()
    try:
        proxy.upsert(records)
        lost = records[2]
        proxy.store(PRIMARY).remove([lost.id])   # the primary loses it, behind the proxy's back
        got = proxy.fetch([r.id for r in records])
        assert [r.id for r in got] == sorted(r.id for r in records)
        assert proxy.stats().fallback_ids == (lost.id,)
        assert proxy.fallbacks["fetch"] == 1
        assert proxy.fetch_block([lost.id]).ids == (lost.id,)
        assert proxy.fallbacks["fetch"] == 2
    finally:
        proxy.close()


def test_a_secondary_behind_on_a_pattern_never_serves_it(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    records = generate_patterns(6, 4, seed=7)
    proxy = world.open()
    try:
        proxy.upsert(records)
        gone = records[0]
        monkeypatch.setattr(_secondary(proxy), "remove", _eio)
        assert proxy.remove([gone.id]) == 1   # the call succeeds: the primary took it
        monkeypatch.undo()
        assert [(d.op, d.ids, d.behind) for d in proxy.divergences()] == [
            ("remove", (gone.id,), SECONDARY)]
        assert _secondary(proxy).fetch([gone.id])   # the secondary still has it ...
        assert proxy.fetch([gone.id]) == []          # ... and never serves it
        assert proxy.stats().fallbacks == 0
        monkeypatch.setattr(proxy.store(PRIMARY), "query", _eio)
        with pytest.raises(CorruptStore, match="behind"):   # a whole read is refused too
            proxy.query(records[1].vector, 2)
        monkeypatch.undo()
        assert proxy.repair() == 1 and proxy.divergences() == []
        assert _secondary(proxy).fetch([gone.id]) == []
    finally:
        monkeypatch.undo()
        proxy.close()


# -- statistics ------------------------------------------------------------------------------


def test_stats_read_both_sides(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    records = generate_patterns(8, 4, seed=8)
    proxy = world.open()
    try:
        proxy.upsert(records[:5])
        monkeypatch.setattr(_secondary(proxy), "upsert", _eio)
        proxy.upsert(records[5:])
        monkeypatch.undo()
        stats = proxy.stats()
        assert (stats.primary_count, stats.secondary_count, stats.queued) == (8, 5, 1)
        assert stats.queued_ids == tuple(sorted(r.id for r in records[5:]))
        monkeypatch.setattr(_secondary(proxy), "count", _eio)
        stats = proxy.stats()   # a side that cannot count is reported, not raised
        assert stats.secondary_count is None and "injected" in str(stats.secondary_error)
        assert stats.primary_count == 8
        monkeypatch.undo()
        proxy.repair()
        stats = proxy.stats()
        assert (stats.primary_count, stats.secondary_count, stats.queued) == (8, 8, 0)
    finally:
        monkeypatch.undo()
        proxy.close()


# -- crashes ---------------------------------------------------------------------------------


def test_a_crash_between_the_two_writes_is_reconciled_at_the_next_open(world: World) -> None:
    records = generate_patterns(12, 4, seed=9)
    proxy = world.open()
    proxy.upsert(records[:6])
    assert BETWEEN in proxy.declaration.failpoints
    for write in (lambda p: p.upsert(records[6:]), lambda p: p.remove([records[0].id])):
        world.failpoints.arm(BETWEEN)
        with pytest.raises(SimulatedCrash):
            write(proxy)
        world.crash()
        proxy = world.open()   # not closed cleanly: the open reconciles the secondary
        assert proxy.reconciled > 0
        assert proxy.divergences() == []   # a crash is not a queued divergence
        stats = proxy.stats()
        assert stats.primary_count == stats.secondary_count
        assert _secondary(proxy).fetch(proxy.ids()) == proxy.fetch(proxy.ids())
    assert proxy.count() == 11
    proxy.close()
    proxy = world.open()
    assert proxy.reconciled == 0   # closed cleanly: nothing to reconcile
    proxy.close()


def test_a_crash_in_the_reconcile_is_resumed(world: World) -> None:
    records = generate_patterns(600, 4, seed=10)
    proxy = world.open()
    world.failpoints.arm(BETWEEN)
    with pytest.raises(SimulatedCrash):
        proxy.upsert(records)
    world.crash()
    world.failpoints.arm(PATTERN_GUIDE.failpoint("reconcile-batch"), after_hits=1)
    with pytest.raises(SimulatedCrash):
        world.open()
    world.crash()
    proxy = world.open()
    try:
        assert proxy.count() == _secondary(proxy).count() == 600
    finally:
        proxy.close()


# -- the first open ------------------------------------------------------------------------


def test_the_first_open_backfills_an_existing_agentdb_file_and_never_wipes_it(
        world: World) -> None:
    history = generate_patterns(30, 4, seed=11)
    env = world.env()
    old = open_agentdb(f"{PATH}/{SECONDARY_FILE}", env)
    old.upsert(history)
    old.close()
    proxy = world.open()
    try:
        assert proxy.backfilled == 30 and proxy.stats().backfilled == 30
        assert proxy.count() == 30 and _secondary(proxy).count() == 30
        assert proxy.fetch([r.id for r in history]) == sorted(history, key=lambda r: r.id)
        assert proxy.stats().fallbacks == 0   # served by the primary
    finally:
        proxy.close()
    proxy = world.open()
    assert proxy.backfilled == 0   # once only: the directory is a proxy's now
    proxy.close()


# -- options, declaration, readers -----------------------------------------------------------


def test_options_pass_through_and_declaration(tmp_path: Any) -> None:
    proxy = resolve("pattern-proxy?sync=one").open(str(tmp_path / "p"), os_env())
    try:
        decl = proxy.declaration
        assert decl.metric == "cosine"
        assert decl.failpoints[-1] == BETWEEN
        assert {Capability.VECTOR, Capability.METADATA_FILTER, Capability.FAILPOINTS,
                Capability.WRITER_LOCK} <= decl.capabilities
        assert not decl.has(Capability.STAGES) and not decl.has(Capability.KV)
        # sync=one reached the RVF file: its one-sync commit's failpoints, then the proxy's
        # (compaction's are not a write's: the proxy never compacts)
        assert decl.failpoints == ("rvf.after-manifest-write", BETWEEN)
        assert proxy.secondary_file.endswith(SECONDARY_FILE)
    finally:
        proxy.close()
    with pytest.raises(BadOption, match="no_such"):
        resolve("pattern-proxy?no_such=1").open(str(tmp_path / "q"), os_env())


def test_hnsw_on_the_primary_declares_its_recall(tmp_path: Any) -> None:
    from crashgate.reference.rvf.store import OPTIONS as RVF_OPTIONS
    if "index" not in RVF_OPTIONS:
        pytest.skip("the RVF store has no index option in this tree")
    proxy = resolve("pattern-proxy?index=hnsw").open(str(tmp_path / "p"), os_env())
    try:
        assert getattr(proxy.declaration, "recall", None) == \
            getattr(proxy.store(PRIMARY).declaration, "recall", None)
        records = generate_patterns(50, 8, seed=12)
        proxy.upsert(records)
        assert proxy.query(records[3].vector, 1)[0].id == records[3].id
    finally:
        proxy.close()


def test_a_reader_writes_nothing_and_serves_no_lost_pattern(world: World) -> None:
    records = generate_patterns(5, 4, seed=13)
    proxy = world.open()
    proxy.upsert(records)
    proxy.close()
    reader = world.open(readonly="true")
    try:
        assert reader.count() == 5
        with pytest.raises(PermissionError, match="readonly=true"):
            reader.upsert(records[:1])
        with pytest.raises(PermissionError, match="readonly=true"):
            reader.remove([records[0].id])
        with pytest.raises(PermissionError):
            reader.repair()
        assert reader.fetch([r.id for r in records]) == sorted(records, key=lambda r: r.id)
        assert reader.fetch([12345]) == [] and reader.stats().fallbacks == 0
    finally:
        reader.close()


def test_a_writer_refuses_a_primary_rolled_back_by_damage(world: World) -> None:
    records = generate_patterns(8, 4, seed=14)
    proxy = world.open()
    proxy.upsert(records[:4])
    fs = world.env().fs
    primary = proxy.primary_file
    f = fs.open(primary, "r")
    first_commit = f.size()
    f.close()
    proxy.upsert(records[4:])
    proxy.close()
    f = fs.open(primary, "r+")   # the last commit cut off: RVF opens the one before
    f.truncate(first_commit)
    f.sync()
    f.close()
    with pytest.raises(CorruptStore, match="lost committed writes"):
        world.open()
    reader = world.open(readonly="true")   # a reader shows RVF's earlier commit, unmixed
    try:
        assert reader.ids() == sorted(r.id for r in records[:4])
        assert [r.id for r in reader.fetch([r.id for r in records])] == reader.ids()
    finally:
        reader.close()
