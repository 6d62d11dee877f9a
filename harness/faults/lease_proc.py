"""The lease holder that dies mid-write: the child side of ``LeaseExpiry``.

    python -m crashgate.harness.faults.lease_proc SPEC OUT --ops K --seed S --crash-at WHERE

Runs in a process of its own so that its death is real (a store may check whether its lock's
holder pid is alive). On a simulated disk with a virtual clock it opens the store for writing,
runs ``K`` ops of the seeded workload one virtual second apart (all acknowledged), then arms the
crash (``sync``: before the next fsync; ``failpoint:NAME``: at that failpoint) and starts op
``K + 1``. Whatever happens, it pickles what it left behind to OUT (the page cache image, the
clock, the ops, how far they got) and exits at once, never closing the store: a page refresh.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import traceback
from typing import Any

from crashgate.backends import SimulatedCrash, resolve
from crashgate.harness.clock import VirtualClock
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.process import ProcessCrash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import SimProcess, sim_env
from crashgate.harness.workload import PROFILES, random_workload

__all__ = ["DATA_DIR", "STORE_PATH", "main"]

DATA_DIR = "/data"
STORE_PATH = f"{DATA_DIR}/store"
HOLDER_PID = 2
"""The holder's virtual pid (``simenv.SimProcess``)."""


def _run(spec: str, ops_count: int, seed: int, crash_at: str) -> dict[str, Any]:
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    clock = VirtualClock()
    fps = ArmedFailpoints()
    crash = ProcessCrash(on="sync")
    # another process of the simulated machine than the next writers': its death is real
    env = sim_env(disk, clock, fps, process=SimProcess(HOLDER_PID))
    if crash_at == "sync":
        env = crash.install(env)
    out: dict[str, Any] = {"pid": os.getpid(), "acknowledged": 0, "crashed": None,
                           "error": None, "ops": []}
    try:
        out["opened_at"] = clock.time()
        store = resolve(spec).open(STORE_PATH, env)
        ops = random_workload(store.declaration, ops_count + 1, seed, PROFILES["small"])
        out["ops"] = ops
        for op in ops[:ops_count]:
            clock.advance(1.0)
            op.run(store)
            out["acknowledged"] += 1
        if crash_at == "sync":
            crash.arm()
        else:
            fps.arm(crash_at.removeprefix("failpoint:"))
        clock.advance(1.0)
        try:
            ops[ops_count].run(store)
        except SimulatedCrash as exc:
            out["crashed"] = exc.where
        else:
            out["acknowledged"] += 1  # the crash point was not on this write's path
    except Exception:  # noqa: BLE001 - reported to the parent, which judges it
        out["error"] = traceback.format_exc(limit=6)
    image = disk.cache_image()
    out.update(files=dict(image.files), dirs=sorted(image.dirs), wall=clock.time(),
               mono=clock.monotonic())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crashgate.harness.faults.lease_proc")
    p.add_argument("spec")
    p.add_argument("out")
    p.add_argument("--ops", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crash-at", default="sync")
    args = p.parse_args(argv)
    result = _run(args.spec, args.ops, args.seed, args.crash_at)
    with open(args.out, "wb") as f:
        pickle.dump(result, f)
        f.flush()
        os.fsync(f.fileno())
    sys.stdout.flush()
    os._exit(0)  # die as a refreshed page does: no close, no atexit, no finalizers


if __name__ == "__main__":
    main()
