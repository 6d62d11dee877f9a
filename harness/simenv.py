"""Glue: an ``Env`` whose file system is a ``SimDisk``, with a virtual clock, armed failpoints
and a process of the simulated machine.

An env is bound to the disk's current process: after ``disk.crash()`` its file system is dead,
so build a new env (``sim_env(disk, clock, failpoints)``) to reopen the store.

Every simulated env runs as the same virtual process (``SIM_PROCESS``: pid 1 on host
``SIM_HOST``), whichever OS process runs it: a run recorded in one OS process and recovered in a
worker forked from it is one process, as it is in a serial run, so what a store writes about
who it is (the RVF lock names its holder) judges the same everywhere. A process that must be
another one of the simulated machine (the lease holder that a fault kills) gets another pid with
``SimProcess(pid)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from crashgate.backends.env import Env, ProcessId
from crashgate.harness.clock import VirtualClock
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.simdisk import SimDisk

__all__ = ["SIM_HOST", "SIM_PROCESS", "SimProcess", "sim_env"]

SIM_HOST = "crashgate-simulated-host"
SIM_PROCESS = ProcessId(1, SIM_HOST, 0)
"""The process every simulated env runs as unless told otherwise (start time unknown)."""


class SimProcess:
    """A process of the simulated machine (``backends.Process``), which runs one process at a
    time: asked about itself, it is running; about another pid of its host, not running (the
    process that had it ended: a crashed writer, a killed lease holder); about another host,
    it cannot tell. No OS process is ever looked up: a virtual pid names none."""

    __slots__ = ("_me",)

    def __init__(self, pid: int = SIM_PROCESS.pid) -> None:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
            raise ValueError(f"SimProcess(pid={pid!r}): give a virtual pid of at least 1 "
                             f"({SIM_PROCESS.pid} is the harness's own)")
        self._me = ProcessId(pid, SIM_HOST, SIM_PROCESS.started_ms)

    def identity(self) -> ProcessId:
        return self._me

    def running(self, other: ProcessId) -> bool | None:
        if other.hostname != SIM_HOST:
            return None
        return other.pid == self._me.pid

    def __repr__(self) -> str:
        return f"SimProcess(pid={self._me.pid})"


_HARNESS = SimProcess()


def sim_env(
    disk: SimDisk, clock: VirtualClock | None = None, failpoints: ArmedFailpoints | None = None,
    *, observe: Callable[[str, dict[str, object]], None] | None = None,
    makedirs: Iterable[str] = (), process: SimProcess | None = None,
) -> Env:
    """An env on ``disk`` (a fresh ``VirtualClock`` and ``ArmedFailpoints`` unless given),
    running as ``process`` (default: ``SIM_PROCESS``, the same for every env).

    ``makedirs`` directories are created first (through the file system, so they are in the
    trace and pending until their parents are synced; put directories that must survive
    power loss in the base image instead: ``SimDisk(DiskImage.empty(dir))``).
    """
    fs = disk.fs()
    for d in makedirs:
        fs.makedirs(d)
    env = Env(fs=fs, clock=clock if clock is not None else VirtualClock(),
              failpoints=failpoints if failpoints is not None else ArmedFailpoints(),
              process=process if process is not None else _HARNESS)
    if observe is not None:
        env = Env(fs=env.fs, clock=env.clock, failpoints=env.failpoints, observe=observe,
                  process=env.process)
    return env
