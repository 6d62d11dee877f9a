"""harness/latency.py: interleaving alternates the order, the ratio of medians and its bootstrap
interval recover a known ratio, and nothing measured is no ratio."""

from __future__ import annotations

import numpy as np
import pytest

from crashgate.harness.latency import interleaved, median_ratio, ratio_verdict, summarise
from crashgate.harness.verdict import Verdict


def test_interleaving_alternates_the_order_each_round_after_the_warm_up() -> None:
    order: list[tuple[str, int]] = []
    got = interleaved({"a": lambda i: order.append(("a", i)),
                       "b": lambda i: order.append(("b", i))}, n=3, warmup=1)
    assert order == [("a", -1), ("b", -1), ("a", 0), ("b", 0), ("b", 1), ("a", 1),
                     ("a", 2), ("b", 2)]
    assert {k: v.size for k, v in got.items()} == {"a": 3, "b": 3}
    with pytest.raises(ValueError, match="at least 1"):
        interleaved({"a": lambda i: None}, n=0)


def test_a_known_ratio_is_inside_its_interval_and_an_aa_ratio_holds_one() -> None:
    rng = np.random.default_rng(3)
    base = rng.lognormal(0.0, 0.2, 400)
    slow = 2.0 * rng.lognormal(0.0, 0.2, 400)
    r = median_ratio(slow, base)
    assert r.low < 2.0 < r.high and r.high - r.low < 0.3 and r.n == (400, 400)
    aa = median_ratio(rng.lognormal(0.0, 0.2, 400), base)
    assert aa.low < 1.0 < aa.high
    assert "95% CI" in r.describe()


def test_nothing_measured_is_no_ratio_and_no_percentile() -> None:
    with pytest.raises(ValueError, match="no ratio from 0 candidate"):
        median_ratio([], [1.0, 2.0])
    with pytest.raises(ValueError, match="no samples"):
        summarise([])
    s = summarise([1.0, 2.0, 3.0, 4.0])
    assert s.n == 4 and s.p50 == 2.5 and s.p50 <= s.p95 <= s.p99 <= 4.0


class FakeClock:
    """A clock the calls advance by a deterministic cost: no real time is measured."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def _gate(factor: float, n: int = 300, threshold: float = 2.0) -> Verdict:
    """Baseline and candidate run interleaved on a fake clock; the candidate costs ``factor``
    times the baseline's cost, each call's cost drawn from one seeded jitter."""
    clock = FakeClock()
    jitter = np.random.default_rng(11).lognormal(0.0, 0.25, 4 * (n + 20))
    step = iter(range(len(jitter)))
    calls = {"baseline": lambda i: clock.spend(1e-4 * jitter[next(step)]),
             "candidate": lambda i: clock.spend(factor * 1e-4 * jitter[next(step)])}
    got = interleaved(calls, n, clock=clock)
    verdict, _ = ratio_verdict(median_ratio(got["candidate"], got["baseline"]), threshold)
    return verdict


def test_a_read_gate_fails_3x_passes_1_2x_and_an_aa_run() -> None:
    assert _gate(3.0) is Verdict.FAIL
    assert _gate(1.2) is Verdict.PASS
    assert _gate(1.0) is Verdict.PASS
    assert _gate(2.0, n=40) is Verdict.UNKNOWN   # right at the gate: the interval straddles it


def test_a_gate_with_nothing_measured_is_unknown() -> None:
    verdict, why = ratio_verdict(None, 1.5, "write latency")
    assert verdict is Verdict.UNKNOWN and "no write latency samples" in why
