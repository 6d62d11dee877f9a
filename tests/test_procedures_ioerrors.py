"""The I/O-error row: the reference backends report every injected error and lose nothing
acknowledged; a store that ignores a failed fsync is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from procedure_helpers import assert_caught, context

from crashgate.backends import resolve
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_ioerrors import check_io_error, io_errors


@pytest.mark.parametrize("name", ["memory", "json", "sqlite", "sqlite?journal_mode=DELETE",
                                  "rvf"])
def test_reference_backends_pass(name: str, tmp_path: Path) -> None:
    ev = io_errors(context(name, tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary + "\n" + "\n".join(ev.details)
    m = ev.measured
    # every mutating op of the short workload was swept; both kinds and both persistences for
    # each while the budget (300 cases for "quick") allows
    assert m["n_values"] == m["mutating_ops"] > 0
    assert m["cases"] == min(4 * m["mutating_ops"], 300)


def test_a_store_that_ignores_a_failed_fsync_is_caught(tmp_path: Path) -> None:
    ev = io_errors(context("faulty_backends:open_ignores_fsync_errors", tmp_path))
    assert "durable image" in ev.summary
    assert_caught(ev)


def test_one_case_rerun_alone() -> None:
    ev = check_io_error(resolve("json"), kind="ENOSPC", at=3, persistent=False, seed=1, ops=6)
    assert ev.verdict is Verdict.PASS and ev.measured["errors_injected"] == 1


@pytest.mark.parametrize("kind", ["EIO", "ENOSPC"])
def test_rvf_a_no_op_after_a_failed_commit_discards_it(kind: str) -> None:
    """Found by a certification (seed 784725440): an upsert whose manifest reached the page
    cache raised, a remove of its ids changed nothing and was acknowledged, and the reopened
    store showed the ids again. A no-op now truncates the failed attempt first."""
    ev = check_io_error(resolve("rvf"), kind=kind, at=42, persistent=False, seed=865410015,
                        ops=12)
    assert ev.verdict.value == "pass", ev.summary


def test_sqlite_a_call_after_a_failed_commit_sees_what_the_file_holds() -> None:
    """The same sequence on SQLite: the COMMIT raised with its WAL frames in the page cache, a
    DELETE of rows SQLite never saw changed nothing, and the transaction was recovered at the
    next open. After an I/O error the store now opens the database again before the next
    call."""
    ev = check_io_error(resolve("sqlite"), kind="EIO", at=70, persistent=False, seed=865410015,
                        ops=12)
    assert ev.verdict.value == "pass", ev.summary
