"""The RVF writer lock: one writer across real OS processes, unlimited readers, stale-lock
recovery, release by the owning writer id only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashgate.backends import Env, LockHeld, OsFS, os_env
from crashgate.reference.rvf import open_rvf
from crashgate.reference.rvf.lock import LOCK_MAGIC, LockInfo, WriterLock, read_lock


class ShiftedClock:
    """Real time moved ``offset`` seconds ahead; ``sleep`` returns at once."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += seconds


Holder = tuple[str, "subprocess.Popen[str]"]
HOLDER = r"""
import sys
from crashgate.backends import os_env
from crashgate.reference.rvf import open_rvf
store = open_rvf(sys.argv[1], os_env())
print("ready", flush=True)
for line in sys.stdin:
    key, value = line.split()
    store.put(key, value.encode())
    print("ok", store.epoch, flush=True)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    path = str(tmp_path / "held.rvf")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield path, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def ask(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_second_writer_process_is_refused_while_the_first_works(holder: Holder) -> None:
    path, proc = holder
    with pytest.raises(LockHeld) as err:
        open_rvf(path, os_env())
    message = str(err.value)
    assert f"pid {proc.pid}" in message and socket.gethostname() in message
    assert "ELOCK" in message and "that process is running" in message
    assert ask(proc, "a 1") == "ok 1"  # the first writer is unharmed
    with open_rvf(path, os_env(), readonly="true") as reader:  # readers are unlimited
        assert reader.get("a") == b"1"
        with open_rvf(path, os_env(), readonly="true") as second_reader:
            assert second_reader.get("a") == b"1"
    assert ask(proc, "b 2") == "ok 2"


def test_a_killed_writers_lock_is_recovered_once_stale(holder: Holder) -> None:
    path, proc = holder
    assert ask(proc, "a 1") == "ok 1"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(path + ".lock")
    with pytest.raises(LockHeld, match="not running, so the lock is recoverable in"):
        open_rvf(path, os_env())  # dead, but younger than 30 s
    with open_rvf(path, Env(clock=ShiftedClock(31.0))) as writer:
        assert writer.get("a") == b"1"
        writer.put("b", b"2")
        got = read_lock(OsFS(), path + ".lock")
        assert got is not None and got[1] is not None and got[1].pid == os.getpid()
    assert not os.path.exists(path + ".lock")  # released on close


def test_stale_after_option(holder: Holder) -> None:
    path, proc = holder
    proc.kill()
    proc.wait()
    time.sleep(0.01)
    with open_rvf(path, os_env(), stale_after="0.001") as writer:
        writer.put("x", b"1")


def test_lock_record_roundtrip_and_damage() -> None:
    info = LockInfo(1234, "host-ü", 5_000_000_000, 42, b"w" * 16)
    raw = info.encode()
    assert int.from_bytes(raw[:4], "little") == LOCK_MAGIC
    assert LockInfo.decode(raw) == info
    for bad in (raw[:-1], raw[:10], b"", raw[:20] + b"\xff" + raw[21:]):
        assert LockInfo.decode(bad) is None


def test_the_lock_names_its_holder_and_is_released_only_by_it(tmp_path: Path) -> None:
    path = str(tmp_path / "s.rvf")
    store = open_rvf(path, os_env())
    got = read_lock(OsFS(), path + ".lock")
    assert got is not None and got[1] is not None
    assert (got[1].pid, got[1].hostname) == (os.getpid(), socket.gethostname())
    with pytest.raises(LockHeld, match="another store open in this process"):
        open_rvf(path, os_env())
    # Someone else's record under the same name: close must leave it alone.
    other = LockInfo(os.getpid() + 1, "elsewhere", 0, 0, b"o" * 16).encode()
    with open(path + ".lock", "wb") as fh:
        fh.write(other)
    store.close()
    with open(path + ".lock", "rb") as fh:
        assert fh.read() == other


def test_a_lock_from_another_host_is_never_recovered(tmp_path: Path) -> None:
    path = str(tmp_path / "s.rvf")
    with open(path + ".lock", "wb") as fh:
        fh.write(LockInfo(1, "some-other-host", 0, 0, b"o" * 16).encode())
    with pytest.raises(LockHeld, match="another host is never recovered"):
        open_rvf(path, Env(clock=ShiftedClock(10_000.0)))


def test_ghost_and_unreadable_locks_are_recovered(tmp_path: Path) -> None:
    path = str(tmp_path / "s.rvf")
    # A record naming this process, but no store here holds it (a store abandoned at a crash).
    with open(path + ".lock", "wb") as fh:
        fh.write(LockInfo(os.getpid(), socket.gethostname(), 0, 0, b"g" * 16).encode())
    with open_rvf(path, os_env()) as s:
        s.put("a", b"1")
    # A lock file its writer never finished (empty): recovered after a short grace.
    with open(path + ".lock", "wb"):
        pass
    clock = ShiftedClock()
    lock = WriterLock(OsFS(), clock, path)
    lock.acquire()
    assert clock.offset > 0 and lock.held
    lock.release()
    assert not os.path.exists(path + ".lock")


def test_readers_and_lock_false_take_no_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "s.rvf")
    open_rvf(path, os_env()).close()
    with open_rvf(path, os_env(), readonly="true"), open_rvf(path, os_env(), lock="false"):
        assert not os.path.exists(path + ".lock")
