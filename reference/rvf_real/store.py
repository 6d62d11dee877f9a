"""The reference store writing the layout the real ``@ruvector/rvf`` runtime writes
(``rvf-ruvector/1``, FORMAT-ruvector.md): vectors (float32, as the layout stores them), exact
l2 search, metadata in META segments, every byte through ``env.fs``.

``open_rvf_ruvector(path, env, **options)`` opens ``path`` (options and declaration:
``declaration.py``); a missing file is created (``commit.create_file``) at the first upsert, or
at open when ``dimension`` is given. One upsert or remove is one commit (``commit.py``: data,
fsync, witness and manifest, fsync). Opening reads the file as the runtime boots, checking more
(``boot.py``: damage in the committed region is ``CorruptStore``, damage that hides the last
manifest shows the commit before it). Unlike the runtime, a writer truncates bytes past the last
commit (a torn or failed commit) before appending: the runtime reads either file the same.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import (
    Env,
    File,
    Hit,
    StoreClosed,
    VectorBlock,
    VectorRecord,
    check_options,
    read_all,
)
from crashgate.reference.rvf.lock import WriterLock
from crashgate.reference.rvf.table import VectorTable
from crashgate.reference.rvf_real.boot import boot
from crashgate.reference.rvf_real.commit import (
    WITNESS_DELETE,
    WITNESS_INGEST,
    append,
    create_file,
    dir_of,
    encode_commit,
)
from crashgate.reference.rvf_real.declaration import (
    NAME,
    OPTIONS,
    checked_dimension,
    checked_wire_version,
    declaration,
)
from crashgate.reference.rvf_real.layout import JOURNAL, VEC
from crashgate.reference.rvf_real.manifest import DirEntry, FileIdentity
from crashgate.reference.rvf_real.reader import RealFile, parse
from crashgate.reference.rvf_real.versions import check_version
from crashgate.reference.rvf_real.writer import encode_journal, encode_meta, encode_vec

__all__ = ["RuvectorStore", "open_rvf_ruvector"]

U64 = 2**64


class RuvectorStore:
    """An open ``rvf-ruvector/1`` file. Implements VectorStore (with ``batch``: one upsert or
    remove is one commit) and BulkFetch; every call is under one lock (one commit at a time)."""

    def __init__(self, path: str, env: Env, options: Mapping[str, object]) -> None:
        self.path = path
        self._env = env
        self.readonly = options["readonly"] == "true"
        self._version = checked_wire_version(options)
        want = checked_dimension(options)
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
        self.declaration = declaration(self._version)
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
            fs.sync_dir(dir_of(self.path))

    def _adopt(self, rf: RealFile) -> None:
        """Take the state ``rf`` boots to (``boot.boot``: ``CorruptStore`` on damage)."""
        booted = boot(self.path, rf, self._version, self.dimension)
        self.epoch, self._deleted = booted.epoch, set(booted.deleted)
        self._directory, self._loaded = list(booted.directory), set(booted.loaded)
        if booted.identity is not None:
            self._identity = booted.identity
        self._next_id, self._end = booted.next_id, booted.end
        if booted.table is not None:
            self.dimension = booted.table.dimension
            self._table = booted.table

    @property
    def _tmp(self) -> str:
        return self.path + ".create-tmp"

    def _create(self) -> None:
        """The file with the runtime's first manifest (``commit.create_file``), opened."""
        assert self.dimension is not None
        entry, end = create_file(self._env.fs, self.path, self._tmp, dimension=self.dimension,
                                 identity=self._identity, version=self._version)
        self._file = self._env.fs.open(self.path, "r+")
        self._directory = [entry]
        self._next_id, self._end = 2, end

    # -- the commit ---------------------------------------------------------------------------

    def _commit(self, data_type: int, data: bytes, extra: bytes | None, witness: tuple[int, str],
                deleted: set[int], loaded: set[int]) -> None:
        """Append the data segment (and ``extra``, a META), fsync, append the witness and the
        manifest naming them, fsync (the commit point, ``commit.append``). State changes only
        after it."""
        f = self._check_writable()
        self._discard_failed_attempt()
        c = encode_commit(directory=self._directory, next_id=self._next_id, end=self._end,
                          epoch=self.epoch + 1, dimension=self.dimension or 0,
                          identity=self._identity, chain=self._chain, version=self._version,
                          timestamp_ns=int(self._env.clock.time() * 1e9), data_type=data_type,
                          data=data, extra=extra, witness=witness, deleted=deleted,
                          total_vectors=len(loaded))
        self._dirty = True
        append(f, self._env.failpoints, self._end, c)
        self._dirty = False
        # acknowledged: the in-memory state follows
        self._directory = list(c.directory)
        self._deleted, self._loaded = deleted, loaded
        self._chain = c.chain
        self._next_id, self._end, self.epoch = c.next_id, c.end, self.epoch + 1

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

