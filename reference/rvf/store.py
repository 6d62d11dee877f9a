"""The reference RVF store: key-value records and vectors in one append-only segment file.

``open_rvf(path, env, **options)`` opens (creating if missing) ``path``. A commit appends its data
segments (JOURNAL, META, VEC) and a WITNESS entry, fsyncs, appends a MANIFEST and fsyncs again:
the manifest's fsync is the commit point. With ``sync=one`` it appends data and manifest in one
write and fsyncs once (that fsync is the commit point; the manifest carries SAME_SYNC, and open
treats such a manifest over torn data, in the last commit only, as a torn commit). Opening
rebuilds the live state from the newest manifest that verifies (scan.py, replay.py); a writer
then truncates the uncommitted tail.
The live state is held in memory; queries are exact (``vector_search.exact_search``).
FORMAT.md describes the layout and every choice the specification leaves open.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import (
    BadOption,
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    Durability,
    Env,
    File,
    Hit,
    Option,
    Recall,
    StoreClosed,
    VectorBlock,
    VectorRecord,
    check_options,
)
from crashgate.reference.rvf.audit import (
    describe_tail,
    list_segments,
    verify_file,
    witness_history,
)
from crashgate.reference.rvf.backup import RvfBackup
from crashgate.reference.rvf.checkpoint import Cost, nested_headers, snapshot_payloads
from crashgate.reference.rvf.hnsw import HnswPath, hnsw_params
from crashgate.reference.rvf.index_file import Stamp, index_path, inspect_index
from crashgate.reference.rvf.lock import WriterLock
from crashgate.reference.rvf.manifest import Lineage, Manifest, SegRef
from crashgate.reference.rvf.payloads import encode_journal, encode_meta, encode_vec
from crashgate.reference.rvf.relational import RvfRelational, is_reserved
from crashgate.reference.rvf.relational import check_user_key as _check_key
from crashgate.reference.rvf.replay import Loaded, load, load_full
from crashgate.reference.rvf.rewrite import FreshFile, write_fresh
from crashgate.reference.rvf.scan import ChunkReader, ReadStats, last_manifest
from crashgate.reference.rvf.segments import (
    Flag,
    SegmentInfo,
    SegType,
    encode_segment,
    hash256,
)
from crashgate.reference.rvf.table import VectorTable
from crashgate.reference.rvf.witness import ZERO_HASH, WitnessEntry, WitnessType
from crashgate.reference.vector_search import METRICS

__all__ = ["FAILPOINTS", "ONE_SYNC_FAILPOINTS", "OPTIONS", "RvfStore", "open_rvf"]

MAX_WIRE_VERSION = 255
OPTIONS = {
    "dimension": Option("0", convert=int, help="vector dimension; 0 = from the file or the "
                        "first upsert"),
    "metric": Option("l2", METRICS, help="distance for queries; a file keeps the one it was "
                     "created with"),
    "wire_version": Option("1", convert=int, help="newest RVF wire version this reader/writer "
                           "supports; segments it writes carry it"),
    "readonly": Option("false", ("true", "false"), help="open without the writer lock"),
    "lock": Option("true", ("true", "false"), help="take the <file>.lock writer lock"),
    "stale_after": Option("30", convert=float, help="seconds after which a dead writer's lock "
                          "is recovered"),
    "sync": Option("two", ("two", "one"), help="fsyncs per commit: two (data, then manifest: "
                   "the spec's protocol) or one (data and manifest written together)"),
    "index": Option("exact", ("exact", "hnsw"), help="query path: exact (NumPy, the oracle) or "
                    "hnsw (an hnswlib graph saved as <file>.hnsw, derived from the vectors)"),
    "m": Option("16", convert=int, help="index=hnsw: links per node (2-128)"),
    "ef_construction": Option("200", convert=int, help="index=hnsw: candidate list size while "
                              "building (1-10000)"),
    "ef_search": Option("64", convert=int, help="index=hnsw: candidate list size while "
                        "querying (1-10000)"),
}
FAILPOINTS = ("rvf.after-data-write", "rvf.after-data-sync", "rvf.after-manifest-write",
              "rvf.compact.after-new-file", "rvf.compact.after-rename")
ONE_SYNC_FAILPOINTS = ("rvf.after-manifest-write", "rvf.compact.after-new-file",
                       "rvf.compact.after-rename")
"""The failpoints a ``sync=one`` store hits: its single commit write has data and manifest."""
CAPABILITIES = frozenset({
    Capability.KV, Capability.VECTOR, Capability.BATCH, Capability.COMPACT, Capability.DERIVE,
    Capability.WITNESS, Capability.WRITER_LOCK, Capability.WIRE_VERSION,
    Capability.METADATA_FILTER, Capability.EPOCH, Capability.FAILPOINTS, Capability.RELATIONAL,
    Capability.BACKUP,
})
U64 = 2**64


def _dir_of(path: str) -> str:
    return os.path.dirname(path) or "."


class RvfStore(RvfRelational, RvfBackup):
    """An open RVF file. Implements KVStore, BatchWrite, VectorStore, Compactable, Derivable,
    WitnessVerifiable, Relational (relational.py) and Backupable (backup.py); every mutating
    call is one ``commit``."""

    def __init__(self, path: str, env: Env, options: Mapping[str, object],
                 given: Mapping[str, object], *, lock: WriterLock | None = None) -> None:
        self.path = path
        self._env = env
        self._opts = dict(options)
        self._version = int(options["wire_version"])  # type: ignore[call-overload]
        if not 0 <= self._version <= MAX_WIRE_VERSION:
            raise BadOption("rvf", "wire_version", self._version, ["an integer from 0 to 255"])
        # a VEC segment stores the dimension as a u32 (FORMAT.md)
        if not 0 <= int(options["dimension"]) < 2**32:  # type: ignore[call-overload]
            raise BadOption("rvf", "dimension", options["dimension"], [
                "0 (from the file)", "a positive integer below 2**32 (a VEC segment's u32)"])
        self.readonly = options["readonly"] == "true"
        self._hnsw_params = hnsw_params(options, given)
        self._hnsw: HnswPath | None = None
        self._one_sync = options.get("sync", "two") == "one"
        self._file: File | None = None
        self._lock = lock
        self._closed = False
        self._tail_dirty = False
        self._size = self._end = 0
        self._write_lock = threading.RLock()   # one commit at a time among this store's threads
        self._probed: Loaded | None = None
        if not self.readonly and self._env.fs.exists(path):
            self._probe()  # refuse a newer or damaged file before taking its lock
        if lock is None and not self.readonly and options["lock"] == "true":
            self._lock = WriterLock(env.fs, env.clock, path, process=env.process,
                                    stale_after=float(options["stale_after"]))  # type: ignore[arg-type]
            self._lock.acquire()
        try:
            self._open_file()
            self._check_given(given)
        except BaseException:
            self._release()
            raise

    # -- opening ----------------------------------------------------------------------------

    def _probe(self) -> None:
        """Load the file before taking its lock (a newer or damaged file is refused and no lock
        file is left); ``_open_file`` keeps what this read if the file is unchanged."""
        f = self._env.fs.open(self.path, "r")
        try:
            self._probed = load(f, self.path, self._version)
        finally:
            f.close()

    def _still_probed(self, f: File) -> Loaded | None:
        """The probe's state if the file is still the one it read: same size, same committed
        manifest bytes, same newest manifest (a writer that got the lock in between and
        committed would have changed one of them)."""
        p, self._probed = self._probed, None
        if p is None or p.manifest_seg is None or f.size() != p.file_size:
            return None
        seg = p.manifest_seg
        if hash256(f.read(seg.offset, seg.header.total_length)) != p.manifest_digest:
            return None
        newest = last_manifest(ChunkReader(f, p.file_size), self._version)
        if (newest.offset if newest else -1) != (p.newest if p.newest >= 0 else seg.offset):
            return None
        return p

    def _open_file(self) -> None:
        fs = self._env.fs
        if self.readonly:
            self._file = fs.open(self.path, "r")
        else:
            if not fs.exists(self.path) or self._size_of(self.path) == 0:
                self._create()
            if fs.exists(self.path + ".tmp-rvf"):
                fs.remove(self.path + ".tmp-rvf")  # a compaction that crashed before its rename
            self._file = fs.open(self.path, "r+")
        self._adopt(self._still_probed(self._file) or load(self._file, self.path, self._version))
        if not self.readonly and self._size > self._end:
            # the torn or uncommitted tail, never visible; said aloud, since damage to the last
            # commit looks the same (FORMAT.md, "Limits: a declared rollback")
            self._env.observe("rvf.tail-truncated", {"path": self.path, "offset": self._end,
                                                     "bytes": self._size - self._end})
            self._file.truncate(self._end)
            self._size = self._end
        # What this open shows must survive power loss: a crashed writer may have left its last
        # manifest written but not fsynced, or its file renamed into place (create, compaction)
        # with the directory not yet fsynced. Syncing changes no byte, so readers do it too.
        self._file.sync()
        fs.sync_dir(_dir_of(self.path))

    def _size_of(self, path: str) -> int:
        f = self._env.fs.open(path, "r")
        try:
            return f.size()
        finally:
            f.close()

    def _create(self) -> None:
        dim = int(self._opts["dimension"])  # type: ignore[call-overload]
        self._publish(self.path, FreshFile(
            kind="create", witness_type=WitnessType.CREATE, version=self._version, epoch=0,
            dimension=dim, metric=str(self._opts["metric"]), lineage=Lineage(os.urandom(16)),
            kv={}, table=VectorTable(dim or None)))

    def _publish(self, target: str, spec: FreshFile, after_write: str | None = None,
                 after_rename: str | None = None) -> None:
        """Write a whole file beside ``target``, fsync it, rename it over ``target``, fsync the
        directory (with the failpoints between, for compaction)."""
        tmp = target + ".tmp-rvf"
        write_fresh(self._env.fs, tmp, spec, self._now)
        if after_write:
            self._env.failpoints.hit(after_write)
        self._env.fs.rename(tmp, target)
        if after_rename:
            self._env.failpoints.hit(after_rename)
        self._env.fs.sync_dir(_dir_of(target))

    def _adopt(self, st: Loaded, *, keep_index: bool = False) -> None:
        """Take the state ``st`` as the store's; ``keep_index``: the same live records as before
        (compaction), so an HNSW graph in memory still holds."""
        m = st.manifest
        self._kv = st.kv
        self._table = st.table
        self._dead = st.dead
        self._end = st.committed_end
        self._size = st.file_size
        self._next_seg_id = st.next_seg_id
        # what only compaction, derive and status need comes from the walk from offset 0: a
        # load from a checkpoint did not read it (``_history``)
        self._history_of: Loaded | None = st if st.whole else None
        self._checkpoint = st.checkpoint
        self._snapshot_cost = st.snapshot_cost
        self._since_cost = st.since_cost
        self._open_stats = st.stats
        self._manifest_digest = st.manifest_digest
        self._last_manifest = st.manifest_seg.offset if st.manifest_seg else -1
        if m is None:  # an empty file opened read-only
            m = Manifest("create", 0, int(self._opts["dimension"]),  # type: ignore[call-overload]
                         str(self._opts["metric"]), 0, 0, 0, -1, (), SegRef(-1, 0, 0), 0,
                         ZERO_HASH, Lineage(b"\0" * 16), 0)
        self.epoch = m.epoch
        self.dimension = m.dimension or self._table.dimension or None
        self.metric = m.metric
        self._lineage = m.lineage
        self._witness_count = m.witness_count
        self._witness_head = m.witness_head
        self._attach_index(keep_index)
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS, capabilities=CAPABILITIES, file_format="rvf",
            wire_version=self._version, metric=self.metric,
            failpoints=ONE_SYNC_FAILPOINTS if self._one_sync else FAILPOINTS,
            damage=DamagePromise.ROLLBACK,
            # ADR-072 holds RVF's latency to SQLite's; queried with the same distance
            baseline="sqlite" if self.metric == "l2" else f"sqlite?metric={self.metric}",
            notes={"vectors": "float64", "queries": "exact (NumPy)",
                   "derive": "copies the live data into the child",
                   "damage": "content hashes on every segment and a check on every header: "
                             "damage in the committed region is CorruptStore; damage to the "
                             "last commit alone reads as a torn commit, and the previous one "
                             "opens (FORMAT.md, 'Damaged, newer, or torn')",
                   **self._index_notes()},
            recall=None if self._hnsw_params is None else Recall(10, 0.95),
        )

    def _attach_index(self, keep: bool) -> None:
        """With ``index=hnsw``: the graph for the state just adopted (hnsw.py): kept across a
        compaction, else loaded from ``<file>.hnsw`` if built from this commit, or rebuilt."""
        if self._hnsw_params is None:
            return
        if keep and self._hnsw is not None and self._hnsw.metric == self.metric:
            self._hnsw.rekey(self._table)
            return
        if self._hnsw is None or self._hnsw.metric != self.metric:
            self._hnsw = HnswPath(self._env.fs, self.path, self._hnsw_params, self.metric,
                                  self._env.observe)
        self._hnsw.attach(self._table, self._stamp(), writable=not self.readonly)

    def _stamp(self) -> Stamp:
        return Stamp(self.epoch, self._lineage.file_id, self._manifest_digest)

    def _index_notes(self) -> dict[str, str]:
        p = self._hnsw_params
        if p is None:
            return {}
        return {"queries": f"HNSW (hnswlib, m={p.m}, ef_construction={p.ef_construction}, "
                           f"ef_search={p.ef_search}); candidates re-scored exactly from the "
                           "float64 vectors; filters matching few records searched exactly",
                "index": "derived data: <file>.hnsw is loaded only when built from this very "
                         "commit of this file with these parameters and its checksum holds, "
                         "else rebuilt from the vectors; saved at close and after compaction "
                         "(FORMAT.md, 'The index file')"}

    def _save_index(self) -> None:
        """Save the HNSW graph (a writer's close, compaction). It is derived data: an I/O error
        writing it is reported through ``env.observe``, not raised; the next open rebuilds."""
        if self._hnsw is None or self.readonly:
            return
        try:
            self._hnsw.save(self._stamp())
        except OSError as exc:
            self._env.observe("rvf.index-save-failed", {"path": self._hnsw.path,
                                                        "error": str(exc)})

    @property
    def index_status(self) -> str:
        """``exact``, or the HNSW graph's: ``loaded`` or ``rebuilt: <reason>`` (hnsw.py)."""
        return "exact" if self._hnsw is None else self._hnsw.status

    def _check_given(self, given: Mapping[str, object]) -> None:
        if "metric" in given and str(given["metric"]).lower() != self.metric:
            raise BadOption("rvf", "metric", given["metric"], [self.metric])
        dim = int(self._opts["dimension"])  # type: ignore[call-overload]
        if dim and self.dimension and dim != self.dimension:
            raise BadOption("rvf", "dimension", dim, [str(self.dimension), "0"])
        if dim and self.dimension is None:  # a file with no vectors yet: check against it
            self.dimension = dim
            self._table.fix_dimension(dim)

    @property
    def file_id(self) -> bytes:
        return self._lineage.file_id

    @property
    def commit_digest(self) -> bytes:
        """What the current commit is, not just its number: the 32-byte SHAKE-256 of the whole
        committed manifest segment (header and payload). Two commits at the same epoch (a file
        restored from a backup and written again) have different digests."""
        return self._manifest_digest

    @property
    def parent_id(self) -> bytes:
        return self._lineage.parent_id

    @property
    def parent_hash(self) -> bytes:
        return self._lineage.parent_hash

    @property
    def lineage_depth(self) -> int:
        return self._lineage.depth

    def _now(self) -> int:
        return int(self._env.clock.time() * 1e9)

    def _check_open(self) -> File:
        if self._closed or self._file is None:
            raise StoreClosed(self.path)
        return self._file

    def _check_writable(self, what: str) -> File:
        f = self._check_open()
        if self.readonly:
            raise PermissionError(f"{what}: {self.path} was opened with readonly=true; open it "
                                  "with readonly=false (taking the writer lock) to change it")
        return f

    # -- the commit ---------------------------------------------------------------------------

    def commit(self, *, puts: Mapping[str, bytes] = {}, deletes: Iterable[str] = (),
               upserts: Sequence[VectorRecord] = (), removes: Iterable[int] = (),
               epoch: int | None = None) -> None:
        """One atomic commit: deletions (``deletes``, ``removes``) apply first, then ``puts`` and
        ``upserts``. The epoch goes to ``self.epoch + 1``; ``epoch``, if given, must be that.
        Keys in the relational namespace are refused (relational.py)."""
        puts, deletes = _check_puts(puts), [_check_key(k) for k in deletes]
        with self._write_lock:
            self._commit(puts, deletes, upserts, removes, epoch)

    def _commit(self, puts: Mapping[str, bytes], deletes: Iterable[str],
                upserts: Sequence[VectorRecord], removes: Iterable[int],
                epoch: int | None) -> None:
        """``commit`` with its keys checked (the relational records' keys come in here), under
        the write lock."""
        f = self._check_writable("commit")
        if epoch is not None and epoch != self.epoch + 1:
            raise ValueError(f"commit(epoch={epoch}): the committed epoch is {self.epoch}, so "
                             f"the next commit's epoch must be exactly {self.epoch + 1}")
        puts = dict(puts)
        del_keys = [k for k in dict.fromkeys(deletes) if k in self._kv]
        rm_ids = [i for i in dict.fromkeys(_check_id(i) for i in removes) if i in self._table]
        ups = {r.id: r for r in (_check_record(r) for r in upserts)}
        dim = self._dimension_for(ups.values())
        vec_ids = list(ups)
        matrix = np.array([ups[i].vector for i in vec_ids], dtype=np.float64).reshape(
            len(vec_ids), dim or 0)
        metas = [dict(ups[i].metadata) for i in vec_ids]

        ts = self._now()
        at, seg_id = self._end, self._next_seg_id
        raw: list[bytes] = []
        refs: list[SegRef] = []

        def add(seg_type: int, payload: bytes, flags: int = 0) -> SegRef:
            nonlocal at, seg_id
            data = encode_segment(version=self._version, seg_type=seg_type, seg_id=seg_id,
                                  payload=payload, timestamp_ns=ts, flags=flags)
            ref = SegRef(at, seg_id, seg_type)
            raw.append(data)
            at += len(data)
            seg_id += 1
            return ref

        if del_keys or rm_ids:
            refs.append(add(SegType.JOURNAL, encode_journal(del_keys, rm_ids), Flag.TOMBSTONE))
        if puts:
            refs.append(add(SegType.META, encode_meta(puts)))
        if vec_ids:
            refs.append(add(SegType.VEC, encode_vec(vec_ids, matrix, metas)))
        entry = WitnessEntry.after(self._witness_head, hash256(b"".join(raw)), ts,
                                   WitnessType.COMMIT)
        wref = add(SegType.WITNESS, entry.encode())

        # see checkpoint.nested_headers: such bytes could pass for a commit after a crash
        blob = b"".join(raw)
        nested = nested_headers(blob, self._end, (r.offset for r in (*refs, wref)))
        if nested:
            raise ValueError(
                f"commit to {self.path}: the data to append holds bytes that read as an intact "
                f"RVF segment header at aligned file offset {nested[0]} (inside a key, value, "
                "vector or metadata); this store refuses them, since after a crash they could "
                "pass for its own segments. Write the value in another encoding")
        gone_keys, gone_ids = set(del_keys), set(rm_ids)
        kept_keys = sum(1 for k in puts if k in self._kv and k not in gone_keys)
        kept_ids = sum(1 for i in vec_ids if i in self._table and i not in gone_ids)
        manifest = Manifest(
            kind="commit", epoch=self.epoch + 1, dimension=dim or 0, metric=self.metric,
            vectors=len(self._table) - len(rm_ids) + len(vec_ids) - kept_ids,
            keys=len(self._kv) - len(del_keys) + len(puts) - kept_keys,
            dead=self._dead + len(del_keys) + len(rm_ids) + kept_keys + kept_ids,
            prev=self._last_manifest, segments=tuple(refs), witness=wref,
            witness_count=self._witness_count + 1, witness_head=entry.digest(),
            lineage=self._lineage, committed_ns=ts, extra={"checkpoint": self._checkpoint},
        )
        m_at = at
        m_flags = Flag.HAS_LINEAGE | (Flag.SAME_SYNC if self._one_sync else 0)
        m_raw = encode_segment(version=self._version, seg_type=SegType.MANIFEST, seg_id=seg_id,
                               payload=manifest.encode(), timestamp_ns=ts, flags=m_flags)

        self._append(f, blob, m_raw)

        # Acknowledged: now the in-memory state follows.
        for k in del_keys:
            del self._kv[k]
        self._kv.update(puts)
        self._table.remove(rm_ids)
        if vec_ids:
            self._table.upsert(vec_ids, matrix, metas, owned=True)   # copied above
        if self._hnsw is not None and (rm_ids or vec_ids):
            self._hnsw.apply(rm_ids, vec_ids, matrix)
        self.dimension = dim
        self.epoch = manifest.epoch
        self._dead = manifest.dead
        self._end = self._size = m_at + len(m_raw)
        self._next_seg_id = seg_id + 1
        self._last_manifest = m_at
        self._witness_count = manifest.witness_count
        self._witness_head = manifest.witness_head
        self._history_of = None  # the file grew: recomputed when needed
        self._manifest_digest = hash256(m_raw)
        self._since_cost = self._since_cost.plus(len(raw) + 1, len(blob) + len(m_raw))
        if self._since_cost.due(self._snapshot_cost):
            self._write_checkpoint(f)

    def _append(self, f: File, data: bytes, m_raw: bytes) -> None:
        """Append ``data`` then the manifest ``m_raw`` under the commit protocol (FORMAT.md,
        "Commit"); commits and checkpoints both go through it, with the same failpoints."""
        self._discard_failed_attempt()   # what a failed commit left must not follow ours
        self._tail_dirty = True
        fp = self._env.failpoints
        if self._one_sync:
            # One write, one fsync (the commit point). A crash before it may keep the manifest
            # and lose data sectors: the SAME_SYNC flag tells open to treat that as torn.
            f.write(self._end, data + m_raw)
            fp.hit("rvf.after-manifest-write")
            f.sync()
        else:
            f.write(self._end, data)
            fp.hit("rvf.after-data-write")
            f.sync()
            fp.hit("rvf.after-data-sync")
            f.write(self._end + len(data), m_raw)
            fp.hit("rvf.after-manifest-write")
            f.sync()
        self._tail_dirty = False

    def _write_checkpoint(self, f: File) -> None:
        """Append a snapshot of the live state and a CHECKPOINT manifest (checkpoint.py), after
        the commit before it is durable. It changes no data, so a failure here is not the
        commit's: an OSError is reported through ``env.observe`` and the next commit truncates
        what it left."""
        ts = self._now()
        at, seg_id = self._end, self._next_seg_id
        raw: list[bytes] = []
        refs: list[SegRef] = []
        for seg_type, payload in (*snapshot_payloads(self._kv, self._table),
                                  (SegType.WITNESS, b"")):
            raw.append(encode_segment(version=self._version, seg_type=seg_type, seg_id=seg_id,
                                      payload=payload, timestamp_ns=ts))
            refs.append(SegRef(at, seg_id, seg_type))
            at += len(raw[-1])
            seg_id += 1
        blob = b"".join(raw)
        if nested_headers(blob, self._end, (r.offset for r in refs)):
            # live data whose bytes read as a header where a snapshot would put them: no
            # checkpoint (open stays correct, it replays from the previous one); try again later
            self._env.observe("rvf.checkpoint-skipped", {"path": self.path, "offset": self._end})
            self._snapshot_cost = Cost(self._since_cost.segments * 2, self._since_cost.nbytes * 2)
            return
        manifest = Manifest(
            kind="commit", epoch=self.epoch, dimension=self.dimension or 0, metric=self.metric,
            vectors=len(self._table), keys=len(self._kv), dead=self._dead,
            prev=self._last_manifest, segments=(), witness=refs[-1],
            witness_count=self._witness_count, witness_head=self._witness_head,
            lineage=self._lineage, committed_ns=ts,
            extra={"checkpoint": self._checkpoint,
                   "snapshot": [[r.offset, r.seg_id, r.seg_type] for r in refs[:-1]]},
        )
        flags = Flag.CHECKPOINT | Flag.HAS_LINEAGE | (Flag.SAME_SYNC if self._one_sync else 0)
        m_raw = encode_segment(version=self._version, seg_type=SegType.MANIFEST, seg_id=seg_id,
                               payload=manifest.encode(), timestamp_ns=ts, flags=flags)
        try:
            self._append(f, blob, m_raw)
        except OSError as exc:
            self._env.observe("rvf.checkpoint-failed", {"path": self.path, "offset": self._end,
                                                        "error": str(exc)})
            self._snapshot_cost = Cost(self._since_cost.segments * 2, self._since_cost.nbytes * 2)
            return
        self._last_manifest = self._checkpoint = at
        self._end = self._size = at + len(m_raw)
        self._next_seg_id = seg_id + 1
        self._manifest_digest = hash256(m_raw)
        self._snapshot_cost = Cost(len(raw) + 1, len(blob) + len(m_raw))
        self._since_cost = Cost()

    def _dimension_for(self, records: Iterable[VectorRecord]) -> int | None:
        dim = self.dimension
        for r in records:
            if dim is None:
                dim = len(r.vector)
                if dim == 0:
                    raise ValueError(f"vector id {r.id} is empty; vectors need a dimension >= 1")
            if len(r.vector) != dim:
                raise ValueError(f"vector id {r.id} has dimension {len(r.vector)}, the store "
                                 f"{self.path} holds dimension {dim}")
        return dim

    # -- key-value ----------------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        self.commit(puts={key: value})

    def get(self, key: str) -> bytes | None:
        self._check_open()
        return self._kv.get(_check_key(key))

    def delete(self, key: str) -> None:
        self._check_writable("delete")
        if _check_key(key) in self._kv:
            self.commit(deletes=[key])
        else:
            self._discard_failed_attempt()

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        """The user's records only: never the relational namespace's."""
        self._check_open()
        return sorted((k, v) for k, v in list(self._kv.items())
                      if k.startswith(prefix) and not is_reserved(k))

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        self._check_writable("write_batch")
        deletes = [_check_key(k) for k in deletes]
        if puts or any(k in self._kv for k in deletes):
            self.commit(puts=puts, deletes=deletes)
        else:
            self._discard_failed_attempt()

    # -- vectors ------------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self._check_writable("upsert")
        if records:
            self.commit(upserts=records)
        else:
            self._discard_failed_attempt()

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        self._check_open()
        if self._hnsw is not None:
            return self._hnsw.search(vector, k, where)
        return self._table.search(vector, k, self.metric, where)

    def remove(self, ids: Iterable[int]) -> int:
        self._check_writable("remove")
        live = [i for i in dict.fromkeys(_check_id(i) for i in ids) if i in self._table]
        if live:
            self.commit(removes=live)
        else:
            self._discard_failed_attempt()
        return len(live)

    def _discard_failed_attempt(self) -> None:
        """FORMAT.md, "Commit", step 1: truncate what a commit attempt that failed in this
        session (or anything past the committed end) left, and fsync. Before every commit, and
        before acknowledging a call that changes nothing: the failed attempt may have left a
        whole manifest in the page cache, which would surface at the next open, after the call
        said the ids or keys were gone.

        Under the write lock: a call that changes nothing comes here from outside ``commit``,
        and without the lock it would truncate another thread's commit half-way through its
        ``_append`` (``_tail_dirty`` is set while it writes), leaving zeros where that commit's
        data was and its manifest after them: real damage, which every later open reports."""
        with self._write_lock:
            if self._tail_dirty or self._size != self._end:
                f = self._check_open()
                f.truncate(self._end)
                f.sync()
                self._size = self._end
                self._tail_dirty = False

    def count(self) -> int:
        self._check_open()
        return len(self._table)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        self._check_open()
        return self._table.fetch(ids)

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        """``fetch`` as arrays (``BulkFetch``): float64 rows straight from the table."""
        self._check_open()
        return self._table.fetch_block(ids)

    def ids(self) -> list[int]:
        """Every live vector id, sorted."""
        self._check_open()
        return self._table.ids()

    def live_metadata(self) -> dict[int, dict[str, Any]]:
        """id -> metadata (a copy) of every live vector, ids ascending: what a metadata cache
        is built from, without reading the vectors."""
        self._check_open()
        return self._table.live_metadata()

    # -- compaction, derive, audit --------------------------------------------------------------

    def _fresh(self, kind: str, wtype: WitnessType, lineage: Lineage) -> FreshFile:
        f = self._check_open()
        problems = verify_file(f, self._end, self._version)
        if problems:
            raise CorruptStore(self.path, f"{kind} refused, the file does not verify: "
                                          f"{problems[0]}")
        history = self._history()
        carried = [f.read(s.offset, s.header.total_length) for s in history.unknown]
        return FreshFile(
            kind=kind, witness_type=wtype, version=self._version, epoch=self.epoch,
            dimension=self.dimension or 0, metric=self.metric, lineage=lineage, kv=self._kv,
            table=self._table, carried=carried, history=witness_history(f, history.witness_segs),
            first_seg_id=self._next_seg_id)

    def compact(self) -> None:
        """Rewrite the file with only live data (plus carried segments and the witness chain);
        the epoch is unchanged. The old file stays valid until the rename."""
        self._check_writable("compact")
        # Under the write lock, like backup and restore: a commit from another thread between
        # reading the live state and adopting the new file would be appended to the old file
        # (lost at the rename) or at the old file's end in the new one (a hole of zeros).
        with self._write_lock:
            spec = self._fresh("compact", WitnessType.COMPACT, self._lineage)
            self._publish(self.path, spec, "rvf.compact.after-new-file",
                          "rvf.compact.after-rename")
            old = self._check_open()
            self._file = self._env.fs.open(self.path, "r+")
            old.close()
            self._adopt(load(self._file, self.path, self._version), keep_index=True)
            self._save_index()   # the new file's commit digest: the saved graph would be stale

    def derive(self, child_path: str) -> RvfStore:
        """A child file holding a copy of this store's live data, with lineage (new file id,
        parent id and hash, depth + 1), returned open for writing."""
        self._check_open()
        if self._env.fs.exists(child_path):
            raise FileExistsError(f"derive: {child_path} already exists; give a new path")
        opts = dict(self._opts, readonly="false")
        lock = None
        if opts["lock"] == "true":
            lock = WriterLock(self._env.fs, self._env.clock, child_path, process=self._env.process,
                              stale_after=float(opts["stale_after"]))  # type: ignore[arg-type]
            lock.acquire()
        try:
            # under the write lock: the spec holds the live dict and table themselves, so no
            # other thread's commit may change them until the child is written
            with self._write_lock:
                lineage = Lineage(os.urandom(16), self.file_id, self._manifest_digest,
                                  self.lineage_depth + 1, self.path)
                self._publish(child_path, self._fresh("derive", WitnessType.DERIVE, lineage))
            return RvfStore(child_path, self._env, opts, {}, lock=lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def _history(self) -> Loaded:
        """The replay from offset 0 of the committed region (witness and carried segments,
        segment count, versions): read only by compaction, derive and status."""
        if self._history_of is None:
            self._history_of = load_full(self._check_open(), self.path, self._version)
        return self._history_of

    @property
    def open_stats(self) -> ReadStats:
        """What the last open (or compaction) read: headers decoded and payloads read, the
        figure that stays flat as history grows (``ReadStats.segments_read``)."""
        return self._open_stats

    def verify(self) -> list[str]:
        """Recompute the witness chain and every content hash of the committed region; the
        problems found, the first bad witness entry first (empty when all verifies)."""
        return verify_file(self._check_open(), self._end, self._version)

    def tail(self) -> str | None:
        """What lies past the last good commit (``audit.describe_tail``), ``None`` if nothing.
        A reader sees it as it is; a writer has already truncated it on open."""
        return describe_tail(self._check_open(), self._end, self._version)

    def segments(self) -> list[SegmentInfo]:
        return list_segments(self._check_open(), self._end, self._version)

    def status(self) -> dict[str, object]:
        f = self._check_open()
        lin = self._lineage
        history = self._history()
        return {
            "path": self.path, "epoch": self.epoch, "dimension": self.dimension,
            "metric": self.metric, "count": len(self._table),
            "keys": len(self._kv) - self.relational_count(),
            "relational_records": self.relational_count(),
            "deleted": self._dead, "file_size": f.size(), "committed_bytes": self._end,
            "segments": history.committed_segments, "witness_entries": self._witness_count,
            "wire_version": self._version, "file_wire_version": history.max_version,
            "readonly": self.readonly,
            "index": self._hnsw.describe() if self._hnsw is not None else self._index_file(),
            "lineage": {"file_id": lin.file_id.hex(), "parent_id": lin.parent_id.hex(),
                        "parent_hash": lin.parent_hash.hex(), "depth": lin.depth,
                        "parent_path": lin.parent_path},
        }

    def _index_file(self) -> dict[str, object]:
        """An exact store's view of an HNSW index file beside it (left by an ``index=hnsw``
        open): whether such an open would use it, or why it would rebuild it."""
        path = index_path(self.path)
        if not self._env.fs.exists(path):
            return {"kind": "exact"}
        return {"kind": "exact", "file": path, "file_status": inspect_index(
            self._env.fs, path, self._stamp(), self.metric, self.dimension or 0,
            self._table.ids())}

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._write_lock:   # no commit may change the graph while it is written
                self._save_index()
            self._release()

    def __enter__(self) -> RvfStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RvfStore({self.path!r}, epoch={self.epoch}, count={len(self._table)})"



def _check_puts(puts: Mapping[str, bytes]) -> dict[str, bytes]:
    out = {}
    for key, value in puts.items():
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"value for key {key!r} is a {type(value).__name__}; values are bytes")
        out[_check_key(key)] = bytes(value)
    return out


def _check_id(vid: object) -> int:
    i = int(vid)  # type: ignore[call-overload]
    if not 0 <= i < U64:
        raise ValueError(f"vector id {vid!r} is not a u64 (0 <= id < 2**64)")
    return i


def _check_record(r: VectorRecord) -> VectorRecord:
    _check_id(r.id)
    try:
        json.dumps(dict(r.metadata))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata of vector id {r.id} is not JSON-serialisable: {exc}") from None
    return r


def open_rvf(path: str, env: Env, **options: str) -> RvfStore:
    """Open (creating it if missing, unless ``readonly=true``) the RVF file at ``path``.

    Options: ``dimension`` (0 = from the file), ``metric`` l2|cosine, ``wire_version`` (default
    1), ``readonly`` true|false, ``lock`` true|false, ``stale_after`` seconds (default 30),
    ``sync`` two|one (fsyncs per commit, default two; a reader need not be told), ``index``
    exact|hnsw (default exact) with ``m`` (16), ``ef_construction`` (200), ``ef_search`` (64)
    for ``index=hnsw`` (hnsw.py).
    Raises ``LockHeld``, ``VersionTooNew``, ``CorruptStore``, ``BadOption``.
    """
    opts = check_options("rvf", options, OPTIONS)
    return RvfStore(path, env, opts, options)
