"""harness/divergence.py: shadow comparisons counted per operation type with examples, and the
mismatch rate judged by its exact binomial bounds (a Hypothesis test over the fraction and the
sample size), with the comparisons a gate still needs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashgate.harness.divergence import (
    DivergenceLedger,
    comparisons_needed,
    rate_bounds,
    rate_verdict,
)
from crashgate.harness.verdict import Verdict


def test_comparisons_are_counted_per_operation_with_the_first_mismatches_kept() -> None:
    ledger = DivergenceLedger()
    for i in range(30):
        ledger.call()
        if i % 3:   # a third of the calls are not compared (the sampling rate)
            ledger.compare("get", f"k{i}", b"v", b"v" if i % 5 else b"other")
    ledger.compare("query", "q", [1, 2], [1, 2])
    get = ledger.tallies["get"]
    assert (get.matches, get.mismatches) == (16, 4)
    assert [m.key for m in get.examples] == ["k5", "k10", "k20", "k25"]
    assert get.examples[0].control == b"v" and get.examples[0].candidate == b"other"
    assert ledger.compared == 21 and ledger.mismatches == 4
    assert ledger.sampling_rate == pytest.approx(21 / 30)


def test_zero_mismatches_bound_the_rate_near_three_over_n() -> None:
    _, upper = rate_bounds(0, 30_000)
    assert upper == pytest.approx(-math.log(0.05) / 30_000, rel=1e-3)
    needed = comparisons_needed(1e-4)
    assert 29_900 <= needed <= 30_000
    assert rate_verdict(0, needed, 1e-4).verdict is Verdict.PASS
    short = rate_verdict(0, 10_000, 1e-4)
    assert short.verdict is Verdict.UNKNOWN and f"{needed - 10_000} more" in short.summary
    empty = rate_verdict(0, 0, 1e-4)
    assert empty.verdict is Verdict.UNKNOWN and empty.rate is None
    assert "no comparison yet" in empty.summary


def test_a_rate_clearly_over_the_gate_fails() -> None:
    got = rate_verdict(50, 10_000, 1e-4)
    assert got.verdict is Verdict.FAIL and got.lower > 1e-4


@settings(max_examples=200, deadline=None)
@given(fraction=st.floats(0.0, 0.5), n=st.integers(1, 50_000))
def test_a_shadow_disagreeing_on_a_known_fraction_is_measured_within_its_bounds(
        fraction: float, n: int) -> None:
    """The shadow disagrees on exactly every read a fixed pattern marks (a known fraction):
    the measured rate is the fraction, and the bounds hold it; they also tighten as n grows."""
    ledger = DivergenceLedger()
    wrong = {i for i in range(n) if math.floor((i + 1) * fraction) > math.floor(i * fraction)}
    for i in range(min(n, 2_000)):   # the ledger itself, on a prefix
        ledger.compare("get", str(i), 0, 1 if i in wrong else 0)
    assert ledger.mismatches == len([i for i in wrong if i < min(n, 2_000)])
    k = len(wrong)
    assert k == math.floor(n * fraction)
    lower, upper = rate_bounds(k, n)
    assert lower <= k / n <= upper
    assert lower <= fraction + 1 / n and upper >= fraction - 1 / n
    if n >= 100:
        lo4, up4 = rate_bounds(4 * k, 4 * n)
        assert up4 - lo4 <= upper - lower + 1e-12
