"""A simulated disk: a page cache over inodes, with every mutating call recorded in a trace.

Model (after ALICE and SQLite's crash VFS):

- A file is an inode; a directory is an inode holding entries ``name -> inode``. A rename moves
  an entry, and an open handle keeps working on its inode after its name is renamed or
  unlinked, as on POSIX.
- Writes and truncates reach the page cache at once (every reader sees them); they become
  durable for that inode at ``File.sync()``. A sync makes the inode's bytes durable, not its
  name: a directory entry (create, mkdir, rename, unlink) becomes durable only when its
  directory is synced with ``FileSystem.sync_dir`` (a rename between two directories when
  both are). So a new, fsynced file whose directory was not synced can vanish on power loss.
- ``trace`` is the program-order list of ``DiskOp``; ``harness.crashstates`` replays it to build
  what survives power loss. ``crash()`` is a process crash: the page cache survives, every
  handle given out before it is dead (raises ``EIO``, never touches the disk).

Paths are POSIX, normalised, relative ones taken from ``/``. A directory exists only if it is in
the base image or was made with ``makedirs``: ``open`` never creates parent directories, so a
harness calls ``fs.makedirs(dirname)`` (or builds the base with ``DiskImage.empty(dirname)``,
which is durable from the start) before handing a store a path. Not thread-safe: one process
(thread) drives a disk, as one store drives one env.
"""

from __future__ import annotations

import errno
import posixpath

from crashgate.backends.env import File, OpenMode
from crashgate.harness.content import ChunkedFile, Content
from crashgate.harness.diskimage import ROOT_INO, DiskImage, layout, normpath, walk_tree
from crashgate.harness.diskop import DATA_KINDS, ENTRY_KINDS, DiskOp, OpKind
from crashgate.harness.spill import Spill

__all__ = ["DATA_KINDS", "ENTRY_KINDS", "ROOT_INO", "SECTOR_SIZE", "DiskImage", "DiskOp",
           "OpKind", "SimDisk", "SimFS", "SimFile", "layout", "normpath", "walk_tree"]

SECTOR_SIZE = 512


def _dead(what: str) -> OSError:
    return OSError(errno.EIO, f"{what}: the process crashed; this handle is dead "
                   "(open a new one with disk.fs() after the crash)")


class SimDisk:
    """The disk: page cache (``_entries``, ``_data``) plus the ``trace`` that produced it from
    ``base``. ``fs()`` hands out a ``FileSystem`` view; ``crash()`` kills every view.

    ``spill``: where the trace keeps the data of each write of at least ``spill_over`` bytes,
    out of memory (a long run's trace holds every byte it ever wrote); without one, every
    write's data stays in memory."""

    def __init__(self, image: DiskImage | None = None, sector_size: int = SECTOR_SIZE, *,
                 spill: Spill | None = None, spill_over: int = 64 * 1024) -> None:
        if sector_size <= 0:
            raise ValueError(f"sector_size must be positive, got {sector_size}")
        if spill_over < 1:
            raise ValueError(f"spill_over must be at least 1 (bytes), got {spill_over}")
        self._spill = spill
        self._spill_over = spill_over
        self.base = image if image is not None else DiskImage.empty()
        self.sector_size = sector_size
        entries, data, self._next_ino = layout(self.base)
        self._entries = entries
        # the image's contents are shared, not copied: a file becomes a ChunkedFile when first
        # changed (``_mutable``), which copies only the chunks written, so recovering a crash
        # state of a large file (truncating a torn tail, say) copies about one chunk
        self._data: dict[int, Content | ChunkedFile] = dict(data)
        self.trace: list[DiskOp] = []
        self._generation = 0
        self._handles: dict[int, int] = {}   # inode -> open handles of this generation
        self._linked: dict[int, int] = {ino: 1 for ino in data}   # file inode -> its names
        self._dropped = False

    @property
    def position(self) -> int:
        return len(self.trace)

    def fs(self) -> SimFS:
        if self._dropped:
            raise RuntimeError("this SimDisk's page cache was dropped (drop_page_cache): its "
                               "trace can be replayed, its files no longer read")
        return SimFS(self, self._generation)

    def crash(self) -> None:
        """The process dies: handles and file systems handed out so far stop working."""
        self._generation += 1
        self._handles.clear()
        for ino in [i for i in self._data if not self._linked.get(i)]:
            del self._data[ino]

    def drop_page_cache(self) -> None:
        """Free what the page cache holds, keeping ``base`` and ``trace`` (all a replay
        needs): for a recorded run whose files are no longer read. Every handle and file
        system given out dies, as at a crash, and none can be had again."""
        self.crash()
        self._data.clear()
        self._entries = {ROOT_INO: {}}
        self._dropped = True

    def cache_image(self) -> DiskImage:
        """What the page cache holds now: what a process crash leaves."""
        files, dirs = walk_tree(self._entries)
        return DiskImage._trusted({p: _frozen(self._data[i]) for p, i in files}, dirs)

    def durable_image(self) -> DiskImage:
        """What survives power loss now if none of the pending ops reach the disk."""
        from crashgate.harness.crashstates import durable_image  # crashstates imports us

        return durable_image(self.base, self.trace, self.position, self.sector_size)

    def pending(self) -> list[int]:
        """Trace indices not yet durable (see ``crashstates.pending_at``)."""
        from crashgate.harness.crashstates import pending_at

        return pending_at(self.base, self.trace, self.position)

    # -- page cache (called by SimFS / SimFile after their checks) -------------------------

    def _record(self, op: DiskOp) -> None:
        self.trace.append(op)

    def _lookup(self, path: str) -> int:
        """The inode at ``path``; FileNotFoundError / NotADirectoryError as the OS raises them."""
        ino = ROOT_INO
        for name in path.split("/")[1:] if path != "/" else []:
            table = self._entries.get(ino)
            if table is None:
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
            nxt = table.get(name)
            if nxt is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            ino = nxt
        return ino

    def _parent(self, path: str) -> tuple[int, str]:
        """(directory inode, name) for ``path``'s entry; the directory must exist."""
        if path == "/":
            raise OSError(errno.EBUSY, "the root directory has no entry to change", path)
        head, name = posixpath.split(path)
        dino = self._lookup(head)
        if dino not in self._entries:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        return dino, name

    def _is_dir(self, ino: int) -> bool:
        return ino in self._entries

    def _link(self, ino: int, delta: int) -> None:
        """A file inode gained (+1) or lost (-1) a name: one with no name and no open handle
        can never be reached again, so its bytes leave the page cache (a store that compacts
        by rename would otherwise keep every old copy of its file). The trace keeps what was
        written, for the replay."""
        self._linked[ino] = self._linked.get(ino, 0) + delta
        self._forget_if_dead(ino)

    def _forget_if_dead(self, ino: int) -> None:
        if not self._linked.get(ino) and not self._handles.get(ino) and ino in self._data:
            del self._data[ino]
            self._linked.pop(ino, None)

    def _mutable(self, ino: int) -> ChunkedFile:
        buf = self._data[ino]
        if isinstance(buf, Content):
            buf = self._data[ino] = buf.edit()
        return buf


def _frozen(buf: Content | ChunkedFile) -> Content:
    return buf if isinstance(buf, Content) else buf.freeze()


class SimFile:
    """An open file on a ``SimDisk``: bound to its inode, not to its name."""

    __slots__ = ("_disk", "_gen", "_ino", "_writable", "_closed", "path")

    def __init__(self, disk: SimDisk, gen: int, ino: int, path: str, writable: bool) -> None:
        self._disk, self._gen, self._ino, self.path = disk, gen, ino, path
        self._writable = writable
        self._closed = False

    def _buf(self) -> Content | ChunkedFile:
        if self._disk._generation != self._gen:
            raise _dead(self.path)
        if self._closed:
            raise OSError(errno.EBADF, "I/O on a closed file", self.path)
        return self._disk._data[self._ino]

    def _wbuf(self) -> ChunkedFile:
        self._buf()
        if not self._writable:
            raise OSError(errno.EBADF, "file was opened read-only (mode 'r'); open it with "
                          "'r+', 'c', 'w' or 'x' to write", self.path)
        return self._disk._mutable(self._ino)

    def read(self, offset: int, size: int) -> bytes:
        buf = self._buf()
        if offset < 0 or size < 0:
            raise OSError(errno.EINVAL, f"read needs offset >= 0 and size >= 0, got "
                          f"offset={offset} size={size}", self.path)
        return buf.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        buf = self._wbuf()
        if offset < 0:
            raise OSError(errno.EINVAL, f"write needs offset >= 0, got {offset}", self.path)
        data = bytes(data)
        if not data:
            return
        disk = self._disk
        spill = disk._spill if len(data) >= disk._spill_over else None
        disk._record(DiskOp("write", self.path, offset=offset, data=data, ino=self._ino,
                            spill=spill))
        buf.write(offset, data)

    def size(self) -> int:
        return len(self._buf())

    def truncate(self, size: int) -> None:
        buf = self._wbuf()
        if size < 0:
            raise OSError(errno.EINVAL, f"truncate needs size >= 0, got {size}", self.path)
        self._disk._record(DiskOp("truncate", self.path, size=size, ino=self._ino))
        buf.truncate(size)

    def sync(self) -> None:
        self._buf()
        self._disk._record(DiskOp("sync", self.path, ino=self._ino))

    def close(self) -> None:
        if self._disk._generation != self._gen:
            raise _dead(self.path)
        if not self._closed:
            self._closed = True
            disk = self._disk
            disk._handles[self._ino] -= 1
            disk._forget_if_dead(self._ino)

    def __repr__(self) -> str:
        return f"SimFile({self.path!r}, ino={self._ino})"


class SimFS:
    """A ``FileSystem`` over a ``SimDisk``, valid until the disk's next ``crash()``."""

    def __init__(self, disk: SimDisk, generation: int) -> None:
        self._disk = disk
        self._gen = generation

    def _live(self, path: str) -> SimDisk:
        if self._disk._generation != self._gen:
            raise _dead(f"file system call on {path!r}")
        return self._disk

    def open(self, path: str, mode: OpenMode = "r") -> File:
        disk = self._live(path)
        if mode not in ("r", "r+", "c", "w", "x"):
            raise ValueError(f"open mode {mode!r} is not one of ['c', 'r', 'r+', 'w', 'x']")
        path = normpath(path)
        dino, name = disk._parent(path) if path != "/" else (ROOT_INO, "")
        ino = disk._entries[dino].get(name) if path != "/" else ROOT_INO
        if ino is not None and disk._is_dir(ino):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        if ino is None:
            if mode in ("r", "r+"):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            ino = disk._next_ino
            disk._next_ino += 1
            disk._record(DiskOp("create", path, ino=ino, parent=dino))
            disk._entries[dino][name] = ino
            disk._data[ino] = ChunkedFile()
            disk._linked[ino] = 1
        elif mode == "x":
            raise FileExistsError(errno.EEXIST, "File exists", path)
        elif mode == "w" and disk._data[ino]:
            disk._record(DiskOp("truncate", path, size=0, ino=ino))
            disk._data[ino] = ChunkedFile()
        disk._handles[ino] = disk._handles.get(ino, 0) + 1
        return SimFile(disk, self._gen, ino, path, writable=mode != "r")

    def exists(self, path: str) -> bool:
        disk = self._live(path)
        try:
            disk._lookup(normpath(path))
        except OSError:
            return False
        return True

    def listdir(self, path: str) -> list[str]:
        disk = self._live(path)
        path = normpath(path)
        ino = disk._lookup(path)
        if not disk._is_dir(ino):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        return sorted(disk._entries[ino])

    def makedirs(self, path: str) -> None:
        disk = self._live(path)
        path = normpath(path)
        ino, walked = ROOT_INO, ""
        for name in path.split("/")[1:] if path != "/" else []:
            walked += "/" + name
            nxt = disk._entries[ino].get(name)
            if nxt is None:
                nxt = disk._next_ino
                disk._next_ino += 1
                disk._record(DiskOp("mkdir", walked, ino=nxt, parent=ino))
                disk._entries[ino][name] = nxt
                disk._entries[nxt] = {}
            elif not disk._is_dir(nxt):
                if walked == path:
                    raise FileExistsError(errno.EEXIST, "File exists (not a directory)", path)
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", walked)
            ino = nxt

    def remove(self, path: str) -> None:
        disk = self._live(path)
        path = normpath(path)
        dino, name = disk._parent(path)
        ino = disk._entries[dino].get(name)
        if ino is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if disk._is_dir(ino):
            raise IsADirectoryError(errno.EISDIR, "Is a directory (remove unlinks files only)",
                                    path)
        disk._record(DiskOp("unlink", path, ino=ino, parent=dino))
        del disk._entries[dino][name]
        disk._link(ino, -1)

    def rename(self, src: str, dst: str) -> None:
        disk = self._live(src)
        src, dst = normpath(src), normpath(dst)
        sdir, sname = disk._parent(src)
        ino = disk._entries[sdir].get(sname)
        if ino is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", src)
        ddir, dname = disk._parent(dst)
        old = disk._entries[ddir].get(dname)
        if old == ino:
            return  # POSIX: renaming a file onto itself does nothing
        if disk._is_dir(ino) and (dst + "/").startswith(src + "/"):
            raise OSError(errno.EINVAL, f"cannot move directory {src!r} into itself", dst)
        if old is not None:
            if disk._is_dir(ino) and not disk._is_dir(old):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", dst)
            if not disk._is_dir(ino) and disk._is_dir(old):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", dst)
            if disk._is_dir(old) and disk._entries[old]:
                raise OSError(errno.ENOTEMPTY, "Directory not empty", dst)
        disk._record(DiskOp("rename", src, dst=dst, ino=ino, parent=sdir, dst_parent=ddir))
        del disk._entries[sdir][sname]
        disk._entries[ddir][dname] = ino
        if old is not None and not disk._is_dir(old):
            disk._link(old, -1)

    def sync_dir(self, path: str) -> None:
        disk = self._live(path)
        path = normpath(path)
        ino = disk._lookup(path)
        if not disk._is_dir(ino):
            raise NotADirectoryError(errno.ENOTDIR, "sync_dir needs a directory; use "
                                     "File.sync() for a file", path)
        disk._record(DiskOp("sync_dir", path, ino=ino))

    def native_path(self, path: str) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"SimFS(generation={self._gen})"

