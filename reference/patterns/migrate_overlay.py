"""A file system that reads another and keeps every change in memory: how the pattern migrator
reads its source without writing anything anywhere (``--dry-run``, the check before a
migration, ``status``).

Why it is needed: opening a WAL-mode SQLite database read-only is not read-only on disk.
SQLite (3.22 and later, sqlite.org/wal.html "Read-Only Databases") creates the ``-wal`` and
``-shm`` files of a cleanly closed WAL database when the directory is writable, so a
"read-only" open of the AgentDB source would leave two new files beside it. Through this
overlay, whatever the source backend's open creates or changes lands in memory and is dropped
with it; reads of files it did not change go to the file system underneath.

The overlay is never the OS's own file system (``native_path`` is None), so SQLite reaches it
through crashgate's routed VFS, whose locks are bookkeeping in this process: a writer in
another process is not held off while the overlay reads. A read torn by such a writer fails
the source's checks (``integrity_check``, the per-record sums) and is reported; run again.
"""

from __future__ import annotations

import errno
import posixpath

from crashgate.backends import File, FileSystem, OpenMode, read_all

__all__ = ["MemoryOverlay"]


class _MemoryFile:
    def __init__(self, path: str, data: bytearray) -> None:
        self.path = path
        self._data = data

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset:offset + size])

    def write(self, offset: int, data: bytes) -> None:
        if offset > len(self._data):
            self._data.extend(bytes(offset - len(self._data)))
        self._data[offset:offset + len(data)] = data

    def size(self) -> int:
        return len(self._data)

    def truncate(self, size: int) -> None:
        del self._data[size:]
        if size > len(self._data):
            self._data.extend(bytes(size - len(self._data)))

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None


class MemoryOverlay:
    """``FileSystem`` over ``base``: reads fall through, changes stay here (module
    docstring)."""

    def __init__(self, base: FileSystem) -> None:
        self._base = base
        self._files: dict[str, bytearray] = {}
        self._gone: set[str] = set()
        self._dirs: set[str] = set()

    def _in_base(self, path: str) -> bool:
        return path not in self._gone and self._base.exists(path)

    def open(self, path: str, mode: OpenMode = "r") -> File:
        path = posixpath.normpath(path)
        if path in self._files:
            if mode == "x":
                raise FileExistsError(errno.EEXIST, "File exists", path)
            if mode == "w":
                self._files[path].clear()
            return _MemoryFile(path, self._files[path])
        present = self._in_base(path)
        if mode == "r" and present:
            return self._base.open(path, "r")
        if not present and mode in ("r", "r+"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if present and mode == "x":
            raise FileExistsError(errno.EEXIST, "File exists", path)
        data = bytearray()
        if present and mode in ("r+", "c"):
            data = bytearray(read_all(self._base, path))
        self._gone.discard(path)
        self._files[path] = data
        return _MemoryFile(path, data)

    def exists(self, path: str) -> bool:
        path = posixpath.normpath(path)
        return path in self._files or path in self._dirs or self._in_base(path)

    def listdir(self, path: str) -> list[str]:
        path = posixpath.normpath(path)
        names = set()
        if path not in self._gone and self._base.exists(path):
            names = {n for n in self._base.listdir(path)
                     if posixpath.join(path, n) not in self._gone}
        names |= {posixpath.basename(p) for p in (*self._files, *self._dirs)
                  if posixpath.dirname(p) == path}
        return sorted(names)

    def makedirs(self, path: str) -> None:
        self._dirs.add(posixpath.normpath(path))

    def remove(self, path: str) -> None:
        path = posixpath.normpath(path)
        if not self.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self._files.pop(path, None)
        self._gone.add(path)

    def rename(self, src: str, dst: str) -> None:
        src, dst = posixpath.normpath(src), posixpath.normpath(dst)
        f = self.open(src, "r+")   # brought into memory
        data = self._files.pop(f.path)
        self._gone.add(src)
        self._gone.discard(dst)
        self._files[dst] = data

    def sync_dir(self, path: str) -> None:
        return None

    def native_path(self, path: str) -> str | None:
        return None
