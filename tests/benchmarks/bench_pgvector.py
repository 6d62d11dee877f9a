"""Benchmark: ADR-0003's Postgres + pgvector store (``pgvector``) at 10,000 x 384, in one run:
insert rate, query latency p50/p99, and recall@10 of pgvector's HNSW index against exact search.

    python tests/benchmarks/bench_pgvector.py [--rows N] [--dim D] [--queries Q] [--batch B]
                                              [--data gaussian|patterns|both]
                                              [--ef-search N] [--url URL]

Two stores on crashgate's own server (or on ``--url``): ``pgvector?index=hnsw`` and
``pgvector`` (``index=none``: exact search), each filled with the same seeded vectors in
batches of ``--batch`` records (one transaction each; the HNSW index is built as rows arrive).
The same queries go to both, and to NumPy's exact search, the vector oracle: recall@10 of the
HNSW store is the share of the true 10 nearest it returns (ties at the 10th distance counted
as true), with its 95% Wilson interval (``harness.vector_oracle.RecallTally``), and the exact
store's answers are checked to be exact. Latencies are wall-clock per ``query`` call,
client-side, through crashgate's store (which re-scores every candidate in float64). Prints
figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from crashgate.backends import Hit, VectorRecord, os_env, resolve
from crashgate.harness.latency import summarise
from crashgate.harness.patterns import generate_pattern_arrays
from crashgate.harness.vector_oracle import RecallTally, check_approximate, check_exact


def _record(data: np.ndarray, i: int) -> VectorRecord:
    return VectorRecord.of(i, data[i], {"i": i, "part": i % 7})


def _fill(store: object, data: np.ndarray, batch: int) -> float:
    """Upsert every row of ``data`` (id = row) in batches; returns records per second."""
    started = time.perf_counter()
    for start in range(0, len(data), batch):
        store.upsert([_record(data, i)   # type: ignore[attr-defined]
                      for i in range(start, min(start + batch, len(data)))])
    return len(data) / (time.perf_counter() - started)


def _queries(store: object, queries: np.ndarray, k: int) -> tuple[list[list[Hit]], np.ndarray]:
    """Every query once (after one warm-up); the hits and the latencies in seconds."""
    store.query(queries[0], k)   # type: ignore[attr-defined]
    answers, lat = [], []
    for q in queries:
        started = time.perf_counter()
        answers.append(store.query(q, k))   # type: ignore[attr-defined]
        lat.append(time.perf_counter() - started)
    return answers, np.asarray(lat)


def _data(kind: str, rows: int, dim: int, n_queries: int, seed: int = 1
          ) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors and the queries: ``gaussian`` (independent normal components, the
    hardest case for a graph index) or ``patterns`` (the pattern guide's shape: unit-norm
    embeddings with cluster structure, ``harness.patterns``, as the RVF HNSW benchmark uses).
    Queries are stored vectors plus noise at half the data's own scale, as retrieval asks."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        data = rng.standard_normal((rows, dim))
    else:
        data = np.asarray(generate_pattern_arrays(rows, dim, seed)[1], dtype=np.float64)
    picks = rng.integers(0, rows, n_queries)
    return data, data[picks] + 0.5 * data.std() * rng.standard_normal((n_queries, dim))


def _run(kind: str, args: argparse.Namespace, k: int) -> None:
    data, queries = _data(kind, args.rows, args.dim, args.queries)
    extra = {"url": args.url} if args.url else {}
    hnsw_options = {"index": "hnsw", **extra}
    if args.ef_search is not None:
        hnsw_options["ef_search"] = str(args.ef_search)
    env = os_env()
    with tempfile.TemporaryDirectory(prefix="crashgate-bench-pg-") as tmp:
        started = time.perf_counter()
        hnsw = resolve("pgvector").open(f"{tmp}/hnsw.store", env, **hnsw_options)
        exact = resolve("pgvector").open(f"{tmp}/exact.store", env, **extra)
        print(f"{kind} data: pgvector at {args.rows:,} x {args.dim}, k={k}, {args.queries} "
              f"queries; {hnsw.declaration.server} (up and both stores open in "
              f"{time.perf_counter() - started:.1f} s)")
        try:
            rates = {"hnsw": _fill(hnsw, data, args.batch),
                     "exact": _fill(exact, data, args.batch)}
            answers = {"hnsw": _queries(hnsw, queries, k), "exact": _queries(exact, queries, k)}
        finally:
            hnsw.close()
            exact.close()
    records = [_record(data, i) for i in range(args.rows)]
    tally, problems = RecallTally(), 0
    for q, hits in zip(queries, answers["hnsw"][0], strict=True):
        problem, found, possible = check_approximate(hits, records, q, k, "l2")
        problems += problem is not None
        tally.add(found, possible)
    inexact = sum(check_exact(hits, records, q, k, "l2") is not None
                  for q, hits in zip(queries, answers["exact"][0], strict=True))
    print(f"  {'store':<24} {'insert/s':>10} {'query p50':>11} {'query p99':>11}")
    for name, label in (("hnsw", "pgvector?index=hnsw"), ("exact", "pgvector (exact)")):
        s = summarise(answers[name][1])
        print(f"  {label:<24} {rates[name]:>10,.0f} {s.p50 * 1e3:>8.2f} ms {s.p99 * 1e3:>8.2f} ms")
    low, high = tally.interval() or (float("nan"), float("nan"))
    print(f"  recall@{k} of HNSW against exact search: {tally.found}/{tally.possible} = "
          f"{tally.recall:.4f}, 95% interval [{low:.4f}, {high:.4f}] "
          f"(ADR-0003's store declares {hnsw.declaration.recall})")
    print(f"  answers not well-formed (HNSW): {problems}; exact store answers not exact: "
          f"{inexact} of {args.queries}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--data", choices=("gaussian", "patterns", "both"), default="both",
                    help="the vectors stored (default both, one after the other)")
    ap.add_argument("--ef-search", type=int, default=None,
                    help="HNSW ef_search (default: the store's own default)")
    ap.add_argument("--url", default="", help="an existing server (default: crashgate's own)")
    args = ap.parse_args()
    for kind in (("patterns", "gaussian") if args.data == "both" else (args.data,)):
        _run(kind, args, 10)


if __name__ == "__main__":
    main()
