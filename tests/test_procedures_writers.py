"""Row 3 and invariant 1 with real processes: pass on RVF, n/a without a writer lock, and an RVF
store that ignores its lock is caught."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from procedure_helpers import assert_caught, context

from crashgate.backends import Capability, Declaration, Durability, resolve
from crashgate.harness.faults.writers import Outcome
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_writers import (
    Passage,
    _recover,
    _Run,
    check_duplicate_writer,
    passage,
    round_plan,
    single_writer_rule,
    two_writers,
)


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


# -- a store that reads the real clock (Declaration.real_clock): the time passes for real ----

REAL = Declaration(Durability.PROCESS_CRASH, frozenset({Capability.WRITER_LOCK}),
                   real_clock=True)
SIMULATED = dataclasses.replace(REAL, real_clock=False)


def test_a_real_clock_store_waits_for_real_instead_of_moving_the_clock() -> None:
    assert passage(REAL, 31) == Passage(real=31, ahead=0.0)
    assert passage(SIMULATED, 31) == Passage(real=0.0, ahead=31)
    # a check that may not wait (a later round's hold) moves the clock, and says so in notes
    assert passage(REAL, 31, real_allowed=False) == Passage(real=0.0, ahead=31)


@pytest.mark.parametrize(("rounds", "alternate"), [(1, True), (2, True), (2, False), (5, True),
                                                   (5, False)])
def test_a_real_clock_row_holds_for_real_once_not_once_a_round(rounds: int,
                                                               alternate: bool) -> None:
    plan = round_plan(rounds, alternate=alternate, real_clock=True)
    assert [past for past, _ in plan] == [not (alternate and i % 2) for i in range(rounds)]
    assert [real for _, real in plan] == [True] + [False] * (rounds - 1)
    assert not any(real for _, real in round_plan(rounds, alternate=alternate,
                                                  real_clock=False))


class _FakeWriter:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def opened(self) -> Outcome:
        return Outcome(self.kind, {"message": "ELOCK: held"} if self.kind == "LOCKHELD" else {})


class _FakeDW:
    """Hands out writers whose opens end as ``kinds`` say, one per writer, recording the clock
    offset each was started with."""

    def __init__(self, *kinds: str) -> None:
        self.kinds = list(kinds)
        self.offsets: list[float] = []

    def writer(self, label: str, *, clock_offset: float = 0.0, **_: Any) -> _FakeWriter:
        self.offsets.append(clock_offset)
        return _FakeWriter(self.kinds.pop(0))


def _recovering(decl: Declaration, *kinds: str) -> tuple[_Run, _FakeDW, list[float], bool]:
    slept: list[float] = []
    run = _Run(offset=31.0, sleep=slept.append)
    dw = _FakeDW(*kinds)
    got = _recover(run, dw, decl) is not None  # type: ignore[arg-type]
    return run, dw, slept, got


def test_a_real_clock_store_gets_its_recovering_writer_after_a_real_wait() -> None:
    run, dw, slept, got = _recovering(REAL, "LOCKHELD", "READY")
    assert got and slept == [31]
    assert dw.offsets == [31.0, 31.0]   # the clock is not moved: the store would not see it
    assert "a new writer recovered the lock once it was stale (30 s, waited for real)" in run.notes
    # the same on a store on crashgate's clock: no waiting, the writer's clock 31 s ahead
    run, dw, slept, got = _recovering(SIMULATED, "LOCKHELD", "READY")
    assert got and slept == [] and dw.offsets == [31.0, 62.0]


def test_a_real_clock_store_still_refusing_after_the_real_wait_fails() -> None:
    run, _, slept, got = _recovering(REAL, "LOCKHELD", "LOCKHELD")
    assert not got and slept == [31]
    assert run.problems == ["a new writer 31 s later (waited for real) did not recover the "
                            "killed writer's lock: LOCKHELD: ELOCK: held"]
    assert not any("env's clock only" in n for n in run.notes)


def test_a_store_that_cannot_read_back_is_judged_on_its_lock_and_unknown_on_its_data(
        tmp_path: Path) -> None:
    """The SDK's case: no op returns a stored record. The writers are still judged (B refused,
    A unharmed), and the row says the acknowledged writes were not checked: unknown, not a pass
    and not 'the check could not run'."""
    fake = shlex.join([sys.executable, str(Path(__file__).with_name("proc_fakes.py")),
                       "locked-no-fetch"])
    ev = check_duplicate_writer(resolve(f"proc:{fake}"), workdir=str(tmp_path),
                                past_stale=False)
    assert ev.verdict is Verdict.UNKNOWN, ev.summary
    assert ev.summary.startswith("acknowledged writes not checked (the store cannot answer "
                                 "fetch"), ev.summary
    assert "second writer got ELOCK naming the holder" in ev.summary
    assert ev.measured["acknowledged_writes"] > 0


def test_a_refusal_that_names_no_holder_fails_through_the_driver_too(tmp_path: Path) -> None:
    """The real package's refusal is "RVF error 0x0300: LockHeld": no pid, no host. A driver
    that sends no holder is not taken as naming one (its message is not its holder)."""
    fake = shlex.join([sys.executable, str(Path(__file__).with_name("proc_fakes.py")),
                       "anonymous-lock"])
    ev = check_duplicate_writer(resolve(f"proc:{fake}"), workdir=str(tmp_path),
                                past_stale=False)
    assert ev.verdict is Verdict.FAIL, ev.summary
    assert "the refusal does not name the holder: 'RVF error 0x0300: LockHeld'" in ev.summary
