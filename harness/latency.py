"""Latency of one store against another, measured so that the comparison means something on a
shared, noisy machine: both run the same operations in one process and one run, interleaved in
an order that alternates each round (drift and background load hit both), after a warm-up; the
answer is the ratio of medians with a bootstrap confidence interval (``scipy.stats.bootstrap``),
and an A/A comparison of the baseline with itself shows how far noise alone moves that ratio.

Zero samples on either side is no ratio at all: ``median_ratio`` refuses it rather than answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from crashgate.harness.verdict import Verdict

__all__ = ["Ratio", "Summary", "interleaved", "median_ratio", "ratio_verdict", "summarise"]


@dataclass(frozen=True)
class Summary:
    """Percentiles of one operation's latencies, in seconds, and how many samples."""

    n: int
    p50: float
    p95: float
    p99: float


@dataclass(frozen=True)
class Ratio:
    """candidate / baseline, of medians: ``point`` and the ``confidence`` interval
    ``[low, high]``; ``n`` the samples on each side."""

    point: float
    low: float
    high: float
    confidence: float
    n: tuple[int, int]

    def describe(self) -> str:
        return (f"{self.point:.2f} ({self.confidence:.0%} CI {self.low:.2f}-{self.high:.2f}, "
                f"n={self.n[0]}/{self.n[1]})")


def interleaved(calls: Mapping[str, Callable[[int], object]], n: int, warmup: int = 20,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, np.ndarray]:
    """Run each named call ``warmup`` times untimed, then ``n`` times timed, round by round,
    in an order that alternates each round; the latencies in seconds, by name. ``clock`` is
    what times them (a test's fake clock, which the calls advance)."""
    if n < 1:
        raise ValueError(f"n must be at least 1 sample per call, got {n}")
    names = list(calls)
    for i in range(warmup):
        for name in names:
            calls[name](-1 - i)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        for name in (names if i % 2 == 0 else names[::-1]):
            t = clock()
            calls[name](i)
            out[name].append(clock() - t)
    return {name: np.asarray(v) for name, v in out.items()}


def summarise(samples: Sequence[float] | np.ndarray) -> Summary:
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        raise ValueError("no samples: a latency with nothing measured has no percentiles")
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return Summary(int(a.size), float(p50), float(p95), float(p99))


def _median_ratio(c: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.median(c, axis=axis) / np.median(b, axis=axis))


def median_ratio(candidate: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray,
                 confidence: float = 0.95, resamples: int = 2000, seed: int = 1) -> Ratio:
    """The ratio of medians, candidate over baseline, with a percentile bootstrap interval
    (the two samples resampled independently: they are not paired)."""
    c, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if c.size == 0 or b.size == 0:
        raise ValueError(f"no ratio from {c.size} candidate and {b.size} baseline samples: "
                         "measure both before comparing")
    res = stats.bootstrap((c, b), _median_ratio, paired=False, vectorized=True,
                          n_resamples=resamples, confidence_level=confidence,
                          method="percentile", random_state=np.random.default_rng(seed))
    ci = res.confidence_interval
    return Ratio(float(_median_ratio(c, b)), float(ci.low), float(ci.high), confidence,
                 (int(c.size), int(b.size)))


def ratio_verdict(ratio: Ratio | None, threshold: float, what: str = "latency"
                  ) -> tuple[Verdict, str]:
    """A "within ``threshold``x" gate (ADR-072: reads within 2x, writes within 1.5x): pass
    only when the interval's upper end is within it, fail when its lower end is beyond it,
    unknown in between, and unknown with no ratio (nothing measured)."""
    if threshold <= 0:
        raise ValueError(f"threshold {threshold} must be a positive ratio, e.g. 2.0")
    if ratio is None:
        return Verdict.UNKNOWN, f"no {what} samples: nothing to compare with {threshold}x"
    if ratio.high <= threshold:
        return Verdict.PASS, f"{what} ratio {ratio.describe()}: within {threshold}x"
    if ratio.low > threshold:
        return Verdict.FAIL, f"{what} ratio {ratio.describe()}: beyond {threshold}x"
    return Verdict.UNKNOWN, (f"{what} ratio {ratio.describe()}: the interval straddles "
                             f"{threshold}x; more samples (or less noise) would settle it")
