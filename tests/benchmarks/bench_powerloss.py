"""Benchmark: crash states checked per second, per backend, serially and with every core, per
crash model, and where the time goes.

    python tests/benchmarks/bench_powerloss.py [--profile small|large] [--states N] [--ops N]
                                               [--jobs N] [--seed N] [backend ...]

For each backend, in one run: states/s in one process and with ``--jobs`` processes (default:
every core) on the same seed (the two reports must agree; a difference is printed), states/s
of each crash model alone (a fifth of the budget each, one process), and the share of the
serial run's time spent recording the workload, planning, materialising the crash images,
recovering (open + read the store) and judging. Prints figures; asserts nothing (speed is not a
test). Issue 9's bar on this machine: json >= 5,000 states/s, sqlite WAL/FULL >= 500, rvf and
rvlite >= 500 (small profile) and >= 50 (large).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from crashgate.backends import resolve
from crashgate.harness.crashpool import available_cores
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.powerloss import PowerLossReport, run_powerloss
from crashgate.harness.workload import PROFILES

DEFAULT = ["memory", "json", "sqlite?journal_mode=WAL&synchronous=FULL",
           "sqlite?journal_mode=DELETE&synchronous=FULL", "rvf", "rvlite"]
PHASES = ("workload", "plan", "materialise", "recover", "judge")
W = 44   # backend column


def _rate(r: PowerLossReport) -> float:
    return r.states_checked / r.seconds if r.seconds else 0.0


def _same(a: PowerLossReport, b: PowerLossReport) -> bool:
    def key(r: PowerLossReport) -> Any:
        return (r.states_checked, r.states_by_model, dict(r.violations),
                {k: (v.state, v.detail) for k, v in r.first.items()})
    return bool(key(a) == key(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backends", nargs="*", default=DEFAULT,
                    help="backend names (default: the six reference configurations)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="small",
                    help="workload shape (default small)")
    ap.add_argument("--states", type=int, default=1500, help="crash-state budget (default 1500)")
    ap.add_argument("--ops", type=int, default=250, help="workload length (default 250)")
    ap.add_argument("--jobs", type=int, default=available_cores(),
                    help=f"processes of the parallel run (default every core: "
                    f"{available_cores()})")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    args = ap.parse_args()
    profile = PROFILES[args.profile]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"profile {args.profile}, {args.ops} ops, {args.states} states, seed {args.seed}, "
          f"{available_cores()} cores, load average {load}\n")

    runs: dict[str, tuple[PowerLossReport, PowerLossReport, dict[str, float]]] = {}
    print(f"{'backend':<{W}} {'states':>6} {'1 proc/s':>9} {f'{args.jobs} procs/s':>10} "
          f"{'speedup':>7} {'violations':>10}")
    for name in args.backends:
        try:
            spec = resolve(name)
            common = {"seed": args.seed, "ops": args.ops, "budget": args.states,
                      "profile": profile}
            serial = run_powerloss(spec, jobs=1, **common)
            parallel = run_powerloss(spec, jobs=args.jobs, **common)
            per_model = {}
            for m in CrashModel:
                alone = run_powerloss(spec, jobs=1, seed=args.seed, ops=args.ops,
                                      budget=max(args.states // 5, 1), profile=profile,
                                      models=[m])
                per_model[m.value] = _rate(alone) if alone.states_checked else float("nan")
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            print(f"{name:<{W}} unavailable: {type(exc).__name__}: {exc}")
            continue
        runs[name] = (serial, parallel, per_model)
        speedup = _rate(parallel) / _rate(serial) if _rate(serial) else 0.0
        agree = "" if _same(serial, parallel) else "  REPORTS DIFFER"
        print(f"{name:<{W}} {serial.states_checked:>6} {_rate(serial):>9.0f} "
              f"{_rate(parallel):>10.0f} {speedup:>6.2f}x {sum(serial.violations.values()):>10}"
              f"{agree}  ({parallel.jobs} used)", flush=True)

    print(f"\nstates/s per crash model alone (budget {max(args.states // 5, 1)} each, 1 process)")
    print(f"{'backend':<{W}} " + " ".join(f"{m.value:>8}" for m in CrashModel))
    for name, (_, _, per_model) in runs.items():
        print(f"{name:<{W}} " + " ".join(f"{per_model[m.value]:>8.0f}" for m in CrashModel))

    print("\nwhere the serial run's time goes (% of its wall time; the rest is bookkeeping), "
          "and what the parallel run spent on top, summed over its processes")
    print(f"{'backend':<{W}} " + " ".join(f"{p:>11}" for p in PHASES)
          + f" {'seconds':>8} {'+workers':>9}")
    for name, (serial, parallel, _) in runs.items():
        shares = " ".join(f"{100 * serial.phases.get(p, 0.0) / serial.seconds:>10.1f}%"
                          for p in PHASES)
        # forked children inherit the run and images: nothing extra; spawned workers
        # record the run again and rebuild each image they judge
        extra = (parallel.phases.get("rematerialise", 0.0)
                 + parallel.phases.get("workload", 0.0) - serial.phases.get("workload", 0.0))
        print(f"{name:<{W}} {shares} {serial.seconds:>8.2f} {extra:>8.2f}s")


if __name__ == "__main__":
    main()
