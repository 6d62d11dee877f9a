"""Benchmark: opening an RVF file after 10,000 commits against one with the same live data after
10 commits (issue 9: at most twice the time).

    python tests/benchmarks/bench_rvf_open.py [--commits N] [--reps R]

Both files are built in memory (``MemFS``, no fsyncs, so building is quick), written to a
temporary directory, and opened read-only through the real file system in alternation, R times
each; the medians and their ratio are printed, with what each open read
(``RvfStore.open_stats``). Prints figures; asserts nothing (speed is not a test: the test on the
number of segments read is tests/test_rvf_open_cost.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from test_rvf_open_cost import _write  # noqa: E402
from test_rvf_store import MemFS  # noqa: E402

from crashgate.backends import Env, os_env  # noqa: E402
from crashgate.reference.rvf import open_rvf  # noqa: E402


def build(commits: int) -> bytes:
    fs = MemFS()
    s = open_rvf("b.rvf", Env(fs=fs), lock="false")
    _write(s, commits)
    s.close()
    return bytes(fs.files["b.rvf"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--commits", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for n in (10, args.commits):
            paths[n] = Path(tmp) / f"c{n}.rvf"
            paths[n].write_bytes(build(n))
        times: dict[int, list[float]] = {n: [] for n in paths}
        read: dict[int, str] = {}
        for _ in range(args.reps):
            for n, p in paths.items():
                t0 = time.perf_counter()
                s = open_rvf(str(p), os_env(), readonly="true")
                times[n].append(time.perf_counter() - t0)
                st = s.open_stats
                read[n] = f"{st.headers} headers, {st.payloads} payloads, {st.bytes} bytes"
                s.close()
        print(f"{'commits':>8} {'file bytes':>11} {'median ms':>10}  read at open")
        for n, p in paths.items():
            print(f"{n:>8} {p.stat().st_size:>11} {statistics.median(times[n]) * 1e3:>10.2f}  "
                  f"{read[n]}")
        ratio = statistics.median(times[args.commits]) / statistics.median(times[10])
        print(f"ratio {args.commits} / 10 commits (median of {args.reps}): {ratio:.2f} "
              "(goal: <= 2)")


if __name__ == "__main__":
    main()
