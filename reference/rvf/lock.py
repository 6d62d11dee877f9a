"""The writer lock: ``<file>.lock``, created exclusively, naming its holder.

Exactly one writer per file (ADR-032 invariant 1); readers take no lock. The lock file is created
with mode ``x`` (O_CREAT|O_EXCL), written, fsynced, and its directory entry synced. Its record
(little-endian)::

    0x00 u32 magic 0x52564C46       0x10 u64 taken at, ns (env clock)
    0x04 u16 lock format version 1  0x18 u64 holder's process start time, ms (0 = unknown)
    0x06 u16 hostname length        0x20 16B writer id
    0x08 u32 pid                    0x30 hostname (UTF-8), then 16B SHAKE-256/128 checksum
    0x0C u32 reserved               of everything before it

A lock is *stale*, and a new writer may recover it, when its holder is dead (same host, and the
pid is not running, or is a zombie, or is a different process that reused the pid) AND it is
older than ``stale_after`` seconds on the env clock. A lock held from another host is never
recovered automatically: its holder's liveness cannot be checked from here. A lock that stays
unreadable (its writer died between creating and writing it) is recovered after a short grace.
The lock is released only by the writer id that took it.

A lock naming *this* process is judged without guessing: it is held if a writer lock object in
this process took it (same 16-byte writer id), has not released it, and its file system still
works; a second store on the file then gets ``LockHeld``, whichever env it was opened with.
Otherwise it is a ghost, recovered at once: it was left by a store abandoned at a simulated crash
(whose file system the crash killed), or it sits on a copy of a disk (the crash states of a
simulated power loss, built after the recorded store was closed).
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import weakref
from dataclasses import dataclass

import psutil

from crashgate.backends import Clock, FileSystem, LockHeld, read_all

__all__ = ["LOCK_MAGIC", "LockInfo", "WriterLock", "read_lock"]

LOCK_MAGIC = 0x52564C46
LOCK_VERSION = 1
_FIXED = struct.Struct("<IHHIIQQ16s")
_SUM = 16
_UNREADABLE_TRIES = 20
_UNREADABLE_WAIT = 0.05


_LIVE: weakref.WeakSet[WriterLock] = weakref.WeakSet()
"""The writer locks this process holds (to judge locks that name this process)."""


def _checksum(data: bytes) -> bytes:
    return hashlib.shake_256(data).digest(_SUM)


def _process_start_ms(pid: int) -> int:
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.Error, OSError):
        return 0


@dataclass(frozen=True)
class LockInfo:
    pid: int
    hostname: str
    taken_ns: int
    started_ms: int
    writer_id: bytes
    version: int = LOCK_VERSION

    def encode(self) -> bytes:
        host = self.hostname.encode()[:1024]
        body = _FIXED.pack(LOCK_MAGIC, self.version, len(host), self.pid, 0, self.taken_ns,
                           self.started_ms, self.writer_id) + host
        return body + _checksum(body)

    @staticmethod
    def decode(raw: bytes) -> LockInfo | None:
        """The record, or None when it is torn, empty or not a lock record."""
        if len(raw) < _FIXED.size + _SUM:
            return None
        magic, version, host_len, pid, _r, taken, started, wid = _FIXED.unpack_from(raw)
        end = _FIXED.size + host_len
        if magic != LOCK_MAGIC or len(raw) != end + _SUM or _checksum(raw[:end]) != raw[end:]:
            return None
        return LockInfo(pid, raw[_FIXED.size:end].decode(errors="replace"), taken, started,
                        wid, version)

    def alive(self) -> bool | None:
        """Is the holder running? None when it cannot be told (another host)."""
        if self.hostname != socket.gethostname():
            return None
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            started = int(proc.create_time() * 1000)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except (psutil.Error, OSError):
            return True  # exists but cannot be inspected: assume it is the holder
        # A different start time means the pid was reused by another process.
        return not (self.started_ms and abs(started - self.started_ms) > 2000)

    def age(self, now: float) -> float:
        return max(0.0, now - self.taken_ns / 1e9)

    def describe(self, now: float) -> str:
        return (f"pid {self.pid} on host {self.hostname!r}, writer {self.writer_id.hex()[:8]}, "
                f"taken {self.age(now):.1f} s ago")


def read_lock(fs: FileSystem, lock_path: str) -> tuple[bytes, LockInfo | None] | None:
    """``(raw bytes, record or None if unreadable)``, or None when there is no lock file."""
    try:
        raw = read_all(fs, lock_path)
    except FileNotFoundError:
        return None
    return raw, LockInfo.decode(raw)


class WriterLock:
    """The lock of one store file for one writer (``writer_id``, 16 random bytes)."""

    def __init__(self, fs: FileSystem, clock: Clock, store_path: str, *,
                 stale_after: float = 30.0) -> None:
        self.fs = fs
        self.clock = clock
        self.path = store_path + ".lock"
        self.store_path = store_path
        self.stale_after = stale_after
        self.writer_id = os.urandom(16)
        self.held = False

    def holds(self, info: LockInfo) -> bool:
        """Whether this object is the live holder of the lock record ``info``: it took it, has
        not released it, and its file system still works (a simulated crash kills the file
        system of the process it ends, as a real crash ends the process)."""
        if not self.held or self.writer_id != info.writer_id:
            return False
        try:
            self.fs.exists(self.path)
        except OSError:
            return False
        return True

    def _dir(self) -> str:
        return os.path.dirname(self.path) or "."

    def _create(self) -> None:
        info = LockInfo(os.getpid(), socket.gethostname(), int(self.clock.time() * 1e9),
                        _process_start_ms(os.getpid()), self.writer_id)
        f = self.fs.open(self.path, "x")
        try:
            f.write(0, info.encode())
            f.sync()
        finally:
            f.close()
        self.fs.sync_dir(self._dir())
        self.held = True
        _LIVE.add(self)

    def _read_settled(self) -> tuple[bytes, LockInfo | None] | None:
        """Read the lock, giving a writer that is between creating and writing it a moment."""
        got = read_lock(self.fs, self.path)
        for _ in range(_UNREADABLE_TRIES):
            if got is None or got[1] is not None:
                return got
            self.clock.sleep(_UNREADABLE_WAIT)
            got = read_lock(self.fs, self.path)
        return got

    def _recover(self, raw: bytes) -> None:
        """Move the stale lock aside, and remove it only if it is still the one judged stale
        (another writer may have recovered it and taken a fresh lock meanwhile)."""
        aside = f"{self.path}.stale-{self.writer_id.hex()}"
        try:
            self.fs.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = read_lock(self.fs, aside)
        if moved is not None and moved[0] != raw:
            self.fs.rename(aside, self.path)  # it was a fresh lock: put it back
            return
        self.fs.remove(aside)
        self.fs.sync_dir(self._dir())

    def acquire(self) -> None:
        """Take the lock, recovering a stale one; ``LockHeld`` naming the holder otherwise."""
        for _ in range(8):
            try:
                self._create()
                return
            except FileExistsError:
                pass
            got = self._read_settled()
            if got is None:
                continue  # released meanwhile: try again
            raw, info = got
            now = self.clock.time()
            if info is None:
                self._recover(raw)  # unreadable after the grace: its writer died creating it
                continue
            if info.pid == os.getpid() and info.hostname == socket.gethostname():
                if not any(w.holds(info) for w in list(_LIVE)):
                    self._recover(raw)  # a ghost: no writer in this process holds it
                    continue
                raise LockHeld(self.store_path, f"{info.describe(now)}; another store open in "
                               "this process holds it")
            alive = info.alive()
            if alive is False and info.age(now) > self.stale_after:
                self._recover(raw)
                continue
            if alive is False:
                wait = self.stale_after - info.age(now)
                holder = (f"{info.describe(now)}; that process is not running, so the lock is "
                          f"recoverable in {wait:.1f} s")
            elif alive is None:
                holder = (f"{info.describe(now)}; a lock from another host is never recovered "
                          "automatically")
            else:
                holder = f"{info.describe(now)}; that process is running"
            raise LockHeld(self.store_path, holder)
        raise LockHeld(self.store_path, "other writers keep taking it (gave up after 8 tries)")

    def release(self) -> None:
        """Remove the lock if it is still this writer's."""
        if not self.held:
            return
        self.held = False
        got = read_lock(self.fs, self.path)
        if got is None or got[1] is None or got[1].writer_id != self.writer_id:
            return
        self.fs.remove(self.path)
        self.fs.sync_dir(self._dir())
