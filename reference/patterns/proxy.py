"""The pattern migration guide's dual-write proxy (``pattern-proxy``): every write to the
primary, the RVF store, and then to the secondary, the AgentDB pattern store; reads from the
primary ("All writes go to both, reads from RuVector").

It runs on the one mechanism every migration's adapter shares (``stages.staged.StagedStores``)
with a plan of one stage (``PATTERN_GUIDE``: vectors from the primary, the secondary a
``fallback`` mirror). So what the guide leaves to a log line ("Monitor logs for 'Secondary
store write failed'") is the mechanism's: a secondary write or delete that fails never fails
the call and is **queued** as a divergence in ``control.db`` (``divergences()``), which
``repair()`` replays from the primary; a crash between the two writes, or a failure nothing
could queue, is mended by the reconcile at the next writer's open (``stages/reconcile.py``).

Files, in the directory ``path``::

    control.db           the stage record, the shutdown record and the divergence queue
    patterns.rvf         the primary (RVF store; options passed through: index=hnsw ...)
    patterns-backup.db   the secondary (AgentDB pattern store, ``agentdb.py``)

**Reads the primary cannot serve.** A read that fails on the primary (damage, an I/O error)
is served from the secondary and counted (the mechanism's ``fallbacks``), unless a queued
divergence says the secondary is behind on it. A ``fetch`` for an id the primary does not
hold and the secondary does is served from the secondary too, counted with its id
(``fallback_ids``): the primary lost it (every write reaches the primary first, and the
writer's open reconciled the secondary), unless the secondary is behind on it (a queued
divergence: a failed delete) or the proxy is in doubt. A reader (``readonly=true``) serves
only the error fallback: it never reconciles, so it cannot tell a lost record from a delete
the secondary has not seen yet.

**The first open** of a directory (no writer ever recorded its shutdown) copies into the
primary every pattern the secondary holds and the primary lacks, before the reconcile makes
the secondary equal the primary: an existing AgentDB file put in as the secondary is
backfilled (the guide's "Phase 2: Backfill Historical Data"), never wiped.

**A primary rolled back by damage** (RVF opens its last commit that verifies) is refused by a
writer (``CorruptStore``): a clean close records RVF's epoch in ``control.db``, and an open
that finds RVF older has lost acknowledged writes the secondary still holds.

``stats()`` reads both sides: each one's count (or its error), the queue, the fallbacks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crashgate.backends import (
    Capability,
    CorruptStore,
    Declaration,
    Env,
    Hit,
    Option,
    VectorBlock,
    VectorRecord,
    check_options,
)
from crashgate.reference.patterns.agentdb import OPTIONS as AGENTDB_OPTIONS
from crashgate.reference.patterns.agentdb import open_agentdb
from crashgate.reference.rvf import store as rvf_store
from crashgate.reference.sqlite_store import checked_busy_timeout
from crashgate.reference.sqlite_store import declaration_for as sqlite_declaration
from crashgate.reference.stages.roles import Roles, StagePlan
from crashgate.reference.stages.staged import FALLBACK_ERRORS, StagedStores
from crashgate.reference.stages.sync import sync_vectors

__all__ = ["PATTERN_GUIDE", "PRIMARY", "PRIMARY_FILE", "SECONDARY", "SECONDARY_FILE",
           "PatternProxy", "ProxyStats", "open_pattern_proxy", "options"]

PRIMARY = "primary"
SECONDARY = "secondary"
PRIMARY_FILE = "patterns.rvf"
SECONDARY_FILE = "patterns-backup.db"
_KEPT = 1000
_U64 = 1 << 64

PATTERN_GUIDE = StagePlan(
    document="pattern-guide",
    stages={1: Roles(PRIMARY, PRIMARY, SECONDARY, "fallback")},
    catch_up={},
    carries={"vectors": ("vectors",)},
    syncs={"vectors": sync_vectors},
    prefix="proxy",
    labels={PRIMARY: "RVF (the primary)", SECONDARY: "AgentDB (the secondary)"},
)
"""The guide's dual-write as a plan of one stage: no promotion, no rollback (the guide's cut
over is opening the RVF store alone)."""


def options() -> dict[str, Option]:
    """The proxy's options: the RVF store's (as it has them now: ``index`` ... pass through),
    ``journal_mode``, ``synchronous`` and ``busy_timeout`` for the two SQLite files, and
    ``metric`` (default cosine, as the AgentDB store's) and ``readonly`` for every file."""
    return {**rvf_store.OPTIONS,
            **{k: AGENTDB_OPTIONS[k] for k in ("journal_mode", "synchronous", "busy_timeout",
                                               "metric")},
            "readonly": Option("false", ("true", "false"), help="open an existing proxy as a "
                               "reader: nothing created or written")}


@dataclass(frozen=True)
class ProxyStats:
    """Both sides at one moment: each one's pattern count, or None and the error that kept
    it from counting; the ``queued`` divergences (writes the secondary missed) and the ids
    they name; ``reconciled``, the records the open's reconcile wrote into the secondary;
    ``fallbacks``, reads served from the secondary (``fallback_ids``: the ids of the fetches
    among them, the first thousand); ``in_doubt``, why the proxy is (None: it is not)."""

    primary_count: int | None
    secondary_count: int | None
    primary_error: str | None
    secondary_error: str | None
    queued: int
    queued_ids: tuple[int, ...]
    reconciled: int
    backfilled: int
    fallbacks: int
    fallback_ids: tuple[int, ...]
    in_doubt: str | None


class PatternProxy(StagedStores):
    """An open dual-write proxy (module docstring); build it with ``open_pattern_proxy``."""

    plan = PATTERN_GUIDE
    secondary_backend = "agentdb"
    """The backend of the secondary's file, for a tool that reads it alone."""
    backfilled = 0
    """Patterns the first open copied from the secondary into the primary."""
    _closing_epoch: int | None = None

    def __init__(self, path: str, env: Env, store_options: Mapping[str, dict[str, str]],
                 declare: Callable[[Any], Declaration], options: Mapping[str, object]) -> None:
        self.fallback_ids: list[int] = []
        """The ids of fetches served from the secondary (the first thousand)."""
        self._ids_lock = threading.Lock()
        super().__init__(path, env, 1, store_options, declare, options)

    @property
    def secondary_file(self) -> str:
        """The secondary's file (its journal and WAL are named after it)."""
        return self._file(SECONDARY_FILE)

    @property
    def primary_file(self) -> str:
        return self._file(PRIMARY_FILE)

    # -- the mechanism's hooks ----------------------------------------------------------------

    def _open_store(self, name: str) -> Any:
        if name == PRIMARY:
            return rvf_store.open_rvf(self.primary_file, self._env, **self._options[PRIMARY])
        return open_agentdb(self.secondary_file, self._env, **self._options[SECONDARY])

    def _opened(self) -> None:
        if self.readonly:
            return
        self._check_primary_epoch()
        # the first writer's open: backfill the primary from an existing secondary (module
        # docstring); until that writer marks itself open, a crash repeats it (a diff)
        if self._control.clean_shutdown() is not None:
            return
        primary, secondary = self._stores[PRIMARY], self._stores[SECONDARY]
        lacking = sorted(set(secondary.ids()) - set(primary.ids()))
        if lacking:
            self.backfilled = sync_vectors(secondary, primary, self._reconcile_batch, lacking)

    def _check_primary_epoch(self) -> None:
        """A writer refuses a primary older than the epoch the last clean close recorded:
        damage rolled RVF back to an earlier commit (``FORMAT.md``). Served as it is, the
        fallback would mix its older records with the secondary's newer ones, and the next
        reconcile would take the lost writes from the secondary too."""
        recorded, seen = self._control.rvf_epoch(), self._stores[PRIMARY].epoch
        if recorded is not None and seen < recorded:
            raise CorruptStore(self.primary_file, f"RVF opened at epoch {seen}, but the proxy "
                               f"closed cleanly at epoch {recorded}: RVF lost committed "
                               f"writes. {self.secondary_file} holds them: open it alone "
                               "(agentdb) to read them, or restore RVF from a backup")

    def close(self) -> None:
        # the epoch the clean close records (_end_writing), read before the stores close
        if not self._closed and PRIMARY in self._stores:
            self._closing_epoch = int(self._stores[PRIMARY].epoch)
        super().close()

    def _end_writing(self) -> None:
        if not self.readonly and self.in_doubt is None and self._closing_epoch is not None:
            self._control.set_rvf_epoch(self._closing_epoch)
        super()._end_writing()

    def _repair_records(self, d: Any, target: Any) -> None:
        sync_vectors(self._stores[PRIMARY], target, _nothing, d.ids)

    # -- writes -------------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self._check_writable("upsert")
        records = list(records)
        if records:
            self._dual_write("upsert", "vectors", (), [r.id for r in records], (),
                             lambda s: s.upsert(records))

    def remove(self, ids: Iterable[int]) -> int:
        self._check_writable("remove")
        ids = list(ids)
        result: int = self._dual_write("remove", "vectors", (), ids, (),
                                       lambda s: s.remove(ids))
        return result

    # -- reads --------------------------------------------------------------------------------

    def _read(self, what: str, ids: Sequence[int], call: Callable[[Any], Any]) -> Any:
        return self._truth_read(what, "vectors", (), ids, (), call)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        ids = list(ids)
        before = self.fallbacks["fetch"]
        got: list[VectorRecord] = self._read("fetch", ids, lambda s: s.fetch(ids))
        if self.fallbacks["fetch"] != before:   # the primary failed: all of it was served
            self._note_ids(r.id for r in got)
            return got
        extra = self._lost(ids, {r.id for r in got})
        return sorted([*got, *extra], key=lambda r: r.id) if extra else got

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        """``fetch`` as arrays (``BulkFetch``), from the primary's blocks when it has them
        all; as ``fetch`` builds it otherwise."""
        ids = list(ids)
        fetch_block = getattr(self._stores[PRIMARY], "fetch_block", None)
        if fetch_block is not None:
            before = self.fallbacks["fetch_block"]
            block: VectorBlock = self._read("fetch_block", ids, lambda s: s.fetch_block(ids))
            if self.fallbacks["fetch_block"] != before:
                self._note_ids(block.ids)
                return block
            if not self._lost(ids, set(block.ids), probe=True):
                return block
        records = self.fetch(ids)
        if not records:
            return VectorBlock((), np.zeros((0, 0)), ())
        return VectorBlock(tuple(r.id for r in records),
                           np.array([r.vector for r in records], dtype=np.float64),
                           tuple(r.metadata for r in records))

    def _lost(self, ids: Sequence[int], have: set[int], *, probe: bool = False
              ) -> list[VectorRecord]:
        """The records among ``ids`` the primary lacks and the secondary has, served from it
        and counted (module docstring); ``probe``: only whether there are any, uncounted."""
        if self.readonly or self.in_doubt is not None:
            return []
        missing = sorted({int(i) for i in ids if 0 <= int(i) < _U64} - have)
        if not missing:
            return []
        behind = {i for d in self._behind(SECONDARY, (), missing, whole=False) for i in d.ids}
        ask = [i for i in missing if i not in behind]
        if not ask:
            return []
        try:
            found: list[VectorRecord] = self._stores[SECONDARY].fetch(ask)
        except FALLBACK_ERRORS:   # the primary's answer stands
            return []
        if found and not probe:
            served = [r.id for r in found]
            self._count_fallback("fetch", str(served), f"missing on {self.plan.label(PRIMARY)}")
            self._note_ids(served)
        return found

    def _note_ids(self, ids: Iterable[int]) -> None:
        with self._ids_lock:
            room = _KEPT - len(self.fallback_ids)
            if room > 0:
                self.fallback_ids.extend(list(ids)[:room])

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        got: list[Hit] = self._read("query", (), lambda s: s.query(vector, k, where))
        return got

    def count(self) -> int:
        got: int = self._read("count", (), lambda s: s.count())
        return got

    def ids(self) -> list[int]:
        got: list[int] = self._read("ids", (), lambda s: s.ids())
        return got

    def flush(self) -> None:
        """Make every write so far durable on both sides (as each store's ``flush``)."""
        self._check_open()
        for name in (PRIMARY, SECONDARY):
            flush = getattr(self._stores[name], "flush", None)
            if flush is not None:
                flush()

    # -- statistics ---------------------------------------------------------------------------

    def stats(self) -> ProxyStats:
        """Both sides' counts (each read from its own store), the queue and the fallbacks
        (``ProxyStats``). A side that fails to count is reported, not raised."""
        self._check_open()
        counts: dict[str, int | None] = {}
        errors: dict[str, str | None] = {}
        for name in (PRIMARY, SECONDARY):
            try:
                counts[name], errors[name] = int(self._stores[name].count()), None
            except Exception as exc:  # noqa: BLE001 - a side that cannot count is a statistic
                counts[name], errors[name] = None, f"{type(exc).__name__}: {exc}"
        queue = self._control.divergences()
        with self._ids_lock:
            fallback_ids = tuple(self.fallback_ids)
        return ProxyStats(counts[PRIMARY], counts[SECONDARY], errors[PRIMARY],
                          errors[SECONDARY], len(queue),
                          tuple(sorted({i for d in queue for i in d.ids})), self.reconciled,
                          self.backfilled, int(sum(self.fallbacks.values())), fallback_ids,
                          self.in_doubt)


def _nothing() -> None:
    return None


def _declare(proxy: PatternProxy) -> Declaration:
    """What the proxy promises: the weakest durability of its three files (a write is
    acknowledged once both sides and, on a failure, the queue have it), the primary's
    search (metric, recall), batches, writer lock and wire version, and the failpoints one
    write hits: the primary's, then the one between the two writes."""
    primary = proxy.store(PRIMARY).declaration
    secondary = proxy.store(SECONDARY).declaration
    control = sqlite_declaration(str(proxy.options["journal_mode"]),
                                 str(proxy.options["synchronous"]))
    durability = min((primary.durability, secondary.durability, control.durability),
                     key=lambda d: d.rank)
    between = PATTERN_GUIDE.write_failpoint(1)
    failpoints = (*(f for f in primary.failpoints if not f.startswith("rvf.compact.")), between)
    inherited = {Capability.BATCH, Capability.WRITER_LOCK, Capability.WIRE_VERSION} & \
        primary.capabilities
    extra: dict[str, Any] = {}
    if hasattr(primary, "recall"):   # approximate search on the primary (index=hnsw)
        extra["recall"] = primary.recall
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.VECTOR, Capability.METADATA_FILTER,
                                Capability.FAILPOINTS, *inherited}),
        file_format=f"crashgate-pattern-proxy/{primary.file_format}+{secondary.file_format}",
        wire_version=primary.wire_version,
        failpoints=failpoints,
        metric=primary.metric,
        damage=primary.damage,
        undetected_damage=primary.undetected_damage | secondary.undetected_damage
        | control.undetected_damage | {"misdirected-sector"},
        notes={
            "proxy": "the pattern migration guide's dual-write proxy: writes to RVF (the "
                     "primary) then AgentDB (the secondary); a failed secondary write or "
                     "delete is queued (divergences(), repair()); stats() reads both sides",
            "durability": f"the weakest of RVF ({primary.durability.value}), AgentDB "
                          f"({secondary.durability.value}) and control.db "
                          f"({control.durability.value})",
            "reads": "from RVF; a read RVF fails, or a fetched pattern RVF lacks, is served "
                     "from AgentDB and counted, unless AgentDB is behind on it",
            "damage": "RVF's promise for what is read from it; AgentDB and control.db are "
                      "SQLite files checked as the SQLite store checks its own; a sector "
                      "misdirected from one SQLite file to the other is a well-formed page "
                      "with valid sums, so it is not detected",
        },
        **extra,
    )


def open_pattern_proxy(path: str, env: Env, **given: str) -> PatternProxy:
    """Open (or create) the dual-write proxy whose directory is ``path`` (module docstring).
    Options: the RVF store's (``sync``, ``wire_version``, ``index`` ...: passed to
    ``patterns.rvf``), ``journal_mode``, ``synchronous``, ``busy_timeout`` (to
    ``patterns-backup.db`` and ``control.db``), ``metric`` (default cosine) and ``readonly``
    (to all)."""
    known = options()
    opts = check_options("pattern-proxy", given, known)
    checked_busy_timeout("pattern-proxy", opts["busy_timeout"])
    sqlite = {k: str(opts[k]) for k in ("journal_mode", "synchronous", "busy_timeout",
                                        "readonly", "metric")}
    rvf = {k: str(opts[k]) for k in rvf_store.OPTIONS if k in given or k in ("metric",
                                                                               "readonly")}
    return PatternProxy(path, env, {"sqlite": sqlite, PRIMARY: rvf, SECONDARY: dict(sqlite)},
                        _declare, opts)

