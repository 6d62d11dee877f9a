"""Latency of a candidate backend against its baseline (ADR-072: RVF against SQLite), as a
measurement: the three stores (candidate, baseline, a second baseline for the A/A ratio) opened
by name on real files, filled with the same seeded data, then per operation type both declare
the same calls interleaved (``latency.interleaved``), each type's ratio of medians with its
bootstrap interval judged against the threshold (``latency.ratio_verdict``). When the A/A ratio
is not itself within the threshold the type is ``unknown``: noise alone moves the ratio that far.
The certificate rows (``scenarios/procedures_latency.py``) and ``crashgate gate``'s evidence
both measure through ``compare``. Speed is never asserted in tests: ``measure`` takes the clock.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from crashgate.backends import BackendSpec, Capability, Declaration, VectorRecord, os_env
from crashgate.harness.latency import Ratio, interleaved, median_ratio, ratio_verdict, summarise
from crashgate.harness.ops import records_for
from crashgate.harness.verdict import Evidence, Verdict, combine

__all__ = ["READ", "ROLES", "WRITE", "Gate", "compare", "measure"]


@dataclass(frozen=True)
class Gate:
    """One criterion: ``kind`` (read or write), the operation types it covers with the
    capability each needs on both stores, and the "within ``threshold``x" bound."""

    kind: str
    ops: Mapping[str, Capability]
    threshold: float


READ = Gate("read", {"get": Capability.KV, "scan": Capability.KV, "fetch": Capability.VECTOR,
                     "query": Capability.VECTOR}, 2.0)
WRITE = Gate("write", {"put": Capability.KV, "upsert": Capability.VECTOR,
                       "q_value_update": Capability.RELATIONAL}, 1.5)
ROLES = ("candidate", "baseline", "baseline-aa")
WARMUP = 20
KEYS, VECTORS, DIM, QUERIES, K = 200, 200, 32, 64, 10
STATES, ACTIONS = 10, 4


def measure(candidate: Any, baseline: Any, aa: Any, gate: Gate, n: int, *, seed: int,
            warmup: int = WARMUP, clock: Callable[[], float] = time.perf_counter) -> Evidence:
    """Fill the three open stores with the same data from ``seed``, then time ``n`` calls per
    operation type of ``gate`` that the candidate and the baseline both declare, interleaved
    with ``clock``. ``measured``: per type, ``{"candidate"|"baseline"|"baseline-aa":
    {"p50_us", "p95_us", "p99_us"}, "point", "low", "high", "n": [candidate, baseline],
    "aa": {"point", "low", "high"}}`` (the ratio and the A/A ratio with their intervals, as
    gate evidence holds a ratio); ``samples``, the timed calls per store over all types;
    ``seed``."""
    ops = [op for op, cap in gate.ops.items()
           if candidate.declaration.has(cap) and baseline.declaration.has(cap)]
    data = _Data.of(seed)
    for store in (candidate, baseline, aa):
        data.fill(store)
    parts = []
    for op in ops:
        calls = {role: data.call(op, store)
                 for role, store in zip(ROLES, (candidate, baseline, aa), strict=True)}
        got = interleaved(calls, n, warmup, clock=clock) if n >= 1 else {}
        parts.append(_judge(op, got, gate.threshold, seed))
    what = f"{gate.kind} latency within {gate.threshold}x"
    if not parts:
        return Evidence(Verdict.UNKNOWN, f"{what}: no {gate.kind} operation type "
                        f"({', '.join(gate.ops)}) that both stores declare: nothing measured",
                        {"samples": 0, "seed": seed})
    ev = combine(parts, f"{what}: " + "; ".join(p.summary for p in parts))
    return replace(ev, measured={**ev.measured, "seed": seed})


def _judge(op: str, got: Mapping[str, np.ndarray], threshold: float, seed: int) -> Evidence:
    """One operation type's verdict and figures from its latencies by role (empty: none)."""
    c, b, a = (np.asarray(got.get(role, ()), dtype=float) for role in ROLES)
    if min(c.size, b.size, a.size) == 0:
        verdict, why = ratio_verdict(None, threshold, f"{op} latency")
        return Evidence(verdict, why, {op: {"n": 0}, "samples": 0})
    ratio = median_ratio(c, b, seed=seed)
    noise = median_ratio(a, b, seed=seed)
    verdict, why = ratio_verdict(ratio, threshold, f"{op} latency")
    noise_verdict, _ = ratio_verdict(noise, threshold, f"{op} A/A")
    if noise_verdict is not Verdict.PASS:
        verdict = Verdict.UNKNOWN
        why += (f"; but the A/A ratio {noise.describe()} is not within {threshold}x: noise "
                "alone moves the ratio that far, so this measurement settles nothing")
    else:
        why += f"; A/A {noise.describe()}"
    figures: dict[str, Any] = {role: _percentiles(x) for role, x in zip(ROLES, (c, b, a),
                                                                         strict=True)}
    figures.update(_ratio(ratio), n=list(ratio.n), aa=_ratio(noise))
    return Evidence(verdict, why, {op: figures, "samples": int(c.size)})


def _percentiles(samples: np.ndarray) -> dict[str, float]:
    s = summarise(samples)
    return {"p50_us": round(s.p50 * 1e6, 2), "p95_us": round(s.p95 * 1e6, 2),
            "p99_us": round(s.p99 * 1e6, 2)}


def _ratio(r: Ratio) -> dict[str, float]:
    # the shape of a ratio in gate evidence (scenarios/gates.py)
    return {"point": round(r.point, 4), "low": round(r.low, 4), "high": round(r.high, 4)}


@dataclass(frozen=True)
class _Data:
    """The seeded data every store is filled with, and the calls that read or write it: call
    ``i`` (negative during the warm-up) touches the same key, ids and query on every store."""

    values: tuple[bytes, ...]       # KEYS values of 256 bytes, for keys k00000 ...
    vectors: np.ndarray             # (VECTORS, DIM)
    queries: np.ndarray             # (QUERIES, DIM)
    order: tuple[int, ...]          # a permutation: the access order

    @staticmethod
    def of(seed: int) -> _Data:
        rng = np.random.default_rng(seed)
        r = random.Random(seed)
        return _Data(tuple(r.randbytes(256) for _ in range(KEYS)),
                     rng.standard_normal((VECTORS, DIM)), rng.standard_normal((QUERIES, DIM)),
                     tuple(int(x) for x in rng.permutation(max(KEYS, VECTORS))))

    def _record(self, decl: Declaration, i: int, row: int) -> VectorRecord:
        # a store that keeps no metadata gets none (ops.records_for)
        return records_for(decl, [VectorRecord.of(i, self.vectors[row], {"group": i % 4})])[0]

    def fill(self, store: Any) -> None:
        decl: Declaration = store.declaration
        if decl.has(Capability.KV):
            puts = {_key(i): v for i, v in enumerate(self.values)}
            if decl.has(Capability.BATCH) and hasattr(store, "write_batch"):
                store.write_batch(puts)
            else:
                for k, v in puts.items():
                    store.put(k, v)
        if decl.has(Capability.VECTOR):
            store.upsert([self._record(decl, i, i) for i in range(VECTORS)])
        if decl.has(Capability.RELATIONAL):
            for s in range(STATES):
                for a in range(ACTIONS):
                    store.q_value_update(f"s{s}", f"a{a}", 0.0)

    def call(self, op: str, store: Any) -> Callable[[int], object]:
        def at(i: int) -> int:
            return self.order[i % len(self.order)]

        decl: Declaration = store.declaration

        calls: dict[str, Callable[[int], object]] = {
            "get": lambda i: store.get(_key(at(i) % KEYS)),
            "scan": lambda i: store.scan(_key(at(i) % KEYS)[:-1]),   # the 10 keys beside it
            "fetch": lambda i: store.fetch([(at(i) + 17 * j) % VECTORS for j in range(8)]),
            "query": lambda i: store.query(self.queries[i % QUERIES], K),
            "put": lambda i: store.put(_key(at(i) % KEYS), self.values[(at(i) + 1) % KEYS]),
            "upsert": lambda i: store.upsert([self._record(decl, at(i) % VECTORS,
                                                           (at(i) + 1) % VECTORS)]),
            "q_value_update": lambda i: store.q_value_update(
                f"s{at(i) % STATES}", f"a{at(i) % ACTIONS}", float(i)),
        }
        return calls[op]


def _key(i: int) -> str:
    return f"k{i:05d}"


def compare(candidate: BackendSpec, baseline: BackendSpec, gate: Gate, n: int, *, seed: int,
            directory: str) -> Evidence:
    """Open the candidate, the baseline and a second baseline on real files in a temporary
    directory inside ``directory`` and ``measure`` them; ``measured`` also names the two."""
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="latency-", dir=directory) as tmp:
        stores: list[Any] = []
        try:
            for role, spec in zip(ROLES, (candidate, baseline, baseline), strict=True):
                stores.append(spec.open(os.path.join(tmp, role), os_env()))   # real files
            ev = measure(stores[0], stores[1], stores[2], gate, n, seed=seed)
        finally:
            for store in stores:
                store.close()
    return replace(ev, measured={**ev.measured, "candidate": candidate.label,
                                 "baseline": baseline.label})
