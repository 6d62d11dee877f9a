"""The reference store writing the layout the real ``@ruvector/rvf`` runtime writes
(``rvf-ruvector/1``, FORMAT-ruvector.md): vectors (float32, as the layout stores them), exact
l2 search, metadata in META segments, every byte through ``env.fs``.

``open_rvf_ruvector(path, env, **options)`` opens ``path``; a missing file is created (through
a temporary file renamed into place) at the first upsert, or at open when ``dimension`` is given.
A commit appends its data segment (VEC and, with metadata, META; or a JOURNAL for a removal),
fsyncs, appends a WITNESS and the MANIFEST and fsyncs again, as the runtime does: the second
fsync is the commit point. Opening reads the file as the runtime boots (``reader.parse``: the
latest manifest that parses in the last 64 KiB, then the segments its directory names), and
checks more than the runtime: every directory entry's header and content hash and the manifest's
own hash, so damage in the committed region is ``CorruptStore``; damage that hides the last
manifest shows the commit before it (a rollback, ``DamagePromise.ROLLBACK``). Unlike the runtime,
a writer truncates bytes past the last commit (a torn or failed commit) before appending: the
runtime reads either file the same.
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
    StoreClosed,
    VectorBlock,
    VectorRecord,
    check_options,
    read_all,
)
from crashgate.reference.rvf.lock import WriterLock
from crashgate.reference.rvf.table import VectorTable
from crashgate.reference.rvf_real.layout import (
    FILE_FORMAT,
    JOURNAL,
    MANIFEST,
    VEC,
    WITNESS,
    witness_hash,
)
from crashgate.reference.rvf_real.reader import (
    DirEntry,
    FileIdentity,
    RealFile,
    Segment,
    parse,
    parse_vec,
)
from crashgate.reference.rvf_real.versions import MAX_VERSION, check_version
from crashgate.reference.rvf_real.writer import (
    META,
    encode_journal,
    encode_manifest,
    encode_meta,
    encode_segment,
    encode_vec,
    encode_witness,
    parse_meta,
)

__all__ = ["FAILPOINTS", "OPTIONS", "RuvectorStore", "open_rvf_ruvector"]

NAME = "rvf-ruvector"
OPTIONS = {
    "dimension": Option("0", convert=int, help="vector dimension; 0 = from the file or the "
                        "first upsert (the runtime needs it to create a file)"),
    "readonly": Option("false", ("true", "false"), help="open without the writer lock"),
    "lock": Option("true", ("true", "false"), help="take the <file>.lock writer lock"),
    "stale_after": Option("30", convert=float, help="seconds after which a dead writer's lock "
                          "is recovered"),
    "wire_version": Option("1", convert=int, help="newest segment version this reader/writer "
                           "supports (the runtime's is 1); segments it writes carry it, newer "
                           "files are refused (versions.py)"),
}
FAILPOINTS = ("rvf-ruvector.after-data-write", "rvf-ruvector.after-data-sync",
              "rvf-ruvector.after-manifest-write")
CAPABILITIES = frozenset({Capability.VECTOR, Capability.BATCH, Capability.WRITER_LOCK,
                          Capability.METADATA_FILTER, Capability.FAILPOINTS,
                          Capability.WIRE_VERSION})
WITNESS_INGEST, WITNESS_DELETE = 1, 0   # the types the runtime's files hold
U64 = 2**64


def _dir_of(path: str) -> str:
    return os.path.dirname(path) or "."


class RuvectorStore:
    """An open ``rvf-ruvector/1`` file. Implements VectorStore (with ``batch``: one upsert or
    remove is one commit) and BulkFetch; every call is under one lock (one commit at a time)."""

    def __init__(self, path: str, env: Env, options: Mapping[str, object]) -> None:
        self.path = path
        self._env = env
        self.readonly = options["readonly"] == "true"
        self._version = int(options["wire_version"])  # type: ignore[call-overload]
        if not 0 <= self._version <= MAX_VERSION:
            raise BadOption(NAME, "wire_version", self._version, ["an integer from 0 to 255 "
                                                                  "(the header's version byte)"])
        want = int(options["dimension"])  # type: ignore[call-overload]
        if not 0 <= want <= 0xFFFF:
            raise BadOption(NAME, "dimension", want, ["0 (from the file)",
                                                      "1-65535 (a VEC payload's u16)"])
        self._lock: WriterLock | None = None
        self._file: File | None = None
        self._closed = False
        self._mutex = threading.RLock()
        self.epoch = 0
        self.dimension: int | None = want or None
        self._table = VectorTable(self.dimension)
        self._directory: list[DirEntry] = []
        self._deleted: set[int] = set()
        self._loaded: set[int] = set()      # ids of every directory VEC, deleted ones included
        self._identity = FileIdentity(os.urandom(16), b"\0" * 16, b"\0" * 32, 0)
        self._next_id = 1
        self._end = 0
        self._dirty = False                 # bytes past _end a failed commit may have left
        self._chain = b"\0" * 32            # the witness chain restarts every session
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS, capabilities=CAPABILITIES, file_format=FILE_FORMAT,
            wire_version=self._version, metric="l2", failpoints=FAILPOINTS,
            damage=DamagePromise.ROLLBACK,
            notes={"vectors": "float32 (the layout's VEC payload)", "queries": "exact (NumPy)",
                   "metadata": "META segments (type 0x07) named in the manifest directory; the "
                               "real runtime ignores them (FORMAT-ruvector.md, 'Metadata')",
                   "damage": "the header and content hash of every data segment (VEC, META, "
                             "JOURNAL) the directory names and the boot manifest's hash are "
                             "checked: damage in the committed region is "
                             "CorruptStore; a damaged last manifest shows the commit before",
                   "versions": f"writes segment version {self._version}, reads 0-"
                               f"{self._version}; a newer file is refused with VersionTooNew "
                               "before the lock is taken (versions.py)"})
        if not self.readonly and env.fs.exists(path):
            # refuse a newer file before taking its lock: the refusal leaves no lock file
            check_version(parse(path, read_all(env.fs, path), checked=True), self._version)
        if not self.readonly and options["lock"] == "true":
            self._lock = WriterLock(env.fs, env.clock, path, process=env.process,
                                    stale_after=float(options["stale_after"]))  # type: ignore[arg-type]
            self._lock.acquire()
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # -- opening ------------------------------------------------------------------------------

    def _open(self) -> None:
        fs = self._env.fs
        if not self.readonly and fs.exists(self._tmp):
            fs.remove(self._tmp)   # a create that crashed before its rename
        if not fs.exists(self.path):
            if self.dimension is not None and not self.readonly:
                self._create()
            return
        rf = parse(self.path, read_all(fs, self.path), checked=True)
        check_version(rf, self._version)   # again: the file may have changed before the lock
        self._file = fs.open(self.path, "r" if self.readonly else "r+")
        self._adopt(rf)
        if not self.readonly:
            if self._file.size() > self._end:
                # a torn or failed commit: never visible, and cut so no later scan finds it
                self._env.observe("rvf-ruvector.tail-truncated", {
                    "path": self.path, "offset": self._end,
                    "bytes": self._file.size() - self._end})
                self._file.truncate(self._end)
            # what this open shows must survive power loss (a crashed writer's last manifest
            # may be written but not fsynced); syncing changes no byte
            self._file.sync()
            fs.sync_dir(_dir_of(self.path))

    def _adopt(self, rf: RealFile) -> None:
        """Take the state ``rf`` boots to, or raise ``CorruptStore`` naming the first problem."""
        m = rf.manifest
        if m is None:
            raise CorruptStore(self.path, "no manifest the runtime can boot from in the last "
                                          "64 KiB (damaged, or not an rvf-ruvector/1 file)")
        own = rf.segment_at(m.offset)
        assert own is not None   # a complete manifest whose hash holds (checked=True)
        self._check_segment_version(own)
        if self.dimension is not None and m.dimension not in (0, self.dimension):
            raise BadOption(NAME, "dimension", self.dimension, [str(m.dimension), "0"])
        vectors: dict[int, tuple[float, ...]] = {}
        meta: dict[int, dict[str, Any]] = {}
        for e in m.directory:
            if e.seg_type in (WITNESS, MANIFEST):
                # never read; and a witness is written with its manifest, no fsync between, so
                # a crash may keep the manifest and tear the witness: not damage to the data
                continue
            seg = rf.segment_at(e.offset)
            if seg is None or (seg.header.seg_id, seg.header.seg_type,
                               seg.header.payload_length) != (e.seg_id, e.seg_type,
                                                              e.payload_length):
                raise CorruptStore(self.path, f"the manifest at offset {m.offset} names segment "
                                              f"id {e.seg_id} (type {e.seg_type}, "
                                              f"{e.payload_length} bytes) at offset {e.offset}, "
                                              "and no such header is there")
            if not seg.complete or seg.hash_ok is False:
                raise CorruptStore(self.path, f"segment {seg.label()} at offset {seg.offset} "
                                              "fails its content hash")
            self._check_segment_version(seg)
            payload = rf.data[seg.payload_start:seg.end]
            if e.seg_type == VEC:
                parsed = parse_vec(payload)
                if parsed is None or parsed[0] != m.dimension:
                    raise CorruptStore(self.path, f"vec segment at offset {e.offset} does not "
                                                  f"parse as dimension {m.dimension}")
                for vid, values in parsed[1]:
                    vectors[vid] = values
                    meta[vid] = {}    # a record written again without metadata has {}
            elif e.seg_type == META:
                got = parse_meta(payload)
                if got is None:
                    raise CorruptStore(self.path, f"meta segment at offset {e.offset} does not "
                                                  "parse")
                meta.update(got)
        self.epoch, self._deleted = m.epoch, set(m.deleted_ids)
        self._directory, self._loaded = list(m.directory), set(vectors)
        if m.identity is not None:
            self._identity = m.identity
        self._next_id = max((e.seg_id for e in m.directory), default=0) + 1
        self._end = own.end
        if m.dimension:
            self.dimension = m.dimension
            self._table = VectorTable(m.dimension)
            live = [v for v in vectors if v not in self._deleted]
            if live:
                self._table.upsert(live, np.array([vectors[v] for v in live], dtype=np.float64),
                                   [meta[v] for v in live], owned=True)

    def _check_segment_version(self, seg: Segment) -> None:
        """A segment this open reads whose version is above the reader's, when the file as a
        whole is not newer (``check_version`` passed): its version byte is damaged."""
        if seg.header.version > self._version:
            raise CorruptStore(self.path, f"segment {seg.label()} at offset {seg.offset} has "
                                          f"version byte {seg.header.version}, above this "
                                          f"reader's {self._version}, and no other header "
                                          "declares a newer version: a damaged header")

    @property
    def _tmp(self) -> str:
        return self.path + ".create-tmp"

    def _create(self) -> None:
        """The file with the runtime's first manifest (epoch 0, empty directory) at offset 0,
        written beside it, fsynced and renamed into place: a crash leaves no half file."""
        assert self.dimension is not None
        fs = self._env.fs
        payload = encode_manifest(epoch=0, dimension=self.dimension, total_vectors=0,
                                  directory=(), deleted=(), identity=self._identity)
        raw = encode_segment(MANIFEST, 1, payload, self._version)
        f = fs.open(self._tmp, "w")
        try:
            f.write(0, raw)
            f.sync()
        finally:
            f.close()
        fs.rename(self._tmp, self.path)
        fs.sync_dir(_dir_of(self.path))
        self._file = fs.open(self.path, "r+")
        self._directory = [DirEntry(1, 0, len(payload), MANIFEST)]
        self._next_id, self._end = 2, len(raw)

    # -- the commit ---------------------------------------------------------------------------

    def _commit(self, data_type: int, data: bytes, extra: bytes | None, witness: tuple[int, str],
                deleted: set[int], loaded: set[int]) -> None:
        """Append the data segment (and ``extra``, a META), fsync, append the witness and the
        manifest naming them, fsync (the commit point). State changes only after it."""
        f = self._check_writable()
        self._discard_failed_attempt()
        sid, at, entries, blob = self._next_id, self._end, [], []
        for seg_type, payload in ((data_type, data), (META, extra)):
            if payload is None:
                continue
            entries.append(DirEntry(sid, at, len(payload), seg_type))
            blob.append(encode_segment(seg_type, sid, payload, self._version))
            sid, at = sid + 1, at + len(blob[-1])
        w_payload = encode_witness(witness[0], int(self._env.clock.time() * 1e9), witness[1],
                                   self._chain)
        entries.append(DirEntry(sid, at, len(w_payload), WITNESS))
        tail = [encode_segment(WITNESS, sid, w_payload, self._version)]
        sid, at = sid + 1, at + len(tail[0])
        directory = [*self._directory, *entries]
        m_payload = encode_manifest(epoch=self.epoch + 1, dimension=self.dimension or 0,
                                    total_vectors=len(loaded), directory=directory,
                                    deleted=deleted, identity=self._identity)
        tail.append(encode_segment(MANIFEST, sid, m_payload, self._version))
        fp = self._env.failpoints
        self._dirty = True
        f.write(self._end, b"".join(blob))
        fp.hit(FAILPOINTS[0])
        f.sync()
        fp.hit(FAILPOINTS[1])
        f.write(at - len(tail[0]), b"".join(tail))
        fp.hit(FAILPOINTS[2])
        f.sync()
        self._dirty = False
        # acknowledged: the in-memory state follows
        self._directory = [*directory, DirEntry(sid, at, len(m_payload), MANIFEST)]
        self._deleted, self._loaded = deleted, loaded
        self._chain = witness_hash(w_payload)
        self._next_id, self._end, self.epoch = sid + 1, at + len(tail[1]), self.epoch + 1

    def _discard_failed_attempt(self) -> None:
        """Cut what a commit that failed in this session left past the committed end, and fsync:
        a whole manifest in the page cache would otherwise surface at the next open."""
        if self._dirty:
            f = self._check_open()
            f.truncate(self._end)
            f.sync()
            self._dirty = False

    # -- VectorStore --------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        with self._mutex:
            self._check_writable()
            if not records:
                self._discard_failed_attempt()
                return
            ups = {_check_id(r.id): r for r in records}
            dim = self.dimension or len(next(iter(ups.values())).vector)
            for r in ups.values():
                if len(r.vector) != dim or dim == 0:
                    raise ValueError(f"vector id {r.id} has dimension {len(r.vector)}, the store "
                                     f"{self.path} holds dimension {dim}")
            ids = list(ups)
            # float32, as the file holds them: the same values before and after a reopen
            matrix = np.array([ups[i].vector for i in ids], dtype=np.float32).astype(np.float64)
            metas = [_check_meta(i, ups[i].metadata) for i in ids]
            if self._file is None:
                self.dimension = dim
                self._table.fix_dimension(dim)
                self._create()
            extra = {i: m for i, m in zip(ids, metas, strict=True) if m}
            self._commit(VEC, encode_vec(dim, ids, matrix), encode_meta(extra) if extra else None,
                         (WITNESS_INGEST, f"ingest:count={len(ids)},epoch={self.epoch + 1}"),
                         self._deleted - set(ids), self._loaded | set(ids))
            self._table.upsert(ids, matrix, metas, owned=True)

    def remove(self, ids: Iterable[int]) -> int:
        with self._mutex:
            self._check_writable()
            live = [i for i in dict.fromkeys(_check_id(i) for i in ids) if i in self._table]
            if not live:
                self._discard_failed_attempt()
                return 0
            self._commit(JOURNAL, encode_journal(self.epoch + 1, live), None,
                         (WITNESS_DELETE, f"delete:count={len(live)},epoch={self.epoch + 1}"),
                         self._deleted | set(live), self._loaded)
            self._table.remove(live)
            return len(live)

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        with self._mutex:
            self._check_open(need_file=False)
            return self._table.search(vector, k, "l2", where)

    def count(self) -> int:
        self._check_open(need_file=False)
        return len(self._table)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        self._check_open(need_file=False)
        return self._table.fetch(ids)

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        self._check_open(need_file=False)
        return self._table.fetch_block(ids)

    def ids(self) -> list[int]:
        self._check_open(need_file=False)
        return self._table.ids()

    # -- plumbing -----------------------------------------------------------------------------

    def _check_open(self, *, need_file: bool = True) -> File:
        if self._closed or (need_file and self._file is None):
            raise StoreClosed(self.path)
        return self._file  # type: ignore[return-value]

    def _check_writable(self) -> File:
        if self._closed:
            raise StoreClosed(self.path)
        if self.readonly:
            raise PermissionError(f"{self.path} was opened with readonly=true; open it with "
                                  "readonly=false (taking the writer lock) to change it")
        return self._file  # type: ignore[return-value]

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._release()

    def __enter__(self) -> RuvectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RuvectorStore({self.path!r}, epoch={self.epoch}, count={len(self._table)})"


def _check_id(vid: object) -> int:
    i = int(vid)  # type: ignore[call-overload]
    if not 0 <= i < U64:
        raise ValueError(f"vector id {vid!r} is not a u64 (0 <= id < 2**64)")
    return i


def _check_meta(vid: int, metadata: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(json.loads(json.dumps(dict(metadata))))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata of vector id {vid} is not JSON-serialisable: {exc}") from None


def open_rvf_ruvector(path: str, env: Env, **options: str) -> RuvectorStore:
    """Open (creating at the first upsert, or now with ``dimension``) the ``rvf-ruvector/1`` file
    at ``path``. Options: ``dimension`` (0 = from the file), ``readonly`` true|false, ``lock``
    true|false, ``stale_after`` seconds (default 30), ``wire_version`` (default 1: the segment
    version it writes and the newest it reads).
    Raises ``LockHeld``, ``VersionTooNew``, ``CorruptStore``, ``BadOption``."""
    return RuvectorStore(path, env, check_options(NAME, options, OPTIONS))

