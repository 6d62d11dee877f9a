"""Benchmark: RVF get/put latency against the SQLite store (WAL, FULL), in one process and one
run, interleaved (``rvf`` with the spec's two fsyncs per commit and ``rvf?sync=one`` with one),
with an A/A run of SQLite against itself to show the noise; then exact query
latency at 10,000 x 384.

    python tests/benchmarks/bench_rvf_vs_sqlite.py [--ops N] [--rows N] [--dim D]

ADR-072 asks RVF reads within 2x and writes within 1.5x of SQLite. Prints figures; asserts
nothing. Ratios are of medians, with a 95% bootstrap interval (``harness/latency.py``).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import numpy as np

from crashgate.backends import VectorRecord, os_env, resolve
from crashgate.harness.latency import interleaved, median_ratio, summarise


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    summary = summarise(samples)
    return summary.p50 * 1e6, summary.p99 * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ops", type=int, default=400)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="crashgate-bench-") as tmp:
        env = os_env()
        stores = {
            "rvf": resolve("rvf").open(f"{tmp}/bench.rvf", env),
            "rvf-one": resolve("rvf?sync=one").open(f"{tmp}/bench-one.rvf", env),
            "sqlite": resolve("sqlite?journal_mode=WAL&synchronous=FULL").open(f"{tmp}/a.db", env),
            "sqlite-AA": resolve("sqlite?journal_mode=WAL&synchronous=FULL").open(
                f"{tmp}/b.db", env),
        }
        value = random.Random(1).randbytes(256)
        puts = interleaved({k: (lambda i, s=s: s.put(f"key{i:06d}", value))
                             for k, s in stores.items()}, args.ops)
        gets = interleaved({k: (lambda i, s=s: s.get(f"key{(i * 7919) % args.ops:06d}"))
                             for k, s in stores.items()}, args.ops * 5)
        print(f"key-value latency, {args.ops} puts (256-byte values) and {args.ops * 5} gets, "
              "microseconds, real files:")
        print(f"  {'store':<10} {'put p50':>9} {'put p99':>9} {'get p50':>9} {'get p99':>9}")
        for name in stores:
            p50, p99 = _percentiles(puts[name])
            g50, g99 = _percentiles(gets[name])
            print(f"  {name:<10} {p50:>9.1f} {p99:>9.1f} {g50:>9.1f} {g99:>9.1f}")
        for what, samples, gate in (("put", puts, 1.5), ("get", gets, 2.0)):
            for name in ("rvf", "rvf-one"):
                ratio = median_ratio(samples[name], samples["sqlite"])
                print(f"  {what}: {name}/sqlite median ratio {ratio.describe()}; ADR-072 gate "
                      f"<= {gate}")
            print(f"  {what}: A/A sqlite/sqlite "
                  f"{median_ratio(samples['sqlite-AA'], samples['sqlite']).describe()}")
        for s in stores.values():
            s.close()

        store = resolve("rvf").open(f"{tmp}/vectors.rvf", env)
        data = rng.standard_normal((args.rows, args.dim))
        t = time.perf_counter()
        for start in range(0, args.rows, 2000):
            store.upsert([VectorRecord.of(i, data[i], {"i": i})
                          for i in range(start, min(start + 2000, args.rows))])
        ingest = time.perf_counter() - t
        queries = rng.standard_normal((50, args.dim))
        store.query(queries[0], 10)  # warm: first query builds the matrix
        lat = []
        for q in queries:
            t = time.perf_counter()
            store.query(q, 10)
            lat.append(time.perf_counter() - t)
        p50, p99 = _percentiles(lat)
        print(f"exact query, {args.rows} x {args.dim}, k=10, {len(lat)} queries: "
              f"p50 {p50 / 1000:.2f} ms, p99 {p99 / 1000:.2f} ms (ingest {ingest:.2f} s)")
        store.close()


if __name__ == "__main__":
    main()
