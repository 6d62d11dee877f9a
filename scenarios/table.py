"""A failure-mode table made executable: each row keeps the document's own words, says what it
needs from a backend, and has a procedure that produces evidence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crashgate.backends import BackendSpec, Capability, Declaration
from crashgate.harness.verdict import Evidence

__all__ = ["Budget", "BUDGETS", "Row", "RowContext"]


@dataclass(frozen=True)
class Budget:
    """How hard to look. ``quick`` for a CI smoke, ``standard`` to certify, ``thorough`` for a
    release."""

    name: str
    crash_states: int
    workload_ops: int
    examples: int          # Hypothesis examples for stateful runs
    steps: int             # steps per stateful example
    processes: int         # repetitions of multi-process checks


BUDGETS = {
    "quick": Budget("quick", 300, 60, 15, 20, 1),
    "standard": Budget("standard", 1200, 120, 40, 30, 2),
    "thorough": Budget("thorough", 6000, 300, 200, 50, 5),
}


@dataclass
class RowContext:
    """What a procedure gets: the backend, what it declared, the budget, the seed, a private
    working directory (per run and per row: parallel runs never share one), and the migration
    tool named with ``--migrator`` (a migrator name, ``backends.migrator``; None: crashgate's
    own, for a backend that stores RVF), and the processes that check crash states (``jobs``;
    None: ``harness.crashpool.default_jobs()``)."""

    spec: BackendSpec
    declaration: Declaration
    budget: Budget
    seed: int
    workdir: Path
    progress: Callable[[str], None] = field(default=lambda _msg: None)
    migrator: str | None = None
    jobs: int | None = None
    pattern_migrator: str | None = None
    """The pattern migrator named with ``--pattern-migrator`` (``backends.pattern_migrator``);
    None: crashgate's own ``agentdb-to-rvf``."""


@dataclass(frozen=True)
class Row:
    table: str              # e.g. "ADR-032 Failure Modes to Test"
    key: str                # stable id, e.g. "adr032-1", used by --scenario
    number: str             # as the document numbers it: "1", "Invariant 2"
    scenario: str           # the document's own words
    expected: str           # the document's own words
    needs: Callable[[Declaration], str | None]
    """None when the backend has what the row needs, else the reason it is n/a."""
    procedure: Callable[[RowContext], Evidence]
    capabilities: frozenset[Capability] = frozenset()
