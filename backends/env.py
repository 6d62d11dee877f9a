"""The env: what a store is opened with — a file system, a clock, failpoints and the process it
runs as.

A store does every bit of its I/O through ``env.fs``, reads time from ``env.clock``, calls
``env.failpoints.hit(name)`` at the named points where a crash between writes matters, and asks
``env.process`` who it runs as and whether another process is running (a writer lock names its
holder). Nothing here is global: each store gets its own env, so parallel tests never interfere.

This module holds the protocols and the real implementations (``OsFS``, ``SystemClock``,
``NoFailpoints``, ``OsProcess``). The simulated disk, the virtual clock, armed failpoints and the
simulated machine's process live in the harness; the reference stores never import it.

File-system semantics follow POSIX, with Python's exceptions: a missing file raises
``FileNotFoundError``, an exclusive create of an existing one ``FileExistsError``, an I/O error
``OSError`` with its errno. Reads and writes are positional (pread/pwrite), binary only.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import psutil

__all__ = [
    "Clock",
    "Env",
    "Failpoints",
    "File",
    "FileSystem",
    "NoFailpoints",
    "OpenMode",
    "OsFS",
    "OsProcess",
    "Process",
    "ProcessId",
    "SimulatedCrash",
    "SystemClock",
    "os_env",
    "read_all",
]

OpenMode = Literal["r", "r+", "c", "w", "x"]
"""``r`` read an existing file; ``r+`` read/write an existing file; ``c`` read/write, created if
missing; ``w`` read/write, created or truncated; ``x`` read/write, created exclusively."""


class SimulatedCrash(BaseException):  # noqa: N818 - it is not an error, it is the end of a process
    """Raised by the harness to stop a store at an instant, as a process crash would.

    A ``BaseException`` so that a store's ``except Exception`` cannot swallow it: the store is
    abandoned exactly where it stood, and the harness never calls into it again.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"simulated crash at {where}")


@runtime_checkable
class File(Protocol):
    """An open file. Positional I/O; ``sync`` is fsync: the commit point for durability."""

    path: str

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer at the end of the file."""
        ...

    def write(self, offset: int, data: bytes) -> None:
        """Write all of ``data`` at ``offset`` (a gap past the end reads as zeros)."""
        ...

    def size(self) -> int: ...

    def truncate(self, size: int) -> None: ...

    def sync(self) -> None:
        """fsync: after it returns, everything written to this file survives power loss."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FileSystem(Protocol):
    """The file operations a store may use. Directory entries (create, rename, unlink) become
    durable only when the directory is synced with ``sync_dir``."""

    def open(self, path: str, mode: OpenMode = "r") -> File: ...

    def exists(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) in the directory, sorted."""
        ...

    def makedirs(self, path: str) -> None:
        """Create the directory and its parents; no error if it exists."""
        ...

    def remove(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` with ``src``."""
        ...

    def sync_dir(self, path: str) -> None:
        """fsync the directory: its entries (creates, renames, unlinks) become durable."""
        ...

    def native_path(self, path: str) -> str | None:
        """The real OS path when this file system is the OS's own, else ``None``.

        Lets a store hand a file to a library that does its own I/O (e.g. SQLite's default VFS
        with its real locks) when nothing needs to intercept that I/O.
        """
        ...


@runtime_checkable
class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (leases and timestamps)."""
        ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@runtime_checkable
class Failpoints(Protocol):
    def hit(self, name: str) -> None:
        """Called by a store at a named point; raises ``SimulatedCrash`` when armed."""
        ...


@dataclass(frozen=True)
class ProcessId:
    """A process as a lock file names it: ``pid`` on ``hostname``, started at ``started_ms``
    (ms since the epoch; 0 = unknown), which tells a reused pid from the process that had it."""

    pid: int
    hostname: str
    started_ms: int = 0


@runtime_checkable
class Process(Protocol):
    """The process a store runs as, and what its machine says about other processes."""

    def identity(self) -> ProcessId:
        """This process, now."""
        ...

    def running(self, other: ProcessId) -> bool | None:
        """Whether ``other`` is running: ``None`` when it cannot be told from here (it is on
        another host)."""
        ...


class _OsFile:
    __slots__ = ("_fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        return f"OsFile({self.path!r})"


_OPEN_FLAGS: dict[str, int] = {
    "r": os.O_RDONLY,
    "r+": os.O_RDWR,
    "c": os.O_RDWR | os.O_CREAT,
    "w": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "x": os.O_RDWR | os.O_CREAT | os.O_EXCL,
}


class OsFS:
    """The real file system."""

    def open(self, path: str, mode: OpenMode = "r") -> File:
        try:
            flags = _OPEN_FLAGS[mode]
        except KeyError:
            raise ValueError(f"open mode {mode!r} is not one of {sorted(_OPEN_FLAGS)}") from None
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            # a directory opens read-only on POSIX and fails only at the first read: say so now
            os.close(fd)
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        return _OsFile(path, fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def native_path(self, path: str) -> str | None:
        return path


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class OsProcess:
    """The real OS process, asked each time (a forked child is another process); other
    processes of this host are looked up with psutil."""

    def identity(self) -> ProcessId:
        pid = os.getpid()
        return ProcessId(pid, socket.gethostname(), _started_ms(pid))

    def running(self, other: ProcessId) -> bool | None:
        if other.hostname != socket.gethostname():
            return None
        try:
            proc = psutil.Process(other.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            started = int(proc.create_time() * 1000)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except (psutil.Error, OSError):
            return True  # exists but cannot be inspected: assume it is the one named
        # A different start time means the pid was reused by another process.
        return not (other.started_ms and abs(started - other.started_ms) > 2000)


def _started_ms(pid: int) -> int:
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.Error, OSError):
        return 0


class NoFailpoints:
    """Failpoints that never fire (production)."""

    def hit(self, name: str) -> None:
        return None


def _ignore(event: str, details: dict[str, object]) -> None:
    return None


@dataclass(frozen=True)
class Env:
    """Everything a store does I/O, time and failpoints through; one per store.

    ``process`` is who the store runs as (the real process by default; the harness gives a
    simulated machine's). ``observe(event, details)`` is how a store reports something a
    checker may want to see that is not an error (e.g. "metadata epoch ahead of RVF, trusting
    RVF").
    """

    fs: FileSystem = field(default_factory=OsFS)
    clock: Clock = field(default_factory=SystemClock)
    failpoints: Failpoints = field(default_factory=NoFailpoints)
    observe: Callable[[str, dict[str, object]], None] = _ignore
    process: Process = field(default_factory=OsProcess)


def read_all(fs: FileSystem, path: str) -> bytes:
    """The whole file at ``path`` (``FileNotFoundError`` when there is none)."""
    f = fs.open(path, "r")
    try:
        return f.read(0, f.size())
    finally:
        f.close()


def os_env() -> Env:
    """The production env: real files, real time, failpoints off, the real process."""
    return Env()
