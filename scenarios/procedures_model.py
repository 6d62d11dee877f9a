"""crashgate's stateful-model row: the Hypothesis state machine built from the declaration,
with process crashes, power loss, failpoint crashes and reopen among its steps."""

from __future__ import annotations

from crashgate.harness.stateful import run_model
from crashgate.harness.verdict import Evidence
from crashgate.scenarios.table import RowContext

__all__ = ["stateful_model"]


def stateful_model(ctx: RowContext) -> Evidence:
    return run_model(ctx.spec, seed=ctx.seed, examples=ctx.budget.examples,
                     steps=ctx.budget.steps, workdir=ctx.workdir)
