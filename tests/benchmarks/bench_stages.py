"""Benchmark: what each ADR-072 stage adapter costs per operation against stage 0 (SQLite only),
and how long a standard certification of each stage takes.

    python tests/benchmarks/bench_stages.py [--ops N] [--no-certify] [--budget NAME]

Per operation (put, get, upsert of 8 records, query k=10, and a Q-value update where the stores
have them), the five stages run interleaved in one process on real files (``harness/latency``):
p50 and p99 in microseconds, and each stage's ratio of medians to stage 0 with a 95% bootstrap
interval, beside an A/A ratio of stage 0 against a second stage 0 (the noise). Then the wall
time of ``crashgate certify stageN --budget standard`` for each. Prints figures; asserts
nothing (speed is not a test).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

from crashgate.backends import Capability, VectorRecord, os_env, resolve
from crashgate.harness.cli import main as crashgate
from crashgate.harness.latency import interleaved, median_ratio, summarise

STAGES = ["stage0", "stage1", "stage2", "stage3", "stage4"]


def _ops(store: Any, rng: random.Random) -> dict[str, Callable[[int], object]]:
    value = rng.randbytes(256)
    vec = [rng.random() for _ in range(16)]

    def records(i: int) -> list[VectorRecord]:
        return [VectorRecord.of((i * 8 + j) % 4000, [x + j for x in vec], {"i": i})
                for j in range(8)]

    ops: dict[str, Callable[[int], object]] = {
        "put": lambda i: store.put(f"key{i % 500:04d}", value),
        "get": lambda i: store.get(f"key{(i * 7919) % 500:04d}"),
        "upsert": lambda i: store.upsert(records(i)),
        "query": lambda i: store.query(vec, 10),
    }
    if store.declaration.has(Capability.RELATIONAL):
        ops["q-update"] = lambda i: store.q_value_update(f"s{i % 20}", "a", float(i))
    return ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=200, help="timed calls per operation and stage")
    ap.add_argument("--no-certify", action="store_true", help="skip the certification timings")
    ap.add_argument("--budget", default="standard", help="certification budget (default standard)")
    args = ap.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.ops} calls per operation per stage, interleaved, real files; load {load}\n")
    with tempfile.TemporaryDirectory(prefix="crashgate-bench-") as tmp:
        env = os_env()
        names = [*STAGES, "stage0-AA"]
        stores = {n: resolve(n.removesuffix("-AA")).open(f"{tmp}/{n}", env) for n in names}
        per_store = {n: _ops(s, random.Random(1)) for n, s in stores.items()}
        kinds = [k for k in per_store["stage0"] if all(k in o for o in per_store.values())]
        print(f"{'op':<9} {'stage':<10} {'p50 us':>9} {'p99 us':>9}  ratio to stage0 (95% CI)")
        for kind in kinds:
            samples = interleaved({n: per_store[n][kind] for n in names}, args.ops)
            for n in names:
                s = summarise(samples[n])
                ratio = "" if n == "stage0" else median_ratio(samples[n],
                                                              samples["stage0"]).describe()
                print(f"{kind:<9} {n:<10} {s.p50 * 1e6:>9.1f} {s.p99 * 1e6:>9.1f}  {ratio}")
        for s in stores.values():
            s.close()
    if args.no_certify:
        return
    print(f"\nwall time of a certification (--budget {args.budget}, --seed 1):")
    with tempfile.TemporaryDirectory(prefix="crashgate-bench-cert-") as out:
        for name in STAGES:
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):   # the figure, not the report
                code = crashgate(["certify", name, "--budget", args.budget, "--seed", "1",
                                  "--out", out, "--quiet"])
            print(f"  {name:<8} {time.perf_counter() - t:7.1f} s  exit {code}")


if __name__ == "__main__":
    main()
