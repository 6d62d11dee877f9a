"""Benchmark: the pattern migration guide's performance table, measured. The SQLite pattern store
(``agentdb``, brute force over embedding blobs: the guide's baseline), exact NumPy search (``rvf``)
and the HNSW path (``rvf?index=hnsw``), at 10,000 and 100,000 generated patterns of dimension 384.

    python tests/benchmarks/bench_patterns.py [--sizes 10000,100000] [--dim 384] [--queries 200]

For each size and store, a child process (so that each store's memory is its own) generates the
patterns (``harness.patterns.generate_patterns``, not timed), opens the store on real files in a
temporary directory, inserts them in batches of 1,000 (the guide's default batch size; the rate
is patterns per second of wall time, commits included), times the HNSW index build where there
is one (it follows each commit, so the insert rate includes it; the first query's time is
printed too), and reports its resident memory (psutil RSS) before opening
and after the inserts and the first query: the store's memory is the difference.

Then the parent reopens the three files and times k=10 queries (perturbed patterns, a quarter
with a metadata filter on the category), interleaved round by round (``harness/latency``): the
three stores together for fewer rounds (the brute-force baseline is slow; the ratios come from
these), then exact and HNSW for ``--queries`` rounds: p50 and p99 in microseconds,
queries per second of one thread (1 / mean latency), ratios of medians with a 95% bootstrap
interval, and recall@10 of every store against the exact answer (``harness/vector_oracle``).
The guide's claimed ratios are printed beside the measured ones. Prints figures; asserts nothing
(speed is not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import psutil

from crashgate.backends import Recall, VectorRecord, os_env, resolve
from crashgate.harness.latency import interleaved, median_ratio, summarise
from crashgate.harness.patterns import generate_patterns
from crashgate.harness.vector_oracle import Oracle, RecallTally

# one metric for all three (the guide's similarity search: cosine, agentdb's default)
STORES = {"agentdb": "agentdb", "exact": "rvf?metric=cosine",
          "hnsw": "rvf?metric=cosine&index=hnsw"}
BATCH = 1_000
K = 10
# the guide's table ("Performance Comparison"): RuVector against AgentDB (SQLite)
CLAIMS = {"search p50": ("255 us -> 1.5 us", 170.0), "QPS": ("3,600 -> 192,840", 53.0),
          "batch insert": ("20,982 -> 2,703,923 ops/s", 129.0), "memory": ("-18%", 0.82)}


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _child(store_name: str, path: str, n: int, dim: int, seed: int) -> dict[str, Any]:
    """Fill one store in this process; its insert rate, build time and memory."""
    records = generate_patterns(n, dim, seed)
    before = _rss()
    store = resolve(STORES[store_name]).open(path, os_env())
    try:
        t = time.perf_counter()
        for at in range(0, n, BATCH):
            store.upsert(records[at:at + BATCH])
        insert = time.perf_counter() - t
        t = time.perf_counter()
        store.query(records[0].vector, K)   # the HNSW path builds its index here
        first = time.perf_counter() - t
        after = _rss()
    finally:
        store.close()
    return {"insert_s": insert, "first_query_s": first, "rss_before": before, "rss_after": after}


def _queries(records: list[VectorRecord], count: int, seed: int) -> list[tuple[np.ndarray,
                                                                               dict | None]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        base = np.asarray(records[int(rng.integers(len(records)))].vector)
        q = base + rng.normal(0, 0.05, base.shape)
        where = {"category": records[i % len(records)].metadata["category"]} if i % 4 == 3 \
            else None
        out.append((q / np.linalg.norm(q), where))
    return out


def _size(n: int, dim: int, count: int, seed: int, tmp: str) -> None:
    print(f"\n== {n:,} patterns x {dim} ==")
    filled: dict[str, dict[str, Any]] = {}
    for name in STORES:
        path = os.path.join(tmp, f"{name}-{n}")
        out = subprocess.run([sys.executable, __file__, "--child", name, path, str(n), str(dim),
                              str(seed)], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{name}: the filling child failed:\n{out.stderr}")
        filled[name] = json.loads(out.stdout.strip().splitlines()[-1])
    records = generate_patterns(n, dim, seed)
    queries = _queries(records, count, seed + 1)
    stores = {name: resolve(spec).open(os.path.join(tmp, f"{name}-{n}"), os_env())
              for name, spec in STORES.items()}
    try:
        calls = {name: (lambda i, s=s: s.query(*_args(queries, i))) for name, s in stores.items()}
        # the brute-force baseline costs ~n/20,000 s a query: it joins fewer rounds (all three
        # interleaved, for the ratios), the fast two many more (for their p50 and p99)
        slow = max(20, min(count, 2_000_000 // n))
        with_base = interleaved(calls, slow, warmup=2)
        samples = {"agentdb": with_base["agentdb"],
                   **interleaved({k: calls[k] for k in ("exact", "hnsw")}, count, warmup=5)}
        tallies = {name: RecallTally() for name in stores}
        problems: dict[str, list[str]] = {name: [] for name in stores}
        oracle = Oracle(records, stores["exact"].declaration.metric or "l2")
        for i, (q, where) in enumerate(queries):
            for name, s in stores.items():
                if name == "agentdb" and i >= slow:
                    continue
                # counted as approximate whatever the store promises: found / possible
                problem, found, possible = oracle.check(s.query(q, K, where), q, K, where,
                                                        recall=Recall(K))
                tallies[name].add(found, possible)
                if problem is not None:
                    problems[name].append(problem)
    finally:
        for s in stores.values():
            s.close()
    print(f"{'store':<8} {'insert/s':>10} {'1st q s':>8} {'mem MiB':>8} {'p50 us':>9} "
          f"{'p99 us':>9} {'QPS':>9}  recall@10 (95% CI)")
    for name in STORES:
        f, s = filled[name], summarise(samples[name])
        mem = (f["rss_after"] - f["rss_before"]) / 2**20
        low, high = tallies[name].interval() or (float("nan"), float("nan"))
        print(f"{name:<8} {n / f['insert_s']:>10,.0f} {f['first_query_s']:>8.2f} {mem:>8.1f} "
              f"{s.p50 * 1e6:>9.1f} {s.p99 * 1e6:>9.1f} {1 / float(np.mean(samples[name])):>9,.0f}"
              f"  {tallies[name].recall:.4f} ({low:.4f}-{high:.4f})"
              + (f"  {len(problems[name])} wrong answers, first: {problems[name][0]}"
                 if problems[name] else ""))
    base = filled["agentdb"]
    print("measured against agentdb (the guide's claim beside it):")
    for name in ("exact", "hnsw"):
        f = filled[name]
        speed = median_ratio(with_base["agentdb"], with_base[name])
        qps = float(np.mean(with_base["agentdb"])) / float(np.mean(with_base[name]))
        insert = base["insert_s"] / f["insert_s"]
        mem_ratio = (f["rss_after"] - f["rss_before"]) / max(1, base["rss_after"]
                                                              - base["rss_before"])
        print(f"  {name}: search p50 {speed.describe()}x faster (claim {CLAIMS['search p50'][1]}x)"
              f"; QPS {qps:.1f}x (claim {CLAIMS['QPS'][1]}x); batch insert {insert:.1f}x "
              f"(claim {CLAIMS['batch insert'][1]}x); memory {mem_ratio:.2f} of agentdb's "
              f"(claim {CLAIMS['memory'][1]})")


def _args(queries: list[tuple[np.ndarray, dict | None]], i: int) -> tuple[Any, int, Any]:
    q, where = queries[i % len(queries)]
    return q, K, where


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, path, n, dim, seed = sys.argv[2:7]
        print(json.dumps(_child(name, path, int(n), int(dim), int(seed))))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="pattern counts, comma-separated")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200, help="timed queries per store and size")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"load {', '.join(f'{x:.2f}' for x in os.getloadavg())}; guide's claims: "
          + "; ".join(f"{k} {v[0]} ({v[1]}x)" for k, v in CLAIMS.items()))
    with tempfile.TemporaryDirectory(prefix="crashgate-bench-patterns-") as tmp:
        for size in args.sizes.split(","):
            _size(int(size), args.dim, args.queries, args.seed, tmp)


if __name__ == "__main__":
    main()
