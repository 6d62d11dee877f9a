"""The certifier's verdicts say what happened: a ``CorruptStore`` raised during a check is a
finding, a conclusive failure that does not come back at once is replayed and reported with its
reproduction rate, and only a failure without conclusive evidence becomes ``unknown``."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from crashgate.backends import CorruptStore, resolve
from crashgate.harness.certify import REPLAYS, certify
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import BUDGETS, Row, RowContext


def _row(procedure: Callable[[RowContext], Evidence]) -> Row:
    return Row("test table", "t-1", "1", "a scenario", "an expectation", lambda _d: None,
               procedure)


def _certify(tmp_path: Path, procedure: Callable[[RowContext], Evidence]) -> Any:
    cert = certify(resolve("memory"), [_row(procedure)], budget=BUDGETS["quick"], seed=7,
                   workdir=tmp_path, context_factory=RowContext)
    [result] = cert.results
    return result.evidence


def _failing_on(pattern: Iterator[bool], *, conclusive: bool) -> Callable[[RowContext], Evidence]:
    """A check that fails on the runs ``pattern`` says, passing otherwise."""

    def check(_ctx: RowContext) -> Evidence:
        if next(pattern):
            return Evidence(Verdict.FAIL, "acknowledged write lost", {"crash_states": 1},
                            replay=lambda: check(_ctx), conclusive=conclusive)
        return Evidence(Verdict.PASS, "consistent", {"crash_states": 1})

    return check


def test_a_conclusive_failure_that_comes_back_sometimes_is_a_failure_with_its_rate(
        tmp_path: Path) -> None:
    # first run fails, replays: pass, fail, pass, fail, pass
    ev = _certify(tmp_path, _failing_on(iter([True, False, True, False, True, False]),
                                        conclusive=True))
    assert ev.verdict is Verdict.FAIL
    assert ev.measured["replays_failed"] == f"2 of {REPLAYS}"
    assert f"reproduced in 2 of {REPLAYS} replays" in ev.summary
    assert ev.reproduce is not None and "--scenario t-1 --seed 7" in ev.reproduce


def test_an_inconclusive_failure_that_does_not_come_back_is_unknown(tmp_path: Path) -> None:
    ev = _certify(tmp_path, _failing_on(itertools.chain([True], itertools.repeat(False)),
                                        conclusive=False))
    assert ev.verdict is Verdict.UNKNOWN
    assert "the replay did not fail" in ev.summary


def test_a_failure_that_comes_back_at_once_is_replayed_once(tmp_path: Path) -> None:
    runs = iter([True, True, False])
    ev = _certify(tmp_path, _failing_on(runs, conclusive=True))
    assert ev.verdict is Verdict.FAIL and ev.measured["replays_failed"] == "1 of 1"
    assert next(runs) is False   # no third run


def test_corrupt_store_raised_by_the_store_is_a_finding_not_a_broken_check(
        tmp_path: Path) -> None:
    def check(_ctx: RowContext) -> Evidence:
        raise CorruptStore("/data/store", "record 3 fails its checksum")

    ev = _certify(tmp_path, check)
    assert ev.verdict is Verdict.FAIL
    assert ev.summary.startswith("integrity lost")
    assert "record 3 fails its checksum" in ev.summary


def test_any_other_exception_is_a_check_that_could_not_run(tmp_path: Path) -> None:
    def check(_ctx: RowContext) -> Evidence:
        raise KeyError("oops")

    ev = _certify(tmp_path, check)
    assert ev.verdict is Verdict.UNKNOWN and "could not run" in ev.summary
