"""Benchmark: wall time of a certification, row by row (default: the reference RVF store at the
standard budget; the aim is under a minute on a 2-core machine).

    python tests/benchmarks/bench_certify.py [--budget standard] [backend ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from crashgate.backends import resolve
from crashgate.harness.certify import certify
from crashgate.scenarios.adr032 import all_rows
from crashgate.scenarios.table import BUDGETS, RowContext


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("backends", nargs="*", default=["rvf"])
    ap.add_argument("--budget", choices=list(BUDGETS), default="standard")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    for name in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            cert = certify(resolve(name), all_rows(), budget=BUDGETS[args.budget],
                           seed=args.seed, workdir=Path(tmp), context_factory=RowContext)
            total = time.perf_counter() - t0
        print(f"{name} ({args.budget} budget, seed {args.seed}): {cert.verdict.value}, "
              f"{total:.1f} s wall")
        for r in cert.results:
            print(f"  {r.row.key:<10} {r.evidence.verdict.value:<7} {r.seconds:6.2f} s")


if __name__ == "__main__":
    main()
