"""Row 3 and invariant 1 with real processes: pass on RVF, n/a without a writer lock, and an RVF
store that ignores its lock is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from procedure_helpers import assert_caught, context

from crashgate.backends import resolve
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_writers import single_writer_rule, two_writers


def test_row3_passes_on_rvf(tmp_path: Path) -> None:
    ev = two_writers(context("rvf", tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    # A, B, then B1 and B2 once A had held the store for more than 30 s (idle, then writing)
    assert ev.measured["processes"] == 4 and ev.measured["acknowledged_writes"] >= 6
    text = "\n".join(ev.details)
    assert "second writer refused: ELOCK" in text and "that process is running" in text
    assert "started writer B1" in text and "with clock +31 s" in text
    assert "refused (the first idle, the second's clock 31 s ahead): ELOCK" in text
    assert "refused (the first writing for 31 s, both clocks on): ELOCK" in text


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
    # the quick budget's one round holds A past the stale interval first: its lock is old
    # when it dies, and a dead holder's old lock is recovered at once
    assert "the first writing for 31 s, both clocks on" in text
    assert "a new writer recovered the killed writer's lock at once" in text
    # A, B, B1, B2, two readers, C
    assert ev.measured["processes"] == 7


def test_invariant1_second_round_recovers_a_young_dead_lock_once_stale(tmp_path: Path) -> None:
    from crashgate.scenarios.procedures_writers import check_duplicate_writer

    ev = check_duplicate_writer(resolve("rvf"), workdir=str(tmp_path), kill=True,
                                past_stale=False)
    assert ev.verdict is Verdict.PASS, ev.summary
    text = "\n".join(ev.details)
    assert "right after the kill the lock was still held" in text
    assert "a new writer recovered the lock once it was stale" in text


def test_a_store_that_ignores_its_lock_is_caught(tmp_path: Path) -> None:
    ev = two_writers(context("faulty_backends:open_ignores_lock", tmp_path))
    assert "the second writer opened" in ev.summary
    assert ev.conclusive  # a second writer got in: seen, not inferred from a timeout
    assert_caught(ev)
