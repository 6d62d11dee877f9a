"""Benchmark: the floor a backend's recovery puts under crash states per second.

    python tests/benchmarks/bench_read_floor.py [--profile small|large] [--states N]
                                                [--ops N] [--seed N] [backend ...]

For each backend: the run's crash states are built as ``crashgate powerloss`` builds them, each
is recovered (opened), and only the reading back is timed (``model.read_state``: every key,
every vector id the run wrote; the best of three reads of each state). Whatever else a check
costs (building the image, opening the store, judging) comes on top, so one core can never
check more states a second than the ceiling printed here: that is what the recovery itself must
read. Prints figures; asserts nothing (speed is not a test).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

from crashgate.backends import resolve
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashpool import available_cores
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.model import read_state
from crashgate.harness.powerloss import POWER_MODELS, crash_positions, record_run
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.workload import PROFILES

W = 44   # backend column


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backends", nargs="*", default=["json", "rvf", "rvlite"],
                    help="backend names (default: json rvf rvlite)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="small",
                    help="workload shape (default small)")
    ap.add_argument("--states", type=int, default=1500, help="crash-state budget (default 1500)")
    ap.add_argument("--ops", type=int, default=250, help="workload length (default 250)")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    args = ap.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"profile {args.profile}, {args.ops} ops, up to {args.states} states, seed "
          f"{args.seed}, {available_cores()} cores, load average {load}\n")
    print(f"{'backend':<{W}} {'states':>7} {'read ms/state':>14} {'ceiling/s/core':>15} "
          f"{'x cores':>8}")
    for name in args.backends:
        spec = resolve(name)
        rec = record_run(spec, args.ops, args.seed, PROFILES[args.profile])
        models = [CrashModel.PROCESS, *POWER_MODELS]
        spent, read = 0.0, 0
        for _, image in enumerate_crash_states(rec.base, rec.disk.trace, crash_positions(rec),
                                               models, args.states, args.seed):
            try:
                store = reopen_after_crash(spec.open, rec.path, sim_env(SimDisk(image)),
                                           rec.declaration).store
            except Exception:  # noqa: BLE001 - a state that does not open reads nothing
                continue
            try:
                best = float("inf")
                for _ in range(3):   # the best of three: the read, not the machine's noise
                    t = time.perf_counter()
                    with contextlib.suppress(Exception):
                        read_state(store, rec.vector_ids)
                    best = min(best, time.perf_counter() - t)
                spent += best
                read += 1
            finally:
                with contextlib.suppress(Exception):
                    store.close()
        per = spent / read if read else float("nan")
        ceiling = 1 / per if read and per > 0 else float("nan")
        print(f"{name:<{W}} {read:>7} {per * 1e3:>14.3f} {ceiling:>15.0f} "
              f"{ceiling * available_cores():>8.0f}")


if __name__ == "__main__":
    main()
