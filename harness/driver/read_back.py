"""Reading back through crashgate: a driver whose package has no op that returns a stored
vector may name a ``reader`` in its declaration, a backend that reads the store's file layout
(e.g. ``rvf-ruvector``). Then ``fetch`` and ``fetch_block`` are answered by that backend opened
on the child's real path, read-only (``ReadBack``); every other op stays the child's. The
driver is never asked to ``fetch``: one source of read-back per store, fixed at open and named
in the declaration's notes, rather than a mix that depends on what it answers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from crashgate.backends import StoreClosed, VectorBlock, VectorRecord, os_env
from crashgate.backends.proc_protocol import DriverError
from crashgate.harness.driver.proc_store import ProcStore

__all__ = ["ReadBack"]


class ReadBack(ProcStore):
    """``fetch`` and ``fetch_block`` answered by the declared reader backend opened read-only
    on the child's real path (with the real OS: the child's files never pass through the
    simulated disk). The reader is kept open while the file is as it read it: it is opened
    again after any request to the child other than a read, and whenever the file's identity
    (inode, size, modification time) changed, as another writer's commit changes it, so every
    read sees the file as the child left it."""

    _READS = frozenset({"get", "scan", "query", "count", "verify", "fs_ops"})
    _cached: tuple[tuple[int, ...], Any] | None = None   # (the file's identity, its reader)

    def _call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        if op not in self._READS:
            self._drop_reader()   # a write (or a close) may change the file
        return super()._call(op, args)

    def _drop_reader(self) -> None:
        cached, self._cached = self._cached, None
        if cached is not None:
            with contextlib.suppress(Exception):   # a read-only handle: nothing to lose
                cached[1].close()

    def _open_reader(self) -> Any:
        assert self._reader is not None   # class_for adds this mixin only with a reader
        try:
            st = os.stat(self._real)
            key: tuple[int, ...] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = None   # no file yet: the reader says what that means, every time
        cached = self._cached
        if cached is not None and key is not None and cached[0] == key:
            return cached[1]
        self._drop_reader()
        reader = self._reader.open(self._real, os_env(), readonly="true")
        if reader.declaration.file_format != self.declaration.file_format:
            reader.close()
            raise DriverError(
                f"{self.label}: its reader {self._reader.label} reads "
                f"{reader.declaration.file_format!r} files, the store declares "
                f"{self.declaration.file_format!r}",
                fix="name a reader of the store's own file format in the declaration")
        if key is not None:
            self._cached = (key, reader)
        return reader

    def close(self) -> None:
        self._drop_reader()
        super().close()

    def _read(self, ids: Iterable[int], op: str) -> Any:
        if self._closed:
            raise StoreClosed(self.path)
        wanted = [int(i) for i in ids]
        reader = self._open_reader()
        try:
            if op == "fetch_block" and hasattr(reader, "fetch_block"):
                return reader.fetch_block(wanted)
            records = reader.fetch(wanted)
        finally:
            if self._cached is None:
                reader.close()   # not kept (no file to key it by)
        if op == "fetch":
            return list(records)
        # a reader without fetch_block: the same records as arrays (BulkFetch)
        if not records:
            return VectorBlock((), np.zeros((0, 0)), ())
        return VectorBlock(tuple(r.id for r in records),
                           np.array([r.vector for r in records], dtype=np.float64),
                           tuple(r.metadata for r in records))

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        records: list[VectorRecord] = self._read(ids, "fetch")
        return records

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        block: VectorBlock = self._read(ids, "fetch_block")
        return block


