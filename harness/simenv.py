"""Glue: an ``Env`` whose file system is a ``SimDisk``, with a virtual clock and armed
failpoints.

An env is bound to the disk's current process: after ``disk.crash()`` its file system is dead,
so build a new env (``sim_env(disk, clock, failpoints)``) to reopen the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from crashgate.backends.env import Env
from crashgate.harness.clock import VirtualClock
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.simdisk import SimDisk

__all__ = ["sim_env"]


def sim_env(
    disk: SimDisk, clock: VirtualClock | None = None, failpoints: ArmedFailpoints | None = None,
    *, observe: Callable[[str, dict[str, object]], None] | None = None,
    makedirs: Iterable[str] = (),
) -> Env:
    """An env on ``disk`` (a fresh ``VirtualClock`` and ``ArmedFailpoints`` unless given).

    ``makedirs`` directories are created first (through the file system, so they are in the
    trace and pending until their parents are synced; put directories that must survive
    power loss in the base image instead: ``SimDisk(DiskImage.empty(dir))``).
    """
    fs = disk.fs()
    for d in makedirs:
        fs.makedirs(d)
    env = Env(fs=fs, clock=clock if clock is not None else VirtualClock(),
              failpoints=failpoints if failpoints is not None else ArmedFailpoints())
    if observe is not None:
        env = Env(fs=env.fs, clock=env.clock, failpoints=env.failpoints, observe=observe)
    return env
