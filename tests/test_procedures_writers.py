"""Row 3 and invariant 1 with real processes: pass on RVF, n/a without a writer lock, and an RVF
store that ignores its lock is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from procedure_helpers import assert_caught, context

from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_writers import single_writer_rule, two_writers


def test_row3_passes_on_rvf(tmp_path: Path) -> None:
    ev = two_writers(context("rvf", tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["processes"] == 2 and ev.measured["acknowledged_writes"] >= 6
    text = "\n".join(ev.details)
    assert "second writer refused: ELOCK" in text and "that process is running" in text


@pytest.mark.parametrize("name", ["memory", "json", "sqlite"])
def test_row3_and_invariant1_na_without_a_writer_lock(name: str, tmp_path: Path) -> None:
    ctx = context(name, tmp_path)
    for ev in (two_writers(ctx), single_writer_rule(ctx)):
        assert ev.verdict is Verdict.NA
        assert "declares no writer lock" in ev.summary


def test_invariant1_passes_on_rvf_with_readers_kill_and_stale_recovery(tmp_path: Path) -> None:
    ev = single_writer_rule(context("rvf", tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    text = "\n".join(ev.details)
    assert "2 readers (readonly=true) read while A wrote" in text
    assert "SIGKILL A" in text
    assert "a new writer recovered the lock once it was stale" in text
    assert ev.measured["processes"] == 6  # A, B, two readers, C refused, C 31 s later


def test_a_store_that_ignores_its_lock_is_caught(tmp_path: Path) -> None:
    ev = two_writers(context("faulty_backends:open_ignores_lock", tmp_path))
    assert "the second writer opened" in ev.summary
    assert_caught(ev)
