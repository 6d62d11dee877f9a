"""Lease expiry under a virtual clock (ADR-032's browser writer lease).

The holder runs in a process of its own (``lease_proc``) on a simulated disk and a virtual
clock, and dies in the middle of a write, as a page refresh kills a tab's script. Its page cache
and its clock come back here: the next writers open the store on that disk, with a
``VirtualClock`` that continues where the holder's stopped, and the fault moves time to make the
holder's lease stale. The holder's death is real, so a store that checks whether a lock's
holder is alive sees it dead, as it would after a refresh.

A holder can also stay alive, in this process, on a clock of its own (``holder_clock``):
``pause_holder`` then lets time pass for everyone but it, as for a frozen background tab, a
process stopped by SIGSTOP or a long GC pause: when it comes back its own clock says its lease
is as fresh as when it stopped, and only the fencing token can tell it otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from crashgate.backends import Capability, Declaration, Env
from crashgate.harness.clock import VirtualClock
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.base import Fault, requires
from crashgate.harness.faults.lease_proc import STORE_PATH
from crashgate.harness.faults.writers import child_pythonpath
from crashgate.harness.ops import Op
from crashgate.harness.recovery import STALE_AFTER
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env

__all__ = ["STALE_AFTER", "HolderRun", "LeaseExpiry"]

HOLDER_TIMEOUT = 120.0


@dataclass(frozen=True)
class HolderRun:
    """What the dead holder left: its page cache, its clock, its ops and how far they got.

    ``ops[:acknowledged]`` returned; when ``crashed`` names where it died, op ``acknowledged``
    was in flight (indeterminate)."""

    image: DiskImage
    wall: float
    monotonic: float
    opened_at: float
    ops: tuple[Op, ...]
    acknowledged: int
    crashed: str | None
    error: str | None
    pid: int

    @property
    def in_flight(self) -> bool:
        return self.crashed is not None


class LeaseExpiry(Fault):
    """Kill the lease holder mid-write at ``crash_at`` (``sync`` or ``failpoint:NAME``), then
    let its lease go stale on a virtual clock."""

    def __init__(self, *, crash_at: str = "sync", stale_after: float = STALE_AFTER,
                 pythonpath: Iterable[str] = ()) -> None:
        if crash_at != "sync" and not crash_at.startswith("failpoint:"):
            raise ValueError(f"LeaseExpiry crash_at={crash_at!r}: give 'sync' or "
                             "'failpoint:NAME' with a failpoint the store declares")
        self.crash_at = crash_at
        self.stale_after = stale_after
        self.clock = VirtualClock()
        self.holder_clock = VirtualClock()
        self._pythonpath = tuple(pythonpath)
        self.holder: HolderRun | None = None
        crash = "fs" if crash_at == "sync" else "failpoints"
        self.levers = frozenset({"clock", "process", crash})
        self._events: list[str] = []

    @property
    def name(self) -> str:
        return f"LeaseExpiry(holder killed at {self.crash_at}, stale after {self.stale_after:g} s)"

    def needs(self, decl: Declaration) -> str | None:
        reason = requires(decl, Capability.LEASE, what="heartbeat writer lease")
        if reason is None and self.crash_at.startswith("failpoint:"):
            name = self.crash_at.removeprefix("failpoint:")
            if name not in decl.failpoints:
                return f"the backend declares no failpoint {name!r}"
        return reason

    def run_holder(self, spec: str, *, ops: int, seed: int, workdir: Path) -> HolderRun:
        """Run the holder in a child process until it dies; set ``clock`` to its last time."""
        out = workdir / f"holder-{os.getpid()}-{len(self._events)}.pickle"
        env = dict(os.environ, PYTHONPATH=child_pythonpath(self._pythonpath))
        argv = [sys.executable, "-m", "crashgate.harness.faults.lease_proc", spec, str(out),
                "--ops", str(ops), "--seed", str(seed), "--crash-at", self.crash_at]
        done = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=HOLDER_TIMEOUT, check=False)
        if not out.exists():
            raise RuntimeError(f"the lease holder process left no result (exit "
                               f"{done.returncode}): {done.stderr[-2000:]}")
        with out.open("rb") as f:
            raw = pickle.load(f)  # noqa: S301 - written by our own child a moment ago
        out.unlink()
        holder = HolderRun(
            DiskImage(raw["files"], frozenset(raw["dirs"])), raw["wall"], raw["mono"],
            raw.get("opened_at", raw["wall"]), tuple(raw["ops"]), raw["acknowledged"],
            raw["crashed"], raw["error"], raw["pid"])
        self.holder = holder
        self.clock = VirtualClock(holder.wall, holder.monotonic)
        self._events.append(f"holder pid {holder.pid} ran {holder.acknowledged} writes and "
                            + (f"died at {holder.crashed}" if holder.crashed else
                               "died between writes (the crash point was not on the path)"))
        return holder

    @property
    def path(self) -> str:
        return STORE_PATH

    def env(self, disk: SimDisk, *, holder: bool = False) -> Env:
        """An env on ``disk``: for the next writer, on this fault's clock; with ``holder``, for
        a live holder in this process, on ``holder_clock``."""
        return sim_env(disk, self.holder_clock if holder else self.clock, ArmedFailpoints())

    def install(self, env: Env) -> Env:
        return dataclasses.replace(env, clock=self.clock)

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass for everyone (both clocks)."""
        if seconds:
            self.clock.advance(seconds)
            self.holder_clock.advance(seconds)
            self._events.append(f"clock +{seconds:g} s")

    def pause_holder(self, seconds: float) -> None:
        """Let ``seconds`` pass for everyone but the live holder, whose clock stands still."""
        self.clock.advance(seconds)
        self._events.append(f"holder paused while {seconds:g} s passed for the others")

    def expire(self, margin: float = 1.0) -> None:
        """Move time until the holder's lease is stale for sure: ``stale_after + margin``
        seconds after its last possible heartbeat (its death)."""
        last = self.holder.wall if self.holder is not None else self.clock.time()
        target = last + self.stale_after + margin
        if target > self.clock.time():
            self.wait(target - self.clock.time())

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(self._events)
