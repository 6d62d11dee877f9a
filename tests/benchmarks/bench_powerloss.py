"""Benchmark: crash states checked per second for each reference store (one core).

    python tests/benchmarks/bench_powerloss.py [--states N] [backend ...]

Prints figures; asserts nothing (speed is not a test). The aim (issue 2): json >= 2,000/s,
sqlite >= 200/s.
"""

from __future__ import annotations

import argparse

from crashgate.backends import resolve
from crashgate.harness.powerloss import run_powerloss
from crashgate.harness.workload import PROFILES

DEFAULT = ["memory", "json", "sqlite?journal_mode=WAL&synchronous=FULL",
           "sqlite?journal_mode=DELETE&synchronous=FULL", "rvf", "rvlite"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("backends", nargs="*", default=DEFAULT)
    ap.add_argument("--states", type=int, default=1500)
    ap.add_argument("--ops", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"{'backend':<46} {'states':>7} {'seconds':>8} {'states/s':>9} {'violations':>10}")
    for name in args.backends:
        try:
            spec = resolve(name)
            r = run_powerloss(spec, seed=args.seed, ops=args.ops, budget=args.states,
                              profile=PROFILES["small"])
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            print(f"{name:<46} unavailable: {exc}")
            continue
        rate = r.states_checked / r.seconds if r.seconds else 0.0
        print(f"{name:<46} {r.states_checked:>7} {r.seconds:>8.2f} {rate:>9.0f} "
              f"{sum(r.violations.values()):>10}")


if __name__ == "__main__":
    main()
