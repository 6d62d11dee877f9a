"""Workloads with history (issue 7, point 2): the power-loss row's workload has sessions,
compaction, re-used ids and keys and long records; the stateful model enables a random subset
of rules, re-uses recent keys and ids, and crashes a store inside an op. Each defect of
``defects_history`` is caught at the standard budget with a replayable reproduction; the
correct ``SegmentLog`` and the reference stores still pass."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from crashgate.backends import resolve
from crashgate.harness.certify import probe_declaration
from crashgate.harness.cli import main
from crashgate.harness.model import prefix_states
from crashgate.harness.ops import Compact, Delete, Op, Put, Remove, Reopen, Upsert, describe_op
from crashgate.harness.powerloss import record_run
from crashgate.harness.stateful import machine_for, run_model
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.harness.workload import LONG_RECORD, PROFILES, random_workload
from crashgate.scenarios.procedures_crash import power_loss_during_ingest
from crashgate.scenarios.table import BUDGETS, RowContext

STANDARD = BUDGETS["standard"]
STANDARD_SEED = 42
SMALL = PROFILES["small"]


def _kinds(ops: Iterable[Op]) -> Counter[str]:
    return Counter(type(op).__name__ for op in ops)


# -- the workload -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["json", "sqlite", "rvf"])
def test_the_history_workload_has_sessions_compaction_reuse_and_long_records(
        backend: str) -> None:
    rec = record_run(resolve(backend), STANDARD.workload_ops, 42, SMALL)
    kinds = _kinds(rec.ops)
    assert kinds["Reopen"] >= 5, kinds
    if backend == "rvf":
        assert kinds["Compact"] >= 2, kinds
    else:   # json and sqlite do not declare compaction: the workload never asks for it
        assert kinds["Compact"] == 0, kinds
    long_ops = [op for op in rec.ops
                if (isinstance(op, Put) and len(op.value) >= LONG_RECORD)
                or (isinstance(op, Upsert) and any("blob" in r.metadata for r in op.records))]
    assert long_ops, "a standard run has a record longer than a read window"
    # a removed id comes back, a deleted key is put again, at least once after a reopen
    undone, across = 0, 0
    for i, op in enumerate(rec.ops):
        gone = set(op.ids) if isinstance(op, Remove) else {op.key} if isinstance(op, Delete) \
            else set()
        for j, later in enumerate(rec.ops[i + 1:i + 16], start=i + 1):
            back = ({r.id for r in later.records} if isinstance(later, Upsert)
                    else {later.key} if isinstance(later, Put) else set())
            if gone & back:
                undone += 1
                across += any(isinstance(x, Reopen) for x in rec.ops[i + 1:j])
                break
    assert undone >= 5 and across >= 2, (undone, across)
    # sessions and compactions are no-ops for the model
    states = prefix_states(rec.ops)
    for i, op in enumerate(rec.ops):
        if isinstance(op, Reopen | Compact):
            assert states[i + 1] == states[i]
    assert describe_op(Reopen()) == "close and reopen (a new session)"


def test_the_workload_is_deterministic_and_unchanged_without_history() -> None:
    rec = record_run(resolve("rvf"), 40, 9, SMALL)
    assert record_run(resolve("rvf"), 40, 9, SMALL).ops == rec.ops
    plain = random_workload(rec.declaration, 40, 9, SMALL)
    assert not any(isinstance(op, Reopen | Compact) for op in plain)
    assert all(not isinstance(op, Put) or len(op.value) <= SMALL.big_value for op in plain)


def test_a_reopen_cannot_run_without_the_interpreter() -> None:
    with pytest.raises(TypeError, match="record_run"):
        Reopen().run(object())


# -- the defects are caught at the standard budget, with a replayable reproduction ---------------

def _row(name: str, tmp_path: Path, seed: int = 42) -> Evidence:
    """ADR-032 row 1 at the standard budget."""
    spec = resolve(name)
    return power_loss_during_ingest(RowContext(spec, probe_declaration(spec), STANDARD, seed,
                                               tmp_path))


@pytest.mark.parametrize("spec", ["defects_history:open_session_order",
                                  "defects_history:open_compaction_drops",
                                  "defects_history:open_window_reader"])
def test_a_history_defect_is_caught_by_the_power_loss_row(
        spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev = _row(spec, tmp_path)
    assert ev.verdict is Verdict.FAIL, ev.summary
    command = ev.reproduce
    assert command and command.startswith("crashgate powerloss ")
    assert main(shlex.split(command)[1:]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION" in out, out
    assert len(out.splitlines()) <= 16, out   # short: the crash state and the ops before it


def test_the_correct_segment_log_passes_the_power_loss_row(tmp_path: Path) -> None:
    ev = _row("defects_history:open_segment_log", tmp_path)
    assert ev.verdict is Verdict.PASS, ev.summary


# -- the stateful model ----------------------------------------------------------------------------

def test_crash_inside_an_op_is_among_the_steps() -> None:
    machine = machine_for("defects_history:open_segment_log")
    run_state_machine_as_test(machine, settings=settings(
        max_examples=30, stateful_step_count=25, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
    ran = {k.removeprefix("rule:") for k in machine.stats if k.startswith("rule:")}
    assert "crash_inside" in ran, ran
    assert machine.stats["crash_states"] > 0


def test_the_model_crashes_a_store_between_its_writes_without_failpoints(
        tmp_path: Path) -> None:
    # rewrite in place, no fsync, no failpoint: only a process crash between the truncate and
    # the write of one op shows the loss
    ev = run_model("defects_crashpoints:open_in_place", seed=STANDARD_SEED,
                   examples=STANDARD.examples, steps=STANDARD.steps, workdir=tmp_path)
    assert ev.verdict is Verdict.FAIL, ev.summary
    assert "inside put" in ev.summary or "inside" in ev.summary, ev.summary
    assert any("crash_inside" in step for step in ev.details), ev.details
    assert ev.measured["failing_steps"] <= 4, "\n".join(ev.details)
    assert ev.reproduce is not None
    done = subprocess.run([sys.executable, ev.reproduce.removeprefix("python ")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0 and "acknowledged write lost" in done.stderr, done.stderr
    assert ev.replay is not None and ev.replay().verdict is Verdict.FAIL


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["json", "sqlite", "rvf", "rvlite"])
def test_reference_stores_pass_both_rows_at_the_standard_budget(spec: str,
                                                                tmp_path: Path) -> None:
    ev = _row(spec, tmp_path / "row")
    assert ev.verdict is Verdict.PASS, ev.summary
    model = run_model(spec, seed=STANDARD_SEED, examples=STANDARD.examples, steps=STANDARD.steps,
                      workdir=tmp_path / "model")
    assert model.verdict is Verdict.PASS, f"{model.summary}\n" + "\n".join(model.details)
