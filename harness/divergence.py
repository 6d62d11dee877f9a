"""Shadow-read accounting, as GitHub's Scientist does it: every comparison of a candidate's answer
with the control's is counted per operation type, matches and mismatches, with the first few
mismatches kept as examples (the key, both answers); and the mismatch rate is judged by its
exact binomial (Clopper-Pearson) bound, never by the observed rate alone.

Zero mismatches in ``n`` comparisons bounds the rate near ``3/n`` at 95% (the rule of three):
a gate of 0.01% needs about 30,000 comparisons before it can pass, and ``rate_verdict`` says
how many more it needs when it has fewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

from crashgate.harness.verdict import Verdict

__all__ = ["DivergenceLedger", "Mismatch", "RateVerdict", "Tally", "comparisons_needed",
           "rate_bounds", "rate_verdict"]

EXAMPLES = 10
"""Mismatches kept per operation type, the first ones seen."""


@dataclass(frozen=True)
class Mismatch:
    key: str
    control: Any
    candidate: Any


@dataclass
class Tally:
    """One operation type's comparisons."""

    matches: int = 0
    mismatches: int = 0
    examples: list[Mismatch] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.matches + self.mismatches


class DivergenceLedger:
    """Counts shadow comparisons per operation type. ``sampled`` and ``calls`` give the
    sampling rate: how many of the calls were compared at all (Scientist's percentage)."""

    def __init__(self, same: Callable[[Any, Any], bool] | None = None) -> None:
        self._same = same or (lambda a, b: a == b)
        self.tallies: dict[str, Tally] = {}
        self.calls = 0

    def call(self) -> None:
        """One call of the experiment, compared or not."""
        self.calls += 1

    def compare(self, op: str, key: str, control: Any, candidate: Any) -> bool:
        """Count one comparison; whether the two answers agree."""
        tally = self.tallies.setdefault(op, Tally())
        if self._same(control, candidate):
            tally.matches += 1
            return True
        tally.mismatches += 1
        if len(tally.examples) < EXAMPLES:
            tally.examples.append(Mismatch(key, control, candidate))
        return False

    @property
    def compared(self) -> int:
        return sum(t.compared for t in self.tallies.values())

    @property
    def mismatches(self) -> int:
        return sum(t.mismatches for t in self.tallies.values())

    @property
    def sampling_rate(self) -> float | None:
        """Compared / calls; None before any call."""
        return self.compared / self.calls if self.calls else None


def rate_bounds(mismatches: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds of the mismatch rate: ``(lower, upper)``, each at
    ``confidence`` (the rate is above ``lower``, and below ``upper``, with that confidence).
    With no comparison the rate is anywhere in [0, 1]."""
    if not 0 <= mismatches <= n:
        raise ValueError(f"mismatches {mismatches} must be between 0 and the comparisons {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be between 0 and 1, e.g. 0.95")
    if n == 0:
        return 0.0, 1.0
    lower = 0.0 if mismatches == 0 else float(stats.beta.ppf(1 - confidence, mismatches,
                                                             n - mismatches + 1))
    upper = 1.0 if mismatches == n else float(stats.beta.ppf(confidence, mismatches + 1,
                                                             n - mismatches))
    return lower, upper


def comparisons_needed(threshold: float, confidence: float = 0.95) -> int:
    """The fewest comparisons, all matches, whose upper bound is below ``threshold``: from
    ``(1 - threshold) ** n <= 1 - confidence`` (the zero-mismatch Clopper-Pearson bound)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold {threshold} must be a rate between 0 and 1, e.g. 0.0001")
    return math.ceil(math.log(1 - confidence) / math.log1p(-threshold))


@dataclass(frozen=True)
class RateVerdict:
    verdict: Verdict
    rate: float | None
    lower: float
    upper: float
    n: int
    summary: str


def rate_verdict(mismatches: int, n: int, threshold: float, confidence: float = 0.95
                 ) -> RateVerdict:
    """A "rate below ``threshold``" gate: pass when the upper bound is below it, fail when the
    lower bound is above it, else unknown, saying what more evidence would settle it."""
    lower, upper = rate_bounds(mismatches, n, confidence)
    rate = mismatches / n if n else None
    shown = f"{threshold:.4%}"
    if n and upper < threshold:
        return RateVerdict(Verdict.PASS, rate, lower, upper, n,
                           f"{mismatches} mismatches in {n} comparisons: the rate is below "
                           f"{upper:.4%} ({confidence:.0%} bound), under the {shown} gate")
    if lower > threshold:
        return RateVerdict(Verdict.FAIL, rate, lower, upper, n,
                           f"{mismatches} mismatches in {n} comparisons: the rate is above "
                           f"{lower:.4%} ({confidence:.0%} bound), over the {shown} gate")
    if mismatches == 0:
        more = comparisons_needed(threshold, confidence) - n
        why = (f"no comparison yet; {more} without a mismatch would pass the {shown} gate"
               if n == 0 else f"0 mismatches in {n} comparisons bound the rate only below "
               f"{upper:.4%}; {more} more without a mismatch would pass the {shown} gate")
    else:
        why = (f"{mismatches} mismatches in {n} comparisons: the rate is between {lower:.4%} "
               f"and {upper:.4%} ({confidence:.0%} bounds), which straddles the {shown} gate; "
               "more comparisons would settle it")
    return RateVerdict(Verdict.UNKNOWN, rate, lower, upper, n, why)
