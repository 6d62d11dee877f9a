"""A row's evidence combined from several checks is summed up by what decided it: a fail by
its failing part, an unknown by its undecided part, and only a pass by the pass summary."""

from __future__ import annotations

from crashgate.harness.verdict import Evidence, Verdict, combine

PASS_TEXT = "every acknowledged op kept"


def test_an_unknown_part_sums_up_the_row_not_the_pass_text() -> None:
    parts = [Evidence(Verdict.PASS, "round 1 recovered", {"ops": 3}),
             Evidence(Verdict.UNKNOWN, "the store cannot answer fetch", {"ops": 2})]
    ev = combine(parts, PASS_TEXT)
    assert ev.verdict is Verdict.UNKNOWN
    assert ev.summary == "the store cannot answer fetch"
    assert PASS_TEXT not in ev.summary


def test_a_fail_sums_up_the_row_and_a_pass_gets_the_pass_text() -> None:
    fail = combine([Evidence(Verdict.UNKNOWN, "undecided", {"n": 1}),
                    Evidence(Verdict.FAIL, "lost op 7", {"n": 1})], PASS_TEXT)
    assert fail.verdict is Verdict.FAIL and fail.summary == "lost op 7"
    ok = combine([Evidence(Verdict.PASS, "round 1", {"n": 1}),
                  Evidence(Verdict.NA, "not here")], PASS_TEXT)
    assert ok.verdict is Verdict.PASS and ok.summary == PASS_TEXT
    assert ok.measured["n"] == 1
