"""A file system that wraps another and consults a trigger before every mutating operation:
the one lever the I/O-error and in-process crash faults pull.

Mutating operations, numbered from 1 in program order: ``write``, ``truncate`` and ``sync`` of
a file, and ``rename``, ``remove`` and ``sync_dir`` of the file system. Opening (even one that
creates a file), ``makedirs`` and reads pass through uncounted. When the trigger returns an
exception, it is raised *instead of* the operation: the wrapped file system never sees it, so
what the page cache holds is exactly what the store managed to do before the fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from crashgate.backends import File, FileSystem, OpenMode

__all__ = ["MUTATING_OPS", "FaultyFS", "FsOp", "Trigger"]

MUTATING_OPS = ("write", "truncate", "sync", "rename", "remove", "sync_dir")


@dataclass(frozen=True)
class FsOp:
    """One mutating operation: ``index`` counts from 1; ``path`` is the file or directory."""

    index: int
    kind: str
    path: str
    detail: str = ""

    def describe(self) -> str:
        """``"op 3: sync /data/store"``."""
        extra = f" {self.detail}" if self.detail else ""
        return f"op {self.index}: {self.kind} {self.path}{extra}"


Trigger = Callable[[FsOp], BaseException | None]
"""Called before each mutating op; the exception it returns is raised in the op's place."""


class FaultyFS:
    """A ``FileSystem`` over ``inner``. ``ops`` lists every mutating op seen, in order, unless
    ``keep_ops`` is false (a soak's hours of operations would grow it without end): then only
    ``count`` is kept. With ``native``, a library that does its own I/O (SQLite's default VFS)
    gets the inner file system's real paths, and its I/O never meets the faults: for stores in
    several real processes, which need SQLite's real locks and shared WAL index."""

    def __init__(self, inner: FileSystem, trigger: Trigger, *, keep_ops: bool = True,
                 native: bool = False) -> None:
        self.inner = inner
        self.trigger = trigger
        self.ops: list[FsOp] = []
        self._keep = keep_ops
        self._native = native
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def gate(self, kind: str, path: str, detail: str = "") -> None:
        self._count += 1
        op = FsOp(self._count, kind, path, detail)
        if self._keep:
            self.ops.append(op)
        exc = self.trigger(op)
        if exc is not None:
            raise exc

    # -- FileSystem ------------------------------------------------------------------------

    def open(self, path: str, mode: OpenMode = "r") -> File:
        return _FaultyFile(self.inner.open(path, mode), self)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def makedirs(self, path: str) -> None:
        self.inner.makedirs(path)

    def remove(self, path: str) -> None:
        self.gate("remove", path)
        self.inner.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self.gate("rename", src, f"-> {dst}")
        self.inner.rename(src, dst)

    def sync_dir(self, path: str) -> None:
        self.gate("sync_dir", path)
        self.inner.sync_dir(path)

    def native_path(self, path: str) -> str | None:
        # A real path lets a store do its own I/O, dodging the faults: only when asked for
        # (``native=True``: real processes sharing SQLite's real locks, as a soak's do)
        return self.inner.native_path(path) if self._native else None

    def __repr__(self) -> str:
        return f"FaultyFS({self.inner!r}, ops={self.count})"


class _FaultyFile:
    __slots__ = ("_fs", "_inner", "path")

    def __init__(self, inner: File, fs: FaultyFS) -> None:
        self._inner = inner
        self._fs = fs
        self.path = inner.path

    def read(self, offset: int, size: int) -> bytes:
        return self._inner.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._fs.gate("write", self.path, f"@{offset}+{len(data)}")
        self._inner.write(offset, data)

    def size(self) -> int:
        return self._inner.size()

    def truncate(self, size: int) -> None:
        self._fs.gate("truncate", self.path, f"to {size}")
        self._inner.truncate(size)

    def sync(self) -> None:
        self._fs.gate("sync", self.path)
        self._inner.sync()

    def close(self) -> None:
        self._inner.close()

    def __repr__(self) -> str:
        return f"FaultyFile({self.path!r})"
