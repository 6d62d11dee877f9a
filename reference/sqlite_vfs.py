"""An apsw VFS that routes real SQLite's file I/O through an env's ``FileSystem``.

With it, the real SQLite engine runs on the harness's simulated disk, so power loss and crashes
hit SQLite's own journal and WAL protocol, not a model of it. Each store registers its own VFS
under a unique name (apsw's registry of names is process-wide) and unregisters it on close.

What it reports to SQLite, and why:

- ``xSectorSize`` 512 and ``xDeviceCharacteristics`` 0: no atomic or power-safe writes are
  promised, so SQLite takes its most careful path (the simulated disk may tear any write).
- Short reads: ``xRead`` returns the bytes there are; apsw zero-fills the rest of SQLite's
  buffer and reports ``SQLITE_IOERR_SHORT_READ`` (apsw's ``vfs.c``, ``apswvfsfile_xRead``).
- Directory syncs, as the unix VFS does: a journal, super-journal or WAL file opened with
  ``SQLITE_OPEN_CREATE`` gets its directory synced once, after its first ``xSync``; ``xDelete``
  syncs the directory when SQLite passes ``syncDir`` (it does so for ``synchronous=EXTRA``).
- ``xAccess(EXISTS)`` reports a zero-length file as missing, as the unix VFS does.
- Locks: in-process bookkeeping of the five SQLite lock levels, shared by every VFS on the same
  ``FileSystem`` object (one simulated disk is one "machine" in one process).
- No shared memory (``xShm*``): apsw gives a pure-Python file version-1 io methods. WAL mode
  therefore needs ``PRAGMA locking_mode=EXCLUSIVE`` before the first read, so SQLite keeps the
  wal-index in heap memory; the SQLite store does that. One connection per store makes this
  harmless.
- Temp files (no name, or delete-on-close temp/sub-journals) live in memory: nothing of them
  matters after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import posixpath
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import apsw

from crashgate.backends import CorruptStore, File, FileSystem, OpenMode, SimulatedCrash

__all__ = ["SECTOR_SIZE", "WAL_HEADER", "RoutedVFS", "file_connection", "has_wal_frames"]

WAL_HEADER = 32   # a WAL file's header; frames follow it (sqlite.org/fileformat2.html)

SECTOR_SIZE = 512

_NONE, _SHARED, _RESERVED, _PENDING, _EXCLUSIVE = (
    apsw.SQLITE_LOCK_NONE, apsw.SQLITE_LOCK_SHARED, apsw.SQLITE_LOCK_RESERVED,
    apsw.SQLITE_LOCK_PENDING, apsw.SQLITE_LOCK_EXCLUSIVE,
)
_JOURNAL_TYPES = (apsw.SQLITE_OPEN_MAIN_JOURNAL | apsw.SQLITE_OPEN_SUPER_JOURNAL
                  | apsw.SQLITE_OPEN_WAL)
_TEMP_TYPES = (apsw.SQLITE_OPEN_TEMP_DB | apsw.SQLITE_OPEN_TEMP_JOURNAL
               | apsw.SQLITE_OPEN_TRANSIENT_DB | apsw.SQLITE_OPEN_SUBJOURNAL)
_names = itertools.count()
T = TypeVar("T")


def _sqlite_error(code: int, exc: OSError | None = None) -> Exception:
    """The apsw exception carrying ``code`` (ENOSPC becomes ``SQLITE_FULL``, as in os_unix.c)."""
    if exc is not None and exc.errno == errno.ENOSPC:
        code = apsw.SQLITE_FULL
    err = apsw.exception_for(code)
    if exc is not None:
        err.__cause__ = exc
    return err


class _LockTable:
    """SQLite's lock levels per path, for every connection on one file system."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._levels: dict[str, dict[int, int]] = {}

    def lock(self, path: str, holder: int, level: int) -> None:
        with self._mutex:
            levels = self._levels.setdefault(path, {})
            mine = levels.get(holder, _NONE)
            if level <= mine:
                return
            others = [lv for h, lv in levels.items() if h != holder]
            if level == _SHARED:
                busy = any(lv >= _PENDING for lv in others)
            else:  # RESERVED, PENDING or EXCLUSIVE: one writer at a time
                busy = any(lv >= _RESERVED for lv in others)
                if not busy and level == _EXCLUSIVE and any(lv >= _SHARED for lv in others):
                    # readers still there: hold PENDING so no new reader starts (os_unix.c)
                    levels[holder] = _PENDING
                    busy = True
            if busy:
                raise apsw.BusyError(f"{path} is locked by another connection")
            levels[holder] = level

    def unlock(self, path: str, holder: int, level: int) -> None:
        with self._mutex:
            levels = self._levels.get(path, {})
            if level <= _NONE:
                levels.pop(holder, None)
            elif levels.get(holder, _NONE) > level:
                levels[holder] = level

    def reserved(self, path: str) -> bool:
        with self._mutex:
            return any(lv >= _RESERVED for lv in self._levels.get(path, {}).values())


# One lock table per FileSystem object, dropped when the file system is garbage collected
# (keyed by id, with a finalizer, so that file systems need not be hashable).
_tables: dict[int, _LockTable] = {}
_tables_mutex = threading.Lock()


def _lock_table_for(fs: FileSystem) -> _LockTable:
    with _tables_mutex:
        table = _tables.get(id(fs))
        if table is not None:
            return table
        table = _LockTable()
        try:
            weakref.finalize(fs, _tables.pop, id(fs), None)
        except TypeError:
            return table  # not weak-referenceable: this VFS gets a private table
        _tables[id(fs)] = table
        return table


class _Routing:
    """What a VFS and its files share: the file system, its lock table, and whether a
    ``SimulatedCrash`` came out of it (after which nothing may touch the disk again)."""

    def __init__(self, fs: FileSystem) -> None:
        self.fs = fs
        self.locks = _lock_table_for(fs)
        self.crashed: SimulatedCrash | None = None

    def io(self, code: int, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` with its failures turned into the SQLite error ``code``.

        A ``SimulatedCrash`` must not go through SQLite (apsw would turn it into an error code
        and SQLite would go on writing, e.g. roll back): it is kept, every later call fails
        without touching the disk, and the store re-raises it once control is back in Python.
        """
        if self.crashed is not None:
            raise _sqlite_error(code)
        try:
            return call(*args)
        except SimulatedCrash as crash:
            self.crashed = crash
            raise _sqlite_error(code) from None
        except OSError as exc:
            raise _sqlite_error(code, exc) from exc


class _RoutedFile:
    """One SQLite file on ``env.fs``: the methods of an apsw ``VFSFile``."""

    def __init__(self, routing: _Routing, path: str, f: File, *, dirsync: bool,
                 delete_on_close: bool) -> None:
        self._r = routing
        self._path = path
        self._f = f
        self._closed = False
        self._dirsync = dirsync
        self._delete_on_close = delete_on_close

    def xRead(self, amount: int, offset: int) -> bytes:
        # fewer bytes than asked: apsw zero-fills and returns SQLITE_IOERR_SHORT_READ
        return self._r.io(apsw.SQLITE_IOERR_READ, self._f.read, offset, amount)

    def xWrite(self, data: Any, offset: int) -> None:
        self._r.io(apsw.SQLITE_IOERR_WRITE, self._f.write, offset, bytes(data))

    def xTruncate(self, newsize: int) -> None:
        self._r.io(apsw.SQLITE_IOERR_TRUNCATE, self._f.truncate, newsize)

    def xSync(self, flags: int) -> None:
        self._r.io(apsw.SQLITE_IOERR_FSYNC, self._f.sync)
        if self._dirsync:
            # the file's creation is a directory entry: durable only once the directory is
            # synced; once is enough (os_unix.c, UNIXFILE_DIRSYNC)
            self._r.io(apsw.SQLITE_IOERR_DIR_FSYNC, self._r.fs.sync_dir,
                       posixpath.dirname(self._path) or ".")
            self._dirsync = False

    def xFileSize(self) -> int:
        return self._r.io(apsw.SQLITE_IOERR_FSTAT, self._f.size)

    def xLock(self, level: int) -> None:
        self._r.locks.lock(self._path, id(self), level)

    def xUnlock(self, level: int) -> None:
        self._r.locks.unlock(self._path, id(self), level)

    def xCheckReservedLock(self) -> bool:
        return self._r.locks.reserved(self._path)

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False  # SQLITE_NOTFOUND: SQLite uses its defaults

    def xSectorSize(self) -> int:
        return SECTOR_SIZE

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xClose(self) -> None:
        self._r.locks.unlock(self._path, id(self), _NONE)
        if self._closed:
            return
        self._closed = True
        if self._r.crashed is not None:
            return
        # closing a handle of a crashed disk (EIO) loses nothing: ignore its errors
        with contextlib.suppress(OSError):
            self._f.close()
        if self._delete_on_close:
            with contextlib.suppress(OSError):
                self._r.fs.remove(self._path)


class _MemoryFile:
    """A temp file SQLite asked for (sorts, temp tables, spilled statement journals)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def xRead(self, amount: int, offset: int) -> bytes:
        return bytes(self._data[offset: offset + amount])

    def xWrite(self, data: Any, offset: int) -> None:
        data = bytes(data)
        if offset > len(self._data):
            self._data.extend(b"\0" * (offset - len(self._data)))
        self._data[offset: offset + len(data)] = data

    def xTruncate(self, newsize: int) -> None:
        del self._data[newsize:]

    def xSync(self, flags: int) -> None:
        return None

    def xFileSize(self) -> int:
        return len(self._data)

    def xLock(self, level: int) -> None:
        return None

    def xUnlock(self, level: int) -> None:
        return None

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return SECTOR_SIZE

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xClose(self) -> None:
        self._data = bytearray()


class RoutedVFS(apsw.VFS):
    """A VFS doing every file operation through ``fs``; registered under ``self.name``.

    Randomness, time and sleep come from SQLite's default VFS (``base=""``). Call
    ``unregister()`` once the connection using it is closed. ``crashed`` is the
    ``SimulatedCrash`` that came out of ``fs``, if one did.
    """

    def __init__(self, fs: FileSystem, *, prefix: str = "crashgate") -> None:
        self.fs = fs
        self.name = f"{prefix}-{os.getpid()}-{next(_names)}"
        self._r = _Routing(fs)
        super().__init__(self.name, base="")

    @property
    def crashed(self) -> SimulatedCrash | None:
        return self._r.crashed

    def xOpen(self, name: Any, flags: list[int]) -> Any:
        inflags = flags[0]
        if isinstance(name, apsw.URIFilename):
            name = name.filename()
        if name is None or (inflags & apsw.SQLITE_OPEN_DELETEONCLOSE
                            and inflags & _TEMP_TYPES):
            flags[1] = apsw.SQLITE_OPEN_READWRITE
            return _MemoryFile()
        path = str(name)
        create = bool(inflags & apsw.SQLITE_OPEN_CREATE)
        mode: OpenMode
        if create and inflags & apsw.SQLITE_OPEN_EXCLUSIVE:
            mode = "x"
        elif create:
            mode = "c"
        elif inflags & apsw.SQLITE_OPEN_READWRITE:
            mode = "r+"
        else:
            mode = "r"
        f = self._r.io(apsw.SQLITE_CANTOPEN, self.fs.open, path, mode)
        flags[1] = apsw.SQLITE_OPEN_READONLY if mode == "r" else apsw.SQLITE_OPEN_READWRITE
        return _RoutedFile(self._r, path, f,
                           dirsync=create and bool(inflags & _JOURNAL_TYPES),
                           delete_on_close=bool(inflags & apsw.SQLITE_OPEN_DELETEONCLOSE))

    def xDelete(self, filename: str, syncdir: bool) -> None:
        try:
            self._r.io(apsw.SQLITE_IOERR_DELETE, self.fs.remove, filename)
        except apsw.IOError as err:
            # a missing file: SQLite wants SQLITE_IOERR_DELETE_NOENT, and apsw then clears it
            if isinstance(err.__cause__, FileNotFoundError):
                raise _sqlite_error(apsw.SQLITE_IOERR_DELETE_NOENT) from None
            raise
        if syncdir:
            self._r.io(apsw.SQLITE_IOERR_DIR_FSYNC, self.fs.sync_dir,
                       posixpath.dirname(filename) or ".")

    def xAccess(self, pathname: str, flags: int) -> bool:
        return self._r.io(apsw.SQLITE_IOERR_ACCESS, self._access, pathname, flags)

    def _access(self, pathname: str, flags: int) -> bool:
        if not self.fs.exists(pathname):
            return False
        if flags != apsw.SQLITE_ACCESS_EXISTS:
            return True
        # a zero-length file counts as missing (os_unix.c unixAccess), so an empty journal or
        # WAL left behind is not taken for one with content
        try:
            f = self.fs.open(pathname, "r")
        except IsADirectoryError:
            return True
        try:
            return f.size() > 0
        finally:
            f.close()

    def xFullPathname(self, name: str) -> str:
        # The env's file system is the whole world: its paths are already what to open.
        return name


def has_wal_frames(fs: FileSystem, path: str) -> bool:
    """Whether ``path``'s ``-wal`` exists and holds more than a header (frames to replay)."""
    try:
        f = fs.open(path + "-wal", "r")
    except FileNotFoundError:
        return False
    try:
        return f.size() > WAL_HEADER
    finally:
        f.close()


@contextlib.contextmanager
def file_connection(fs: FileSystem, path: str, *, readonly: bool, prefix: str,
                    cannot_open: tuple[type[BaseException], ...] = (apsw.Error,)
                    ) -> Iterator[tuple[apsw.Connection, RoutedVFS | None]]:
    """A plain apsw connection to the database file ``path`` of ``fs`` (beside a store's own:
    a backup's copy, a restore's source), and the VFS it runs on: the file itself when ``fs``
    maps it to a native path, else a ``RoutedVFS`` registered for it (named after ``prefix``)
    and unregistered after. An open failing with ``cannot_open`` is ``CorruptStore`` naming
    ``path``. A crash of the simulated disk inside SQLite comes out as the ``SimulatedCrash``
    itself, at the open and inside the block; a crashed disk's handles may fail to close. A
    read-only connection to a WAL that holds frames never checkpoints at its close (that would
    write the file it opened read-only)."""
    native = fs.native_path(path)
    keep_wal = readonly and has_wal_frames(fs, path)
    flags = (apsw.SQLITE_OPEN_READONLY if readonly
             else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    vfs = None if native is not None else RoutedVFS(fs, prefix=prefix)
    try:
        try:
            conn = (apsw.Connection(native, flags=flags) if native is not None
                    else apsw.Connection(path, flags=flags, vfs=vfs.name))  # type: ignore[union-attr]
            if keep_wal:
                conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        except cannot_open as exc:
            if vfs is not None and vfs.crashed is not None:
                raise vfs.crashed from None
            raise CorruptStore(path, f"SQLite cannot open it as a database: {exc}") from exc
        try:
            yield conn, vfs
        except apsw.Error:
            if vfs is not None and vfs.crashed is not None:
                raise vfs.crashed from None
            raise
        finally:
            try:
                conn.close()
            except apsw.Error:
                if vfs is None or vfs.crashed is None:
                    raise
    finally:
        if vfs is not None:
            vfs.unregister()
