"""ADR-032's rvlite hybrid (Phase 2): vectors and key-value data in an RVF file, vector metadata
cached in an IndexedDB model, kept in step by a shared monotonic epoch.

Files: ``path`` is the RVF file itself (so the plain ``rvf`` backend reads and writes it: ADR-032
row 5), ``path + ".idb"`` the metadata cache, ``path + ".lock"`` the RVF writer lock.

Every mutation is one RVF commit and then two IndexedDB transactions, in the ADR's order::

    guard   the writer lease is checked (and its heartbeat renewed) before RVF is touched
    1       RVF commit of the vectors, their metadata, the kv changes, epoch e+1 (one fsync'd
            manifest: RVF alone can rebuild everything)
            failpoint "rvlite.after-rvf-write"
    2       IndexedDB: the metadata of the upserted / removed ids, and the new RVF commit's
            digest beside the old epoch (so the cache never names a commit whose metadata it
            does not hold: step 3, below)
            failpoint "rvlite.after-metadata-write"
    3       IndexedDB: state.epoch = e+1 (refused unless it was e)
            failpoint "rvlite.before-epoch-commit" (inside the transaction, before it commits)

On open the epochs are compared (``env.observe("epoch.reconciled", ...)`` says what was done):
equal, nothing; RVF ahead, the cache is rebuilt from RVF in one transaction that also sets the
epoch; metadata ahead (it should not happen), a warning (``logging`` and
``env.observe("epoch.metadata-ahead", ...)``) and the cache is rebuilt from RVF all the same.
A rebuild also records the RVF file id, so that a cache of another file (one copied over this
one) is rebuilt even at an equal epoch, and the digest of the RVF commit the cache matches
(``RvfStore.commit_digest``, a hash of the committed manifest), so that equal epoch numbers over
different commits rebuild it too: an ``.rvf`` restored from a backup and then written once
(through ``crashgate rvf ingest`` or the plain ``rvf`` backend) is back at the cache's epoch
with other data. Every epoch commit and rebuild records the digest with the epoch, in the same
transaction; compaction records the compacted file's (a crash before that costs one rebuild).
A cache from before digests were recorded has none and is judged by epoch and file id alone.
Queries take vectors from RVF and metadata from the cache while the cache stands for the commit
RVF holds (its epoch, file id and digest, read in the same transaction as the metadata), else
from RVF. A writer's cache stands for its commit except after a mutation that failed half-way;
a reader's RVF view is the commit it opened, while its cache connection sees what the writer
appends, so its cache stands for its view until the writer's next mutation, and the reader then
reads RVF's metadata. Between steps 2 and 3 the cache holds new metadata beside the old epoch:
the digest written in step 2 is what keeps a reader of the old commit from taking it.

Threads: every call holds one lock per open store. One call is one RVF commit and two or three
cache transactions; without the lock a read took the vectors of one commit and the metadata of
another (torn), and two mutations interleaved their steps (the cache then held the older one's
metadata: stale, and reported as damage by the epoch check of step 3).

The writer holds the RVF file lock and the IndexedDB lease. Every rvlite writer takes both, the
file lock first, so once this writer holds the file lock no writer in another process holds the
store: with ``lease_recovery=lock`` (the default) a fresh lease left behind is taken over at once
(new fencing token) unless its holder is alive in this process (lease.py says how that is told);
with ``lease_recovery=stale`` the browser rule alone applies: wait (up to ``lease_wait`` seconds
on the env clock) until its heartbeat is older than 30 s.

``wire_version`` is passed to the RVF store: a file of a newer wire version is refused with
``VersionTooNew`` before anything (not even the cache) is created.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from crashgate.backends import (
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    Durability,
    Env,
    Hit,
    Option,
    StoreClosed,
    VectorBlock,
    VectorRecord,
    check_options,
)
from crashgate.reference.indexeddb import IndexedDB, Transaction
from crashgate.reference.lease import LEASE_STORE, Lease
from crashgate.reference.rvf.store import FAILPOINTS as RVF_FAILPOINTS
from crashgate.reference.rvf.store import RvfStore, open_rvf
from crashgate.reference.vector_search import METRICS, check_where, exact_search, matches

__all__ = ["DECLARED_FAILPOINTS", "FAILPOINTS", "META_STORE", "STATE_STORE", "RvliteStore",
           "cache_path", "open_rvlite", "rvf_records"]

log = logging.getLogger(__name__)

FAILPOINTS = ("rvlite.after-rvf-write", "rvlite.after-metadata-write",
              "rvlite.before-epoch-commit")
"""rvlite's own failpoints, in the order one mutation hits them."""
DECLARED_FAILPOINTS = RVF_FAILPOINTS + FAILPOINTS
"""Everything a write hits: the RVF commit's own failpoints (step 1), then rvlite's; and the
RVF compaction's, which ``compact()`` hits."""
META_STORE = "metadata"
STATE_STORE = "state"
_EPOCH = "epoch"
_FILE_ID = "rvf_file_id"
_COMMIT = "rvf_commit"
_MISSING = object()
STORES = (META_STORE, STATE_STORE, LEASE_STORE)

OPTIONS = {
    "metric": Option("l2", METRICS, help="distance for vector queries (a new file only)"),
    "readonly": Option("false", ("true", "false"), help="open as a reader: no lock, no lease"),
    "lease_recovery": Option("lock", ("lock", "stale"),
                             help="lock: holding the RVF file lock, take over a lease whose "
                                  "holder is not alive in this process; stale: only once its "
                                  "heartbeat is older than 30 s"),
    "lease_wait": Option("0", convert=float,
                         help="seconds to wait on the env clock for a held lease to go stale"),
    "wire_version": Option("1", convert=int, help="newest RVF wire version to read and write"),
}


def cache_path(path: str) -> str:
    """Where the IndexedDB metadata cache of the rvlite store at ``path`` lives."""
    return path + ".idb"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _differing(cached: Mapping[Any, Any], records: Mapping[int, Any]) -> list[int]:
    """The ids of ``records`` whose value the cache lacks or holds otherwise, as JSON: Python
    finds ``1``, ``1.0`` and ``True`` equal, JSON does not. The equal ones are confirmed as
    one text each side (a JSON text parses to one value, so equal texts are equal values, types
    and all), and one by one only when that text differs."""
    same = [i for i, m in records.items() if cached.get(i, _MISSING) == m]
    if _json([cached[i] for i in same]) != _json([records[i] for i in same]):
        same = [i for i in same if _json(cached[i]) == _json(records[i])]
    kept = set(same)
    return [i for i in records if i not in kept]


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialised(method: Callable[Concatenate[RvliteStore, _P], _R]
                ) -> Callable[Concatenate[RvliteStore, _P], _R]:
    """``method`` run under the store's lock: one call at a time among its threads."""
    @functools.wraps(method)
    def run(self: RvliteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)
    return run


def rvf_records(rvf: RvfStore) -> list[VectorRecord]:
    """Every live record of an RVF store, ordered by id: O(live records), read from memory (a
    query with k = count would compute and sort every distance first)."""
    return rvf.fetch(rvf.ids())


class RvliteStore:
    """An open rvlite hybrid; build it with ``open_rvlite``."""

    def __init__(self, path: str, env: Env, rvf: RvfStore, db: IndexedDB | None,
                 lease: Lease | None, metric: str) -> None:
        self.path = path
        self._env = env
        self._rvf = rvf
        self._db = db
        self._lease = lease
        self._metric = metric
        self._closed = False
        self._lock = threading.RLock()   # one call at a time (module docstring, "Threads")
        self._unsettled = False   # a mutation got past its RVF commit but not its epoch commit
        self._overlay: dict[int, dict[str, Any]] | None = None   # reader's view of a stale cache
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS,
            capabilities=frozenset({
                Capability.KV, Capability.VECTOR, Capability.BATCH, Capability.EPOCH,
                Capability.LEASE, Capability.WRITER_LOCK, Capability.METADATA_FILTER,
                Capability.FAILPOINTS, Capability.WIRE_VERSION, Capability.COMPACT}),
            file_format="rvf",
            wire_version=rvf.declaration.wire_version,
            failpoints=DECLARED_FAILPOINTS,
            metric=metric,
            damage=DamagePromise.ROLLBACK,
            notes={"files": "PATH: the RVF file (vectors, kv); PATH.idb: the metadata cache; "
                            "PATH.lock: the RVF writer lock",
                   "damage": "as rvf: damage to the last RVF commit rolls it back; the cache "
                             "is checked per frame and judged against the RVF commit it was "
                             "built from (epoch, file id, commit digest), else rebuilt"},
        )

    # -- epochs -----------------------------------------------------------------------------

    @property
    @_serialised
    def epoch(self) -> int:
        """The shared epoch: the RVF manifest's (the cache's equals it after every mutation)."""
        return self._rvf.epoch

    @_serialised
    def metadata_epoch(self) -> int:
        """The epoch the metadata cache last committed (0 for a new or missing cache)."""
        return self._cache_state()[0]

    def _cache_state(self) -> tuple[int, str | None, str | None]:
        """What the cache says it was built from, read in one transaction: ``(epoch, RVF file
        id, RVF commit digest)``; 0 and ``None`` for what it lacks (a new or missing cache, or
        one from before file ids or digests were recorded)."""
        if self._db is None:
            return 0, None, None
        with self._db.transaction(STATE_STORE) as txn:
            epoch, file_id, commit = txn.get_many(STATE_STORE, [_EPOCH, _FILE_ID, _COMMIT])
        return int(epoch or 0), file_id, commit

    def _stands_for_rvf(self, epoch: int, file_id: str | None, commit: str | None) -> bool:
        """Whether a cache whose state is ``(epoch, file_id, commit)`` holds the metadata of
        the commit RVF holds: the same epoch, file and commit (a cache from before file ids or
        digests were recorded lacks them and is judged by what it has)."""
        return (epoch == self._rvf.epoch and file_id in (None, self._rvf.file_id.hex())
                and commit in (None, self._rvf.commit_digest.hex()))

    @_serialised
    def reconcile(self) -> str:
        """Compare the epochs and bring the cache in line with RVF; returns what was done
        (``none``, ``rebuilt``, ``rebuilt-metadata-ahead``, ``rebuilt-other-file``,
        ``rebuilt-other-commit``, or ``read-from-rvf`` for a reader)."""
        rvf_epoch = self.epoch
        meta_epoch, cached_id, cached_commit = self._cache_state()
        details: dict[str, object] = {"path": self.path, "rvf_epoch": rvf_epoch,
                                      "metadata_epoch": meta_epoch}
        # a cache built from another RVF file (one copied over this one) is stale even at an
        # equal epoch, and so is one built from another commit of this file at the same epoch
        # number (_stands_for_rvf); a cache from before file ids were recorded has none
        other_file = cached_id not in (None, self._rvf.file_id.hex())
        if meta_epoch > rvf_epoch:
            log.warning("rvlite %s: metadata epoch %d is ahead of the RVF epoch %d; this should "
                        "not happen: trusting RVF and rebuilding the metadata from it",
                        self.path, meta_epoch, rvf_epoch)
            self._env.observe("epoch.metadata-ahead", dict(details))
        if self._db is not None and self._stands_for_rvf(meta_epoch, cached_id, cached_commit):
            action = "none"
        elif self._lease is None:   # a reader may not write the cache: serve RVF's metadata
            self._overlay = self._rvf.live_metadata()
            action = "read-from-rvf"
        else:
            details["records"] = self.rebuild()
            action = ("rebuilt-other-file" if other_file and meta_epoch == rvf_epoch
                      else "rebuilt-other-commit" if meta_epoch == rvf_epoch
                      else "rebuilt" if rvf_epoch > meta_epoch else "rebuilt-metadata-ahead")
        self._env.observe("epoch.reconciled", {**details, "action": action})
        return action

    @_serialised
    def rebuild(self) -> int:
        """Make the metadata cache RVF's live metadata and commit RVF's epoch with it, in one
        transaction; returns how many records it holds. Only what differs is written (the
        ids RVF no longer has are deleted, the missing and changed ones put): the cache ends
        the same as one cleared and refilled, and a crash that left it one batch behind costs
        a frame of that batch, not a copy of every record (and the compaction it would force)."""
        self._check_writer()
        records = self._rvf.live_metadata()
        with self._write([META_STORE, STATE_STORE]) as txn:
            cached = dict(txn.items(META_STORE))
            for stale in cached.keys() - records.keys():
                txn.delete(META_STORE, stale)
            txn.put_many(META_STORE, [(i, records[i]) for i in _differing(cached, records)])
            txn.put(STATE_STORE, _EPOCH, self.epoch)
            txn.put(STATE_STORE, _FILE_ID, self._rvf.file_id.hex())
            txn.put(STATE_STORE, _COMMIT, self._rvf.commit_digest.hex())
        self._unsettled = False
        return len(records)

    @_serialised
    def heartbeat(self) -> None:
        """Renew the writer lease when due (an idle writer's timer); ``LeaseExpired`` if lost."""
        self._check_writer()
        assert self._lease is not None
        self._lease.heartbeat()

    # -- the write path ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    def _check_writer(self) -> None:
        self._check_open()
        if self._lease is None:
            raise PermissionError(f"rvlite store {self.path} is open read-only; "
                                  "open it without readonly=true to write")

    def _write(self, scope: list[str]) -> Transaction:
        """A readwrite transaction that has already checked this writer's lease."""
        assert self._db is not None and self._lease is not None
        txn = self._db.transaction([*scope, LEASE_STORE], "readwrite")
        try:
            self._lease.guard(txn)
        except BaseException:
            txn.abort()
            raise
        return txn

    @_serialised
    def _commit(self, *, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = (),
                upserts: Sequence[VectorRecord] = (), removes: Iterable[int] = ()) -> None:
        self._check_writer()
        if self._unsettled:   # an earlier mutation failed half-way: settle it first
            self.reconcile()
        removes = list(removes)
        new = self.epoch + 1
        with self._write([]):
            pass   # fence before RVF is touched: a lost lease never writes anything
        self._unsettled = True
        self._rvf.commit(puts=dict(puts or {}), deletes=list(deletes), upserts=list(upserts),
                         removes=removes, epoch=new)
        self._env.failpoints.hit(FAILPOINTS[0])
        if upserts or removes:
            with self._write([META_STORE, STATE_STORE]) as txn:
                for i in removes:
                    txn.delete(META_STORE, i)
                txn.put_many(META_STORE, [(r.id, dict(r.metadata)) for r in upserts])
                # the metadata is now the new commit's: so the state says, until step 3
                # commits the epoch (a reader still at the old commit then reads RVF)
                txn.put(STATE_STORE, _COMMIT, self._rvf.commit_digest.hex())
        self._env.failpoints.hit(FAILPOINTS[1])
        txn = self._write([STATE_STORE])
        found = int(txn.get(STATE_STORE, _EPOCH) or 0)
        if found != new - 1:
            txn.abort()
            raise CorruptStore(cache_path(self.path), f"the cache's epoch is {found} where "
                               f"{new - 1} was expected; reopen the store to reconcile it")
        txn.put(STATE_STORE, _EPOCH, new)
        txn.put(STATE_STORE, _FILE_ID, self._rvf.file_id.hex())
        txn.put(STATE_STORE, _COMMIT, self._rvf.commit_digest.hex())
        self._env.failpoints.hit(FAILPOINTS[2])
        txn.commit()
        self._unsettled = False

    @_serialised
    def compact(self) -> None:
        """Compact the RVF file (the epoch and the records are unchanged, so the metadata cache
        stays valid); fenced by the lease like any write."""
        self._check_writer()
        with self._write([]):
            pass   # a writer that lost its lease rewrites nothing
        self._rvf.compact()
        # same epoch, same records, a new manifest: the cache now stands for this commit
        with self._write([STATE_STORE]) as txn:
            if int(txn.get(STATE_STORE, _EPOCH) or 0) == self.epoch:
                txn.put(STATE_STORE, _COMMIT, self._rvf.commit_digest.hex())

    # -- key-value (in RVF) -----------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        self._commit(puts={key: bytes(value)})

    @_serialised
    def get(self, key: str) -> bytes | None:
        self._check_open()
        return self._rvf.get(key)

    def delete(self, key: str) -> None:
        self._commit(deletes=[key])

    @_serialised
    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        return self._rvf.scan(prefix)

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        deletes = [k for k in deletes if k not in puts]
        if puts or deletes:
            self._commit(puts={k: bytes(v) for k, v in puts.items()}, deletes=deletes)

    # -- vectors: RVF holds them, the cache their metadata ----------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        recs = [VectorRecord.of(r.id, r.vector, r.metadata) for r in records]
        if recs:
            self._commit(upserts=recs)

    @_serialised
    def remove(self, ids: Iterable[int]) -> int:
        self._check_writer()
        live = [r.id for r in self._rvf.fetch({int(i) for i in ids})]
        if live:
            self._commit(removes=live)
        return len(live)

    @_serialised
    def count(self) -> int:
        self._check_open()
        return self._rvf.count()

    def _cache_view(self, ids: list[int] | None) -> dict[int, Any] | None:
        """The cached metadata of ``ids`` (``None`` for an id it lacks), or of every id when
        ``ids`` is None, read in one transaction with the cache's state; ``None`` when the cache
        does not stand for the commit RVF holds (module docstring), or there is none."""
        if self._overlay is not None or self._db is None:
            return None
        with self._db.transaction([META_STORE, STATE_STORE]) as txn:
            epoch, file_id, commit = txn.get_many(STATE_STORE, [_EPOCH, _FILE_ID, _COMMIT])
            if not self._stands_for_rvf(int(epoch or 0), file_id, commit):
                return None
            if ids is None:
                return {int(i): m for i, m in txn.items(META_STORE)}
            return dict(zip(ids, txn.get_many(META_STORE, ids), strict=True))

    def _rvf_view(self) -> dict[int, dict[str, Any]]:
        """RVF's metadata of every live id, for when the cache does not stand for RVF's commit:
        a reader keeps it (its RVF view never changes, and its cache only moves further on); a
        writer whose last mutation failed half-way reads it until the next one reconciles."""
        if self._lease is None:
            if self._overlay is None:
                self._overlay = self._rvf.live_metadata()
            return self._overlay
        return self._rvf.live_metadata()

    def _metadata(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The metadata of ``ids``, cached or RVF's; a live id it lacks is damage, not data."""
        wanted = list(ids)
        got = self._cache_view(wanted)
        if got is None:
            source = self._rvf_view()
            got = {i: source.get(i) for i in wanted}
        missing = sorted(i for i, m in got.items() if m is None)
        if missing:
            raise CorruptStore(cache_path(self.path), f"no metadata for live ids {missing[:5]}; "
                               f"run `crashgate rvf rebuild {self.path}`")
        return {i: m for i, m in got.items() if m is not None}

    @_serialised
    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        self._check_open()
        recs = self._rvf.fetch(ids)
        meta = self._metadata(r.id for r in recs)
        return [VectorRecord(r.id, r.vector, meta[r.id]) for r in recs]

    @_serialised
    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        """``fetch`` as arrays (``BulkFetch``): the vectors as RVF's block, the metadata from
        the cache, as ``fetch`` takes them."""
        self._check_open()
        block = self._rvf.fetch_block(ids)
        meta = self._metadata(block.ids)
        return VectorBlock(block.ids, block.vectors, tuple(meta[i] for i in block.ids))

    @_serialised
    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        self._check_open()
        check_where(where)   # a bad filter is refused on an empty store too
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if k == 0 or self._rvf.count() == 0:
            return []
        if not where:
            hits = self._rvf.query(vector, k)
            meta = self._metadata(h.id for h in hits)
            return [Hit(h.id, h.distance, meta[h.id]) for h in hits]
        # filter on the cache's metadata, then search the matching vectors read from RVF
        cached = self._cache_view(None)
        if cached is None:
            cached = self._rvf_view()
        meta = {i: m for i, m in cached.items() if matches(m, where)}
        recs = self._rvf.fetch(meta)
        if not recs:
            return []
        matrix = np.array([r.vector for r in recs], dtype=np.float64)
        return exact_search([r.id for r in recs], matrix, [meta[r.id] for r in recs],
                            vector, k, self._metric, where)

    # -- lifecycle --------------------------------------------------------------------------

    @_serialised
    def status(self) -> dict[str, object]:
        self._check_open()
        return {"path": self.path, "cache": cache_path(self.path), "epoch": self.epoch,
                "metadata_epoch": self.metadata_epoch(), "count": self._rvf.count(),
                "writer": self._lease is not None,
                "lease_token": self._lease.token if self._lease else None}

    @_serialised
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._lease is not None:
                self._lease.release()
        finally:
            if self._db is not None:
                self._db.close()
            self._rvf.close()


def open_rvlite(path: str, env: Env, **options: str) -> RvliteStore:
    """Open (or create) the rvlite store whose RVF file is ``path``; reconciles on open."""
    opts = check_options("rvlite", options, OPTIONS)
    readonly = opts["readonly"] == "true"
    rvf_options = {"readonly": str(readonly).lower(), "lock": str(not readonly).lower()}
    for name in ("metric", "wire_version"):   # an existing file keeps its metric
        if name in options:
            rvf_options[name] = str(opts[name])
    rvf = open_rvf(path, env, **rvf_options)
    db: IndexedDB | None = None
    lease: Lease | None = None
    try:
        if not readonly:
            db = IndexedDB(cache_path(path), env, stores=STORES)
            dead = None
            if opts["lease_recovery"] == "lock":
                dead = ("this writer holds the RVF writer lock, which every rvlite writer takes "
                        "first, and no writer in this process holds the lease")
            lease = Lease.acquire(db, wait=float(str(opts["lease_wait"])), recover_dead=dead)
        elif env.fs.exists(cache_path(path)):
            db = IndexedDB(cache_path(path), env, readonly=True)
            if not set(STORES) <= set(db.object_store_names()):   # created, never filled
                db.close()
                db = None
        store = RvliteStore(path, env, rvf, db, lease, rvf.declaration.metric or "l2")
        store.reconcile()
        return store
    except Exception:   # not on a SimulatedCrash: a dead process cleans nothing up
        if lease is not None:
            lease.release()
        if db is not None:
            db.close()
        rvf.close()
        raise
