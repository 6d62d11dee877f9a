"""scenarios/procedures_latency.py: ADR-072's latency rows. Their logic runs on a fake clock with
a deterministic cost model (a candidate made 3x slower fails, 1.2x passes, an A/A run passes,
nothing measured is unknown); the real row runs once on ``rvf`` and only has to measure
something. Speed itself is never asserted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from procedure_helpers import context
from test_latency import FakeClock

from crashgate.backends import Capability, resolve
from crashgate.harness.certify import probe_declaration
from crashgate.harness.simdisk import SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.store_latency import READ, ROLES, WRITE, Gate, measure
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.adr072 import ADR072_ROWS

OPS = set(READ.ops) | set(WRITE.ops)
ROWS = {r.key: r for r in ADR072_ROWS}


class Costly:
    """A store whose every timed operation advances ``clock`` by ``factor`` (for the
    operations in ``slow``, else 1) times a seeded cost, then runs on the wrapped store."""

    def __init__(self, store: Any, clock: FakeClock, factor: float, seed: int,
                 slow: frozenset[str] = frozenset(OPS)) -> None:
        self._store, self._clock, self._factor, self._slow = store, clock, factor, slow
        self._jitter = np.random.default_rng(seed)
        self.declaration = store.declaration

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name not in OPS:
            return method
        factor = self._factor if name in self._slow else 1.0

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._clock.spend(factor * 1e-4 * self._jitter.lognormal(0.0, 0.25))
            return method(*args, **kwargs)

        return timed


def _stores(clock: FakeClock, factors: tuple[float, float, float],
            slow: frozenset[str] = frozenset(OPS)) -> list[Costly]:
    """Candidate, baseline and second baseline: memory stores on a simulated disk, costing
    ``factors`` times the base cost (the candidate's only on the ``slow`` operations)."""
    env = sim_env(SimDisk(), makedirs=["/data"])
    return [Costly(resolve("memory").open(f"/data/{role}", env), clock, f, seed,
                   slow if role == "candidate" else frozenset(OPS))
            for seed, (role, f) in enumerate(zip(ROLES, factors, strict=True))]


def _measure(gate: Gate, factor: float, n: int = 150, aa: float = 1.0,
             slow: frozenset[str] = frozenset(OPS)) -> Any:
    """The gate on a fake clock: the candidate costs ``factor`` times the baseline on the
    ``slow`` operations, the second baseline ``aa`` times."""
    clock = FakeClock()
    return measure(*_stores(clock, (factor, 1.0, aa), slow), gate, n, seed=5, clock=clock)


@pytest.mark.parametrize("gate", [READ, WRITE], ids=["read", "write"])
def test_slower_by_3x_fails_by_1_2x_passes_and_an_aa_run_passes(gate: Gate) -> None:
    slow = _measure(gate, 3.0)
    assert slow.verdict is Verdict.FAIL and f"beyond {gate.threshold}x" in slow.summary
    near = _measure(gate, 1.2)
    assert near.verdict is Verdict.PASS, near.summary
    same = _measure(gate, 1.0)
    assert same.verdict is Verdict.PASS, same.summary
    for op in gate.ops:   # every type measured, with both sides' percentiles and the A/A
        figures = near.measured[op]
        assert figures["n"] == [150, 150] and 1.1 < figures["point"] < 1.3
        assert figures["low"] <= figures["point"] <= figures["high"] < gate.threshold
        aa = figures["aa"]
        assert aa["low"] <= aa["point"] <= aa["high"] and 0.9 < aa["point"] < 1.1
        for role in ROLES:
            assert 0 < figures[role]["p50_us"] <= figures[role]["p95_us"] <= figures[role][
                "p99_us"]
    assert near.measured["samples"] == 150 * len(gate.ops)


def test_the_row_is_the_worst_over_the_operation_types() -> None:
    ev = _measure(READ, 3.0, slow=frozenset({"query"}))
    assert ev.verdict is Verdict.FAIL and ev.summary.startswith("query latency")
    assert ev.measured["get"]["point"] < 1.2 and ev.measured["query"]["point"] > 2.5


def test_zero_samples_or_no_common_operation_is_unknown_not_pass() -> None:
    none = _measure(READ, 1.0, n=0)
    assert none.verdict is Verdict.UNKNOWN and "no get latency samples" in none.details[0]
    assert none.measured["samples"] == 0
    # a candidate with key-value data only has no vector write to compare
    clock = FakeClock()
    stores = _stores(clock, (1.0, 1.0, 1.0))
    stores[0].declaration = replace(stores[0].declaration, capabilities=frozenset(
        {Capability.KV}))
    ev = measure(*stores, WRITE, 50, seed=1, clock=clock)
    assert ev.verdict is Verdict.PASS and set(ev.measured) >= {"put"}
    assert "upsert" not in ev.measured and "q_value_update" not in ev.measured
    ev = measure(*stores, Gate("write", {"upsert": Capability.VECTOR}, 1.5), 50, seed=1,
                 clock=clock)
    assert ev.verdict is Verdict.UNKNOWN and "nothing measured" in ev.summary


def test_a_noisy_aa_run_makes_the_verdict_unknown_whatever_the_candidate_did() -> None:
    for factor in (1.0, 3.0):
        ev = _measure(READ, factor, aa=3.0, slow=frozenset({"get"}))
        assert ev.verdict is Verdict.UNKNOWN, ev.summary
        assert "A/A ratio" in ev.summary and "settles nothing" in ev.summary


def test_who_declares_a_baseline() -> None:
    for name in ("rvf", "rvf?sync=one"):
        decl = probe_declaration(resolve(name))
        assert (decl.baseline, decl.candidate) == ("sqlite", None)
    for n in (1, 2, 3):   # the stages that use both stores: RVF against SQLite, as opened
        decl = probe_declaration(resolve(f"stage{n}?sync=one&synchronous=NORMAL"))
        assert decl.candidate == "rvf?sync=one&metric=l2"
        assert decl.baseline == "sqlite?journal_mode=WAL&synchronous=NORMAL&metric=l2"
    for name in ("stage0", "stage4", "sqlite", "memory", "json"):
        decl = probe_declaration(resolve(name))
        assert decl.baseline is None
        for key in ("adr072-read-latency", "adr072-write-latency"):
            reason = ROWS[key].needs(decl)
            assert reason is not None and "no baseline" in reason


def test_the_rows_carry_the_adr_s_words() -> None:
    assert "RVF read latency within 2x of SQLite for all query types" in ROWS[
        "adr072-read-latency"].expected
    assert "RVF write latency within 1.5x of SQLite for all operation types" in ROWS[
        "adr072-write-latency"].expected


@pytest.mark.parametrize("key", ["adr072-read-latency", "adr072-write-latency"])
def test_the_real_row_measures_rvf_against_sqlite(key: str, tmp_path: Path) -> None:
    ctx = context("rvf", tmp_path)
    row = ROWS[key]
    assert row.needs(ctx.declaration) is None
    ev = row.procedure(ctx)
    # which verdict is the machine's business; that it measured is ours
    assert ev.verdict in (Verdict.PASS, Verdict.FAIL, Verdict.UNKNOWN)
    assert ev.measured["samples"] > 0
    assert (ev.measured["candidate"], ev.measured["baseline"]) == ("rvf", "sqlite")
    gate = READ if "read" in key else WRITE
    assert all(min(ev.measured[op]["n"]) > 0 for op in gate.ops)
    assert ev.verdict is not Verdict.FAIL or ev.replay is not None
    assert not any(p.name.startswith("latency-") for p in tmp_path.iterdir())
