"""Benchmark: ARCH-001's legacy importer rate, and what each phase adapter costs per operation
against the plain JSON store.

    python tests/benchmarks/bench_arch.py [--missions N] [--seed S] [--ops N]

The importer: ``generate_missions(N, seed)`` (default 10,000) written as raw legacy files into a
temporary directory, then ``transfer.import_legacy`` into a fresh ``missions.db`` on real files
(SQLite's defaults: WAL, synchronous=FULL), once with the default batch and once with batch=1
(one transaction, and one directory fsync, per file): wall time, missions per second, time per
file, and the database's size. Each run gets a fresh copy of the files (the importer renames
them); the copy is not timed.

Per operation (put and get of a key-value pair; mission_put and mission_get of a generated
mission, which the JSON store, the baseline, holds as one value under its id), ``arch-phase1``
.. ``arch-phase4`` and the baseline run interleaved in one process on real files
(``harness/latency``): p50 and p99 in microseconds, and each store's ratio of medians to the
baseline with a 95% bootstrap interval, beside an A/A ratio of the baseline against a second
JSON store (the noise). Prints figures; asserts nothing (speed is not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from crashgate.backends import canonical_mission, os_env, resolve
from crashgate.harness.latency import interleaved, median_ratio, summarise
from crashgate.harness.missions import generate_missions
from crashgate.reference.arch.importer import import_legacy
from crashgate.reference.arch.missions_db import open_missions_db
from crashgate.reference.stages.sync import BATCH

PHASES = ["arch-phase1", "arch-phase2", "arch-phase3", "arch-phase4"]
BASELINE = "json"
_DOCS = 64   # distinct missions the per-operation loop cycles through


def _nothing() -> None:
    return None


def _import_rate(legacy: str, work: str, n: int, batch: int) -> None:
    """Import a fresh copy of ``legacy`` into a new database under ``work`` and print the rate."""
    src = os.path.join(work, f"state-batch{batch}")
    shutil.copytree(legacy, src)
    env = os_env()
    db_path = os.path.join(work, f"missions-batch{batch}.db")
    db = open_missions_db(db_path, env)
    try:
        t = time.perf_counter()
        report = import_legacy(db, env.fs, src, env.clock, _nothing, batch=batch)
        wall = time.perf_counter() - t
    finally:
        db.close()
    size = sum(os.path.getsize(db_path + s) for s in ("", "-wal") if os.path.exists(db_path + s))
    assert len(report.imported) == n, report   # a figure for the wrong work is no figure
    print(f"  batch={batch:<5} {wall:8.2f} s  {n / wall:9.0f} missions/s  "
          f"{wall / n * 1e3:7.3f} ms/file  db {size / 2**20:6.1f} MiB "
          f"({size / n / 1024:.1f} KiB/mission)")


def _ops(name: str, store: Any, docs: list[dict[str, Any]]) -> dict[str, Callable[[int], object]]:
    value = random.Random(1).randbytes(256)
    ids = [d["mission_id"] for d in docs]
    blobs = [canonical_mission(d) for d in docs]
    baseline = name.startswith("json")   # the document as one value under its id

    def mission_put(i: int) -> object:
        if baseline:
            return store.put(ids[i % len(ids)], blobs[i % len(blobs)])
        return store.mission_put(docs[i % len(docs)])

    def mission_get(i: int) -> object:
        mission_id = ids[(i * 7) % len(ids)]
        return store.get(mission_id) if baseline else store.mission_get(mission_id)

    return {
        "put": lambda i: store.put(f"key{i % 500:04d}", value),
        "get": lambda i: store.get(f"key{(i * 7919) % 500:04d}"),
        "mission_put": mission_put,
        "mission_get": mission_get,
    }


def _per_operation(tmp: str, ops: int, seed: int) -> None:
    docs = generate_missions(_DOCS, seed + 1)
    env = os_env()
    names = [BASELINE, *PHASES, f"{BASELINE}-AA"]
    stores = {n: resolve(n.removesuffix("-AA")).open(os.path.join(tmp, n), env) for n in names}
    try:
        for s in stores.values():   # every mission there before a get is timed
            for i in range(_DOCS):
                s.put(f"key{i:04d}", b"x")
        calls = {n: _ops(n, s, docs) for n, s in stores.items()}
        for n in names:
            for i in range(_DOCS):
                calls[n]["mission_put"](i)
        size = sum(len(canonical_mission(d)) for d in docs) / _DOCS / 1024
        print(f"\nper operation: {ops} calls each, interleaved, real files; missions of "
              f"{size:.1f} KiB canonical JSON on average")
        print(f"{'op':<12} {'store':<12} {'p50 us':>9} {'p99 us':>9}  ratio to {BASELINE} "
              "(95% CI)")
        for kind in ("put", "get", "mission_put", "mission_get"):
            samples = interleaved({n: calls[n][kind] for n in names}, ops)
            for n in names:
                s = summarise(samples[n])
                ratio = "" if n == BASELINE else median_ratio(samples[n],
                                                              samples[BASELINE]).describe()
                print(f"{kind:<12} {n:<12} {s.p50 * 1e6:>9.1f} {s.p99 * 1e6:>9.1f}  {ratio}")
    finally:
        for s in stores.values():
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--missions", type=int, default=10_000, help="legacy files to import")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=200, help="timed calls per operation and store")
    args = ap.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load {load}")
    with tempfile.TemporaryDirectory(prefix="crashgate-bench-arch-") as tmp:
        t = time.perf_counter()
        docs = generate_missions(args.missions, args.seed)
        legacy = os.path.join(tmp, "legacy")
        os.makedirs(legacy)
        total = 0
        for i, doc in enumerate(docs):
            text = json.dumps(doc, ensure_ascii=False).encode("utf-8")
            total += len(text)
            with open(os.path.join(legacy, f"mission_{i:06d}.json"), "wb") as fh:
                fh.write(text)
        print(f"importer: {args.missions} generated missions (seed {args.seed}) as legacy files, "
              f"{total / 2**20:.1f} MiB, {total / args.missions / 1024:.1f} KiB each on average "
              f"(made in {time.perf_counter() - t:.1f} s, not timed below)")
        for batch in (BATCH, 1):
            _import_rate(legacy, tmp, args.missions, batch)
        _per_operation(tmp, args.ops, args.seed)


if __name__ == "__main__":
    main()
