"""Benchmark: the pattern migration guide's batch migration of 100,000 patterns, crashed at every
batch boundary and in the middle of batches, each crash rerun to completion.

    python tests/benchmarks/bench_pattern_crash.py [--records 100000] [--batch-size 5000]
        [--inside 40] [--power 10] [--migrator agentdb-to-rvf] [--target rvf]

It runs the ``patterns-crash`` row's check (``procedures_patterns_crash.check_crashes``) at full
size on the simulated disk: one migration of ``--records`` generated patterns (dimension 384,
the guide's batch size for 100K-1M: 5,000) is recorded; process crashes are placed at every batch
boundary (the migrator's BATCH_READ and BATCH_DONE failpoints) and end, plus ``--inside`` points
inside batches, and power loss at ``--power`` fsync windows and boundaries; each crash state is
rerun, and the target must then hold exactly the source's patterns (none lost, none duplicated,
the source unchanged); then runs hit by an I/O error. The CI test runs the same check with a few
hundred patterns. Prints the verdict, what it measured and the wall time.
"""

from __future__ import annotations

import argparse
import os
import time

from crashgate.backends import resolve
from crashgate.scenarios.procedures_patterns_crash import check_crashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=5_000)
    ap.add_argument("--inside", type=int, default=40, help="process crashes inside batches")
    ap.add_argument("--power", type=int, default=10, help="power-loss crash states")
    ap.add_argument("--io-errors", type=int, default=3)
    ap.add_argument("--migrator", default="agentdb-to-rvf")
    ap.add_argument("--target", default="rvf", help="the target backend")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    batches = -(-args.records // args.batch_size)
    # room for every boundary: BATCH_READ and BATCH_DONE of each batch (one disk position when
    # nothing is written between them; "boundaries" below is the count of distinct ones), the end
    boundaries = 2 * batches + 1
    print(f"load {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.records:,} patterns, "
          f"{batches} batches of {args.batch_size:,}: a process crash at every batch boundary "
          f"and {args.inside} inside batches, {args.power} power losses, into {args.target}")
    t = time.perf_counter()
    ev = check_crashes(resolve(args.target), migrator=args.migrator, seed=args.seed,
                       records=args.records, batch_size=args.batch_size,
                       process_states=boundaries + args.inside, power_states=args.power,
                       io_errors=args.io_errors)
    wall = time.perf_counter() - t
    print(f"{ev.verdict.value}: {ev.summary}")
    for key, value in ev.measured.items():
        print(f"  {key}: {value}")
    for line in ev.details[:5]:
        print(f"  {line}")
    print(f"wall {wall:.0f} s")


if __name__ == "__main__":
    main()
