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
from collections.abc import Iterator, Mapping
from dataclasses import FrozenInstanceError, dataclass
from typing import Literal

from crashgate.backends.env import File, OpenMode
from crashgate.harness.content import ChunkedFile, Content

__all__ = ["DATA_KINDS", "ENTRY_KINDS", "ROOT_INO", "SECTOR_SIZE", "DiskImage", "DiskOp",
           "OpKind", "SimDisk", "SimFS", "SimFile", "normpath"]

SECTOR_SIZE = 512
ROOT_INO = 1

OpKind = Literal["write", "truncate", "sync", "create", "rename", "unlink", "mkdir", "sync_dir"]
DATA_KINDS = frozenset({"write", "truncate"})
ENTRY_KINDS = frozenset({"create", "rename", "unlink", "mkdir"})


def normpath(path: str) -> str:
    """``"a//b/../c"`` -> ``"/a/c"``: absolute, normalised; relative paths start at ``/``."""
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, got {type(path).__name__} {path!r}")
    p = posixpath.normpath(posixpath.join("/", path))
    return "/" + p.lstrip("/")  # normpath keeps a leading "//"


@dataclass(frozen=True, slots=True)
class DiskOp:
    """One mutating call (or sync) that reached the page cache, in program order.

    ``path`` is the name the call used (for a write, the name its handle was opened with; for
    rename, the source). The inode numbers make the trace replayable without names:
    ``ino`` is the inode acted on (the file written, truncated or synced; the inode an entry op
    creates, moves or unlinks; the directory of ``sync_dir``), ``parent`` the directory inode of
    ``path``'s entry and ``dst_parent`` the directory receiving a rename.
    """

    kind: OpKind
    path: str
    offset: int = 0
    data: bytes = b""
    size: int = 0
    dst: str = ""
    ino: int = 0
    parent: int = 0
    dst_parent: int = 0

    def describe(self) -> str:
        """``"write /db @4096+512"``, ``"rename /a.tmp -> /a"``, ``"sync /db"`` ..."""
        if self.kind == "write":
            return f"write {self.path} @{self.offset}+{len(self.data)}"
        if self.kind == "truncate":
            return f"truncate {self.path} to {self.size}"
        if self.kind == "rename":
            return f"rename {self.path} -> {self.dst}"
        return f"{self.kind} {self.path}"

    def __repr__(self) -> str:
        return f"DiskOp({self.describe()})"


class DiskImage:
    """An immutable snapshot of a disk: ``files`` maps paths to contents; ``dirs`` holds every
    directory, ``/`` and the ancestors of every file and directory included.

    ``files`` values may be bytes-like or ``Content``. The image holds them as ``contents``
    (path -> ``Content``: chunks shared with the images and disks it came from, so a crash
    image of a large file copies only what differs); ``files`` (path -> bytes) flattens a file
    when it is first read and keeps it. Equality and the hash (computed once) are by contents.
    """

    contents: Mapping[str, Content]
    dirs: frozenset[str]

    def __init__(self, files: Mapping[str, bytes | Content] | None = None,
                 dirs: frozenset[str] = frozenset({"/"})) -> None:
        contents = {normpath(p): Content.of(b) for p, b in (files or {}).items()}
        all_dirs = {"/"}
        for d in [*map(normpath, dirs), *(posixpath.dirname(p) for p in contents)]:
            while d not in all_dirs:
                all_dirs.add(d)
                d = posixpath.dirname(d)
        clash = sorted(all_dirs & contents.keys())
        if clash:
            raise ValueError(f"DiskImage: {clash[0]!r} is both a file and a directory; "
                             "a path is one or the other")
        object.__setattr__(self, "contents", contents)
        object.__setattr__(self, "dirs", frozenset(all_dirs))

    @classmethod
    def empty(cls, *dirs: str) -> DiskImage:
        """An image holding only ``dirs`` (and their ancestors), all durable."""
        return cls({}, frozenset(dirs))

    @classmethod
    def _trusted(cls, contents: dict[str, Content], dirs: frozenset[str]) -> DiskImage:
        # Built by the replay, already normalised: skip the checks (hot path).
        image = object.__new__(cls)
        object.__setattr__(image, "contents", contents)
        object.__setattr__(image, "dirs", dirs)
        return image

    @property
    def files(self) -> Mapping[str, bytes]:
        """path -> bytes, each file flattened when first read (and kept)."""
        flat = self.__dict__.get("_files")
        if flat is None:
            flat = _FlatFiles(self.contents)
            object.__setattr__(self, "_files", flat)
        return flat

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: a DiskImage is immutable "
                                  "(build a new one)")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: a DiskImage is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiskImage):
            return NotImplemented
        return self is other or (self.dirs == other.dirs and self.contents == other.contents)

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((frozenset(self.contents.items()), self.dirs))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict[str, object]:
        # Not the cached hash (str/bytes hashes differ between processes), nor flat copies.
        return {"files": self.contents, "dirs": self.dirs}

    def __setstate__(self, state: dict[str, object]) -> None:
        files = state["files"]
        assert isinstance(files, Mapping)
        object.__setattr__(self, "contents", {p: Content.of(b) for p, b in files.items()})
        object.__setattr__(self, "dirs", state["dirs"])

    def __repr__(self) -> str:
        return f"DiskImage(files={dict(self.contents)!r}, dirs={self.dirs!r})"

    def diff(self, other: DiskImage) -> list[str]:
        """Human-readable differences from ``self`` to ``other``, one line each."""
        out = [f"+dir {d}" for d in sorted(other.dirs - self.dirs)]
        out += [f"-dir {d}" for d in sorted(self.dirs - other.dirs)]
        for p in sorted(self.contents.keys() | other.contents.keys()):
            a, b = self.contents.get(p), other.contents.get(p)
            if a is None:
                out.append(f"+file {p} ({len(b or b'')} bytes)")
            elif b is None:
                out.append(f"-file {p} ({len(a)} bytes)")
            else:
                first = a.first_difference(b)
                if first is not None:
                    out.append(f"~file {p}: {len(a)} -> {len(b)} bytes, first difference at "
                               f"{first}")
        return out


class _FlatFiles(Mapping[str, bytes]):
    """``DiskImage.files``: a read-only view of an image's contents as bytes, flattening each
    file once, when first read."""

    def __init__(self, contents: Mapping[str, Content]) -> None:
        self._contents = contents
        self._flat: dict[str, bytes] = {}

    def __getitem__(self, path: str) -> bytes:
        got = self._flat.get(path)
        if got is None:
            got = self._flat[path] = self._contents[path].tobytes()
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self._contents)

    def __len__(self) -> int:
        return len(self._contents)

    def __contains__(self, path: object) -> bool:
        return path in self._contents

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def layout(image: DiskImage) -> tuple[dict[int, dict[str, int]], dict[int, Content], int]:
    """Give an image inodes, deterministically (the disk and the replay must agree): returns
    ``(entries: dir inode -> {name: inode}, data: file inode -> content, next free inode)``."""
    entries: dict[int, dict[str, int]] = {ROOT_INO: {}}
    by_path = {"/": ROOT_INO}
    ino = ROOT_INO
    for d in sorted(image.dirs - {"/"}, key=lambda p: (p.count("/"), p)):
        ino += 1
        entries[ino] = {}
        entries[by_path[posixpath.dirname(d)]][posixpath.basename(d)] = ino
        by_path[d] = ino
    data: dict[int, Content] = {}
    for p in sorted(image.contents):
        ino += 1
        data[ino] = image.contents[p]
        entries[by_path[posixpath.dirname(p)]][posixpath.basename(p)] = ino
    return entries, data, ino + 1


def walk_tree(
    entries: Mapping[int, Mapping[str, int]],
) -> tuple[list[tuple[str, int]], frozenset[str]]:
    """Resolve names from the root: ``([(file path, inode)], dirs)``. An inode is a directory
    when it has an entry table. Unreachable inodes are left out; cycles are cut."""
    files: list[tuple[str, int]] = []
    dirs = {"/"}
    stack = [("/", ROOT_INO)]
    seen = {ROOT_INO}
    while stack:
        path, dino = stack.pop()
        for name, ino in entries.get(dino, {}).items():
            child = path + name if path == "/" else f"{path}/{name}"
            if ino in entries:
                if ino not in seen:
                    seen.add(ino)
                    dirs.add(child)
                    stack.append((child, ino))
            else:
                files.append((child, ino))
    return files, frozenset(dirs)


def _dead(what: str) -> OSError:
    return OSError(errno.EIO, f"{what}: the process crashed; this handle is dead "
                   "(open a new one with disk.fs() after the crash)")


class SimDisk:
    """The disk: page cache (``_entries``, ``_data``) plus the ``trace`` that produced it from
    ``base``. ``fs()`` hands out a ``FileSystem`` view; ``crash()`` kills every view."""

    def __init__(self, image: DiskImage | None = None, sector_size: int = SECTOR_SIZE) -> None:
        if sector_size <= 0:
            raise ValueError(f"sector_size must be positive, got {sector_size}")
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
        self._disk._record(DiskOp("write", self.path, offset=offset, data=data, ino=self._ino))
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

