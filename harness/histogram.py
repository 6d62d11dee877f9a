"""A latency histogram that merges exactly: log-spaced buckets, so shards of a soak, or the
minutes of one, add their counts and the quantiles of the sum are those of all the samples.

The scheme (DDSketch's, Masson et al. 2019): bucket i holds [L·γ^i, L·γ^(i+1)) with
γ = (1+α)/(1−α), and reports 2·L·γ^(i+1)/(1+γ) = L·γ^i·(1+α), which is within a relative
error α of every value in the bucket. Defaults: α = 1% and L = 1 µs up to 1000 s (1,037
buckets; only the used ones are stored). Values under 1 µs count as 1 µs and over 1000 s as
1000 s (a latency there is broken anyway). ``min`` and ``max`` are exact, so are
``quantile(0)`` and ``quantile(1)``, and other quantiles are clamped to them. The sum is kept
in integer nanoseconds, so ``mean`` merges exactly too.

``quantile(q)`` estimates the sample of rank ⌊q·(n−1)⌋ (numpy's ``method="lower"``) to within
α relative: with 100 samples, ``quantile(0.99)`` is the 99th smallest, not an interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["LatencyHistogram", "SCHEME_VERSION"]

SCHEME_VERSION = 1


class LatencyHistogram:
    """Counts of latencies (seconds) per log bucket; ``record``, ``merge``, ``quantile``."""

    def __init__(self, alpha: float = 0.01, lowest: float = 1e-6, highest: float = 1000.0):
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha is the relative error, between 0 and 0.5; got {alpha!r} "
                             f"(0.01 is 1%)")
        if not 0 < lowest < highest:
            raise ValueError(f"need 0 < lowest < highest seconds, got lowest={lowest!r}, "
                             f"highest={highest!r}")
        self.alpha, self.lowest, self.highest = alpha, lowest, highest
        self._gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self._gamma)
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total_ns = 0
        self._min = math.inf
        self._max = -math.inf

    @property
    def scheme(self) -> dict[str, Any]:
        """What fixes the buckets; two histograms merge only when theirs are equal."""
        return {"name": "log", "version": SCHEME_VERSION, "alpha": self.alpha,
                "lowest": self.lowest, "highest": self.highest}

    def _index(self, seconds: float) -> int:
        x = min(max(seconds, self.lowest), self.highest)
        return int(math.floor(math.log(x / self.lowest) / self._log_gamma))

    def _value(self, index: int) -> float:
        return self.lowest * self._gamma ** index * (1 + self.alpha)

    def record(self, seconds: float, n: int = 1) -> None:
        """Count ``n`` samples of ``seconds`` (>= 0, finite)."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"a latency is a finite number of seconds >= 0, got {seconds!r}")
        i = self._index(seconds)
        self.buckets[i] = self.buckets.get(i, 0) + n
        self.count += n
        self.total_ns += round(seconds * 1e9) * n
        self._min = min(self._min, seconds)
        self._max = max(self._max, seconds)

    def extend(self, samples: Iterable[float]) -> None:
        for s in samples:
            self.record(s)

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this one (exact); refuses a different bucket scheme."""
        if other.scheme != self.scheme:
            raise ValueError(f"cannot merge histograms of different bucket schemes: "
                             f"{self.scheme} and {other.scheme}; record both with the same "
                             f"alpha, lowest and highest")
        for i, c in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + c
        self.count += other.count
        self.total_ns += other.total_ns
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> LatencyHistogram:
        out = LatencyHistogram(self.alpha, self.lowest, self.highest)
        out.merge(self)
        return out

    @property
    def min(self) -> float | None:
        return self._min if self.count else None

    @property
    def max(self) -> float | None:
        return self._max if self.count else None

    @property
    def mean(self) -> float | None:
        return self.total_ns / self.count / 1e9 if self.count else None

    def quantile(self, q: float) -> float | None:
        """The sample of rank ⌊q·(n−1)⌋ within relative error ``alpha``; None when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"q is a quantile between 0 and 1, got {q!r} (0.99 for p99)")
        if not self.count:
            return None
        rank = math.floor(q * (self.count - 1))
        if rank in (0, self.count - 1):             # the extremes are kept exactly
            return self._min if rank == 0 else self._max
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen > rank:
                return min(max(self._value(i), self._min), self._max)
        raise AssertionError("bucket counts do not add up to count")  # unreachable

    def bounds(self) -> list[tuple[float, float, int]]:
        """``[(low, high, count), ...]`` per used bucket in order, for a plot."""
        return [(self.lowest * self._gamma ** i, self.lowest * self._gamma ** (i + 1), c)
                for i, c in sorted(self.buckets.items())]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return (f"LatencyHistogram(count={self.count}, p50={self.quantile(0.5)}, "
                f"p99={self.quantile(0.99)}, max={self.max})")

    def to_json(self) -> dict[str, Any]:
        """``{"scheme": {...}, "count", "total_ns", "min", "max", "buckets": [[i, c], ...]}``
        with only the used buckets, in order."""
        return {"scheme": self.scheme, "count": self.count, "total_ns": self.total_ns,
                "min": self.min, "max": self.max,
                "buckets": [[i, c] for i, c in sorted(self.buckets.items())]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LatencyHistogram:
        scheme = doc.get("scheme") or {}
        if scheme.get("name") != "log" or scheme.get("version") != SCHEME_VERSION:
            raise ValueError(f"histogram scheme {scheme!r} is not this version's "
                             f"(log, version {SCHEME_VERSION}): it was written by another "
                             f"crashgate; read it with that version")
        out = cls(scheme["alpha"], scheme["lowest"], scheme["highest"])
        out.buckets = {int(i): int(c) for i, c in doc["buckets"]}
        out.count, out.total_ns = int(doc["count"]), int(doc["total_ns"])
        if sum(out.buckets.values()) != out.count:
            raise ValueError(f"histogram buckets add up to {sum(out.buckets.values())}, not "
                             f"its count {out.count}: the document is damaged")
        if out.count:
            out._min, out._max = float(doc["min"]), float(doc["max"])
        return out
