"""The RVF writer lock: one writer across real OS processes, unlimited readers, stale-lock
recovery, release by the owning writer id only; on a simulated machine, one virtual process in
any OS process, whose other pids are not running and which never asks the OS about them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import pytest

from crashgate.backends import Env, LockHeld, OsFS, os_env
from crashgate.harness.clock import VirtualClock
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import SIM_HOST, SIM_PROCESS, SimProcess, sim_env
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


# -- the simulated machine: one virtual process, in any OS process ------------------------------


def _reopen_copy(image: DiskImage) -> tuple[bytes | None, int]:
    """In another OS process: open a copy of a simulated disk for writing, write, read back."""
    with open_rvf("/data/s.rvf", sim_env(SimDisk(image))) as store:
        store.put("b", b"2")
        return store.get("a"), os.getpid()


def test_a_simulated_lock_is_judged_the_same_in_another_os_process() -> None:
    disk = SimDisk(DiskImage.empty("/data"))
    store = open_rvf("/data/s.rvf", sim_env(disk))
    store.put("a", b"1")
    image = disk.cache_image()   # a crash state: the writer's lock still in it
    store.close()
    got = read_lock(SimDisk(image).fs(), "/data/s.rvf.lock")
    assert got is not None and got[1] is not None and got[1].holder == SIM_PROCESS
    # a worker forked to check crash states recovers the copy as the recording process would:
    # its own (virtual) process's lock that no writer holds, not a live parent's
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
        value, pid = pool.submit(_reopen_copy, image).result(timeout=120)
    assert value == b"1" and pid != os.getpid()


def _lock_on(disk: SimDisk, info: LockInfo) -> None:
    f = disk.fs().open("/data/s.rvf.lock", "x")
    f.write(0, info.encode())
    f.close()


def test_the_simulated_machine_answers_for_its_pids_without_asking_the_os(monkeypatch) -> None:
    def no_os_lookup(*args: object) -> None:
        raise AssertionError("psutil was asked about a process of the simulated machine")

    monkeypatch.setattr(psutil, "Process", no_os_lookup)
    clock = VirtualClock()
    # another pid of the simulated host: a process that ended (a killed lease holder)
    disk = SimDisk(DiskImage.empty("/data"))
    _lock_on(disk, LockInfo(7, SIM_HOST, int(clock.time() * 1e9), 0, b"d" * 16))
    assert SimProcess().running(SimProcess(7).identity()) is False
    with pytest.raises(LockHeld, match="pid 7 .*not running, so the lock is recoverable in"):
        open_rvf("/data/s.rvf", sim_env(disk, clock))
    clock.advance(31.0)
    with open_rvf("/data/s.rvf", sim_env(disk, clock)) as writer:
        writer.put("a", b"1")
    # the real host is another host to the simulated machine: never recovered automatically
    disk = SimDisk(DiskImage.empty("/data"))
    _lock_on(disk, LockInfo(os.getpid(), socket.gethostname(), 0, 0, b"r" * 16))
    clock.advance(10_000.0)
    with pytest.raises(LockHeld, match="another host is never recovered"):
        open_rvf("/data/s.rvf", sim_env(disk, clock))


def test_a_live_simulated_writer_holds_its_lock_against_any_env_of_the_machine() -> None:
    disk = SimDisk(DiskImage.empty("/data"))
    with open_rvf("/data/s.rvf", sim_env(disk)), \
            pytest.raises(LockHeld, match="another store open in this process holds it"):
        open_rvf("/data/s.rvf", sim_env(disk, VirtualClock(), process=SimProcess()))


def test_a_virtual_pid_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"SimProcess\(pid=0\).*at least 1"):
        SimProcess(0)
