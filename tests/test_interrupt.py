"""A Ctrl-C stops a run even when a library swallows it or turns it into another error on the
way (Hypothesis does, when the interrupt lands before its engine has started): it never
becomes a verdict, a pass or a finding."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashgate.backends import resolve
from crashgate.harness.certify import certify
from crashgate.harness.interrupt import (
    interrupt_obeyed,
    interrupted,
    raise_if_interrupted,
    remembering_interrupts,
)
from crashgate.harness.stateful import run_model
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import BUDGETS, Row, RowContext


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """SIGINT at Python's own default, as in a terminal (a test runner may have changed it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _ctrl_c_swallowed() -> None:
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):   # the handler runs between bytecodes
            pass
    except KeyboardInterrupt:
        pass   # a library that caught it and carried on


def test_a_swallowed_ctrl_c_is_remembered_and_raised_again(python_sigint: None) -> None:
    with remembering_interrupts():
        assert not interrupted()
        _ctrl_c_swallowed()
        assert interrupted()
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
        interrupt_obeyed()   # whoever caught it stopped as asked (a soak keeps its evidence)
        raise_if_interrupted()
    assert not interrupted()   # forgotten on leaving, and Python's own handler is back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with remembering_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def _certify_one(tmp_path: Path, procedure: object) -> object:
    row = Row("test table", "t-1", "1", "a scenario", "an expectation", lambda _d: None,
              procedure)
    return certify(resolve("memory"), [row], budget=BUDGETS["quick"], seed=7,
                   workdir=tmp_path, context_factory=RowContext)


def test_a_row_that_swallowed_a_ctrl_c_is_not_a_pass(python_sigint: None,
                                                     tmp_path: Path) -> None:
    def check(_ctx: RowContext) -> Evidence:
        _ctrl_c_swallowed()
        return Evidence(Verdict.PASS, "consistent", {"crash_states": 1})

    with remembering_interrupts(), pytest.raises(KeyboardInterrupt):
        _certify_one(tmp_path, check)


def test_a_ctrl_c_turned_into_another_error_is_not_a_finding(python_sigint: None,
                                                             tmp_path: Path) -> None:
    replays = []

    def check(_ctx: RowContext) -> Evidence:
        replays.append(1)
        _ctrl_c_swallowed()
        raise AssertionError("the engine had not started")   # what Hypothesis raises then

    with remembering_interrupts(), pytest.raises(KeyboardInterrupt):
        _certify_one(tmp_path, check)
    assert replays == [1]   # not replayed as a failure either


def test_the_model_stops_at_its_next_step_after_a_swallowed_ctrl_c(python_sigint: None,
                                                                   tmp_path: Path) -> None:
    with remembering_interrupts():
        _ctrl_c_swallowed()
        with pytest.raises(KeyboardInterrupt):
            run_model(resolve("memory"), seed=1, examples=3, steps=5, workdir=tmp_path,
                      options=None)
