"""ADR-072's latency criteria as rows: "RVF read latency within 2x of SQLite for all query types"
(go/no-go for stage 3) and "RVF write latency within 1.5x of SQLite for all operation types"
(stage 4), for a backend that declares the backend it is held to (``Declaration.baseline``).

The candidate (``Declaration.candidate``, or the backend itself), the baseline and a second
baseline store are opened on real files (``os_env``) in a temporary directory under the row's
working directory and filled with the same seeded data. Then, per operation type both declare
(reads: get, scan, fetch, query; writes: put, upsert, q_value_update), the three run the same
calls interleaved (``harness.latency.interleaved``, after a warm-up). Each type's ratio of
medians, candidate over baseline, with its bootstrap interval, is judged against the threshold
(``ratio_verdict``); the second baseline against the first is the A/A ratio, the noise alone:
when the A/A ratio is not itself within the threshold, the type is ``unknown`` whatever the
candidate did. The row's verdict is the worst over the types; no type, or no samples, is
``unknown``. Speed is never asserted in tests: ``measure`` takes the clock.
"""

from __future__ import annotations

from dataclasses import replace

from crashgate.backends import Declaration, resolve
from crashgate.harness.store_latency import READ, WRITE, Gate, compare
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import Budget, RowContext

__all__ = ["SAMPLES", "needs_baseline", "read_latency", "samples_for", "write_latency"]

SAMPLES = {"quick": 150, "standard": 400, "thorough": 1000}
"""Timed calls per operation type and store, by budget name."""


def needs_baseline(decl: Declaration) -> str | None:
    if decl.baseline:
        return None
    return ("declares no baseline (Declaration.baseline): no backend whose latency it is "
            "held to")


def samples_for(budget: Budget) -> int:
    """Timed calls per operation type: by the budget's name, else three per workload op."""
    return SAMPLES.get(budget.name, 3 * budget.workload_ops)


def read_latency(ctx: RowContext) -> Evidence:
    return _row(ctx, READ)


def write_latency(ctx: RowContext) -> Evidence:
    return _row(ctx, WRITE)


def _row(ctx: RowContext, gate: Gate) -> Evidence:
    decl = ctx.declaration
    if not decl.baseline:
        return Evidence.na(str(needs_baseline(decl)))
    candidate = resolve(decl.candidate) if decl.candidate else ctx.spec
    baseline = resolve(decl.baseline)
    n = samples_for(ctx.budget)

    def run() -> Evidence:
        ctx.progress(f"{gate.kind} latency: {candidate.label} against {baseline.label}, "
                     f"{n} calls per operation type")
        return compare(candidate, baseline, gate, n, seed=ctx.seed, directory=str(ctx.workdir))

    ev = run()
    # a latency failure is a measurement, not a seen broken promise: the certifier re-measures
    # it before reporting it, and one that does not come back is unknown
    return replace(ev, replay=run) if ev.verdict is Verdict.FAIL else ev
