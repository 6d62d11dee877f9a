"""The writer lock: ``<file>.lock``, created exclusively, naming its holder.

Exactly one writer per file (ADR-032 invariant 1); readers take no lock. The lock file is created
with mode ``x`` (O_CREAT|O_EXCL), written, fsynced, and its directory entry synced. Its record
(little-endian)::

    0x00 u32 magic 0x52564C46       0x10 u64 taken at, ns (env clock)
    0x04 u16 lock format version 1  0x18 u64 holder's process start time, ms (0 = unknown)
    0x06 u16 hostname length        0x20 16B writer id
    0x08 u32 pid                    0x30 hostname (UTF-8), then 16B SHAKE-256/128 checksum
    0x0C u32 reserved               of everything before it

"This process" and the liveness of others are the env's (``env.process``, ``backends.Process``):
the real OS process by default (pid, host name and start time; other processes looked up with
psutil), or, under the harness, the one process of a simulated machine, which is the same in any
OS process that runs the simulation: a run recorded in one OS process and recovered in another
(a worker forked to check crash states) is one process, as in a serial run.

A lock is *stale*, and a new writer may recover it, when its holder is dead (same host, and the
pid is not running, or is a zombie, or is a different process that reused the pid) AND it is
older than ``stale_after`` seconds on the env clock. A lock held from another host is never
recovered automatically: its holder's liveness cannot be checked from here. A lock that stays
unreadable (its writer died between creating and writing it) is recovered after a short grace.
The lock is released only by the writer id that took it. On a simulated machine, a lock naming
another pid of its host names a process that is not running (the machine runs one at a time;
the holder killed by a lease fault is another, dead, one), and one naming a real host is from
another host: no OS process is ever looked up by a virtual pid.

A lock naming *this* process is judged without guessing: it is held if a writer lock object in
this OS process took it (same 16-byte writer id), has not released it, and its file system
still works; a second store on the file then gets ``LockHeld``, whichever env it was opened
with. Otherwise it is a ghost, recovered at once: it was left by a store abandoned at a
simulated crash (whose file system the crash killed), or it sits on a copy of a disk (the crash
states of a simulated power loss, built after the recorded store was closed, recovered in this
OS process or in a worker forked from it). A simulated disk lives in one OS process's memory,
so every live holder of a lock on it is in that OS process's table.
"""

from __future__ import annotations

import hashlib
import os
import struct
import weakref
from dataclasses import dataclass

from crashgate.backends import Clock, FileSystem, LockHeld, OsProcess, Process, ProcessId, read_all

__all__ = ["LOCK_MAGIC", "LockInfo", "WriterLock", "read_lock"]

LOCK_MAGIC = 0x52564C46
LOCK_VERSION = 1
_FIXED = struct.Struct("<IHHIIQQ16s")
_SUM = 16
_UNREADABLE_TRIES = 20
_UNREADABLE_WAIT = 0.05


_LIVE: weakref.WeakSet[WriterLock] = weakref.WeakSet()
"""The writer locks this OS process holds (to judge locks that name this process)."""


def _checksum(data: bytes) -> bytes:
    return hashlib.shake_256(data).digest(_SUM)


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

    @property
    def holder(self) -> ProcessId:
        return ProcessId(self.pid, self.hostname, self.started_ms)

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
    """The lock of one store file for one writer (``writer_id``, 16 random bytes), taken as
    ``process`` (the env's; default the real OS process)."""

    def __init__(self, fs: FileSystem, clock: Clock, store_path: str, *,
                 stale_after: float = 30.0, process: Process | None = None) -> None:
        self.fs = fs
        self.clock = clock
        self.process: Process = process if process is not None else OsProcess()
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
        me = self.process.identity()
        info = LockInfo(me.pid, me.hostname, int(self.clock.time() * 1e9), me.started_ms,
                        self.writer_id)
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
            me = self.process.identity()
            if info.pid == me.pid and info.hostname == me.hostname:
                if not any(w.holds(info) for w in list(_LIVE)):
                    self._recover(raw)  # a ghost: no writer in this process holds it
                    continue
                raise LockHeld(self.store_path, f"{info.describe(now)}; another store open in "
                               "this process holds it")
            alive = self.process.running(info.holder)
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
