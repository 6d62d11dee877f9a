"""The vector oracle: what a query must answer, given the live records, and recall with its
confidence interval for stores that promise approximate search (``Declaration.recall``).

Exact NumPy search over the records (float64, ``backends.search.distances``) is the truth.
Ties are first-class: records whose distances agree within ``TOLERANCE`` are interchangeable,
so a store may return either of two equidistant ids. Whatever a store promises, each hit must
be live, match the filter, carry its record's metadata and its exact distance, come once, and
the hits must be ordered by (distance, id) and number ``min(k, matching)``; an exact store must
also return the true ``k`` nearest (``check_exact``), an approximate one is tallied for
recall@k (``check_approximate``, ``RecallTally``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from crashgate.backends import Hit, Recall, VectorRecord, check_where, distances, matches
from crashgate.harness.verdict import Verdict

__all__ = ["TOLERANCE", "Oracle", "Probe", "RecallTally", "check_approximate", "check_exact",
           "check_hits", "expected", "probe_queries"]

TOLERANCE = 1e-6
"""Distances agree when within this, absolutely or relative to the larger (DESIGN: 1e-6)."""


def _close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


@dataclass(frozen=True)
class _Truth:
    """The matching records ordered by (exact distance, id): ``ids[i]`` at ``dist[i]``."""

    ids: tuple[int, ...]
    dist: tuple[float, ...]
    by_id: Mapping[int, VectorRecord]       # every live record, matching or not
    at: Mapping[int, float]                 # exact distance of each matching id


class Oracle:
    """The exact answers over one fixed set of live records, prepared once (ids, a float64
    matrix, metadata by row): for many queries over the same records (a benchmark, a recovered
    state queried with many probes). ``records`` are the live records (ids unique)."""

    def __init__(self, records: Iterable[VectorRecord], metric: str) -> None:
        self.by_id = {int(r.id): r for r in records}
        ordered = sorted(self.by_id.values(), key=lambda r: r.id)
        self.metric = metric
        self._ids = np.array([r.id for r in ordered], dtype=np.uint64)
        self._matrix = np.array([r.vector for r in ordered], dtype=np.float64)
        self._metadata = [r.metadata for r in ordered]

    def truth(self, query: Sequence[float] | np.ndarray,
              where: Mapping[str, Any] | None) -> _Truth:
        check_where(where)
        keep = np.arange(len(self._ids))
        if where:
            keep = np.array([i for i, m in enumerate(self._metadata) if matches(m, where)],
                            dtype=np.int64)
        if keep.size == 0:
            return _Truth((), (), self.by_id, {})
        d = distances(self._matrix[keep], query, self.metric)
        order = np.lexsort((self._ids[keep], d))
        ids = tuple(int(x) for x in self._ids[keep][order])
        dist = tuple(float(x) for x in d[order])
        return _Truth(ids, dist, self.by_id, dict(zip(ids, dist, strict=True)))

    def check(self, hits: Sequence[Hit], query: Sequence[float] | np.ndarray, k: int,
              where: Mapping[str, Any] | None = None, recall: Recall | None = None,
              tol: float = TOLERANCE) -> tuple[str | None, int, int]:
        """``check_hits`` over these records."""
        return _judge(hits, self.truth(query, where), k, recall, tol)


def _truth(records: Iterable[VectorRecord], query: Sequence[float] | np.ndarray, metric: str,
           where: Mapping[str, Any] | None) -> _Truth:
    return Oracle(records, metric).truth(query, where)


def expected(records: Iterable[VectorRecord], query: Sequence[float] | np.ndarray, k: int,
             metric: str, where: Mapping[str, Any] | None = None) -> list[Hit]:
    """The exact answer: the ``min(k, matching)`` nearest records matching ``where``, as hits
    (exact float64 distance, the record's metadata) ordered by (distance, id). ``records``
    are the live records (ids unique)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    t = _truth(records, query, metric, where)
    return [Hit(i, d, dict(t.by_id[i].metadata)) for i, d in zip(t.ids[:k], t.dist[:k],
                                                                 strict=True)]


def _common(hits: Sequence[Hit], t: _Truth, k: int, tol: float) -> str | None:
    """What every store owes, exact or not; None when all holds."""
    want = min(k, len(t.ids))
    if len(hits) != want:
        return f"returned {len(hits)} hits; {len(t.ids)} records match, so min(k={k}, " \
               f"{len(t.ids)}) = {want} were due"
    seen: set[int] = set()
    for rank, hit in enumerate(hits):
        hid = int(hit.id)
        if hid in seen:
            return f"hit {rank}: id {hid} is returned twice"
        seen.add(hid)
        if hid not in t.by_id:
            return f"hit {rank}: id {hid} is not live"
        if hid not in t.at:
            return f"hit {rank}: id {hid} does not match the filter (its metadata " \
                   f"{dict(t.by_id[hid].metadata)})"
        if dict(hit.metadata) != dict(t.by_id[hid].metadata):
            return f"hit {rank}: id {hid} carries metadata {dict(hit.metadata)}, its record " \
                   f"holds {dict(t.by_id[hid].metadata)}"
        if not _close(float(hit.distance), t.at[hid], tol):
            return f"hit {rank}: id {hid} has distance {hit.distance}, exact search says " \
                   f"{t.at[hid]}"
    for rank in range(1, len(hits)):
        a, b = hits[rank - 1], hits[rank]
        da, db = float(a.distance), float(b.distance)
        # a tie is broken by id; distances within tol of each other may come in either
        # order (a store's own rounding decides), a clearly smaller one may not come later
        if (da == db and int(a.id) > int(b.id)) or (db < da and not _close(da, db, tol)):
            return f"hits {rank - 1} and {rank} are out of (distance, id) order: " \
                   f"(id {a.id}, {a.distance}) before (id {b.id}, {b.distance})"
    return None


def _kth(t: _Truth, k: int) -> float | None:
    """The true k-th nearest distance (of min(k, matching)); None when nothing matches."""
    n = min(k, len(t.ids))
    return t.dist[n - 1] if n else None


def check_exact(hits: Sequence[Hit], records: Iterable[VectorRecord],
                query: Sequence[float] | np.ndarray, k: int, metric: str,
                where: Mapping[str, Any] | None = None, tol: float = TOLERANCE) -> str | None:
    """A one-line problem with ``hits`` as the answer of an exact store, or None. Ids at equal
    distance (within ``tol``) are interchangeable: any of the records tied at the k-th distance
    may fill the last places."""
    return _exact(hits, _truth(records, query, metric, where), k, tol)


def _exact(hits: Sequence[Hit], t: _Truth, k: int, tol: float) -> str | None:
    problem = _common(hits, t, k, tol)
    if problem is not None or _kth(t, k) is None:
        return problem
    got = {int(h.id) for h in hits}
    for rank, hit in enumerate(hits):
        if not _close(float(hit.distance), t.dist[rank], tol):
            missing = next((i for i in t.ids if i not in got and t.at[i] < hit.distance), None)
            why = f"; id {missing} at {t.at[missing]} is missing" if missing is not None else ""
            return f"hit {rank}: id {hit.id} at {hit.distance}, but the exact rank-{rank} " \
                   f"distance is {t.dist[rank]}{why}"
    return None


def check_approximate(hits: Sequence[Hit], records: Iterable[VectorRecord],
                      query: Sequence[float] | np.ndarray, k: int, metric: str,
                      where: Mapping[str, Any] | None = None, tol: float = TOLERANCE
                      ) -> tuple[str | None, int, int]:
    """``(problem or None, found, possible)`` for ``hits`` as the answer of an approximate
    store: everything ``check_exact`` asks except that the hits be the true top k. ``found``
    counts hits that are true neighbours (a record at a distance <= the true k-th distance +
    ``tol``), ``possible`` is ``min(k, matching)``: recall@k is found / possible."""
    return _approximate(hits, _truth(records, query, metric, where), k, tol)


def _approximate(hits: Sequence[Hit], t: _Truth, k: int, tol: float
                 ) -> tuple[str | None, int, int]:
    problem = _common(hits, t, k, tol)
    kth = _kth(t, k)
    if kth is None:
        return problem, 0, 0
    bound = kth + tol * max(1.0, abs(kth))
    found = sum(1 for h in hits if int(h.id) in t.at and t.at[int(h.id)] <= bound)
    return problem, found, min(k, len(t.ids))


def check_hits(hits: Sequence[Hit], records: Iterable[VectorRecord],
               query: Sequence[float] | np.ndarray, k: int, metric: str,
               where: Mapping[str, Any] | None = None, recall: Recall | None = None,
               tol: float = TOLERANCE) -> tuple[str | None, int, int]:
    """``hits`` judged as the store's declaration asks (``Declaration.recall``): exact search
    when ``recall`` is None (``check_exact``; found = possible unless it failed), else
    ``check_approximate``. Returns ``(problem or None, found, possible)``."""
    return _judge(hits, _truth(records, query, metric, where), k, recall, tol)


def _judge(hits: Sequence[Hit], t: _Truth, k: int, recall: Recall | None, tol: float
           ) -> tuple[str | None, int, int]:
    if recall is not None:
        return _approximate(hits, t, k, tol)
    problem = _exact(hits, t, k, tol)
    possible = min(k, len(t.ids))
    return problem, possible if problem is None else 0, possible


@dataclass(frozen=True)
class Probe:
    """One query to put to a store: ``vector`` (dim,), ``k``, ``where`` (None: no filter)."""

    vector: tuple[float, ...]
    k: int
    where: Mapping[str, Any] | None = None

    def describe(self) -> str:
        head = ", ".join(f"{x:.6g}" for x in self.vector[:4])
        more = ", ..." if len(self.vector) > 4 else ""
        return f"query([{head}{more}], k={self.k}, where={dict(self.where or {}) or None})"


def _filters(records: Sequence[VectorRecord], rng: random.Random) -> list[dict[str, Any]]:
    """Filters built from the values the records hold: equality and ``$in`` on a str-valued
    key, a range on a number-valued key (bounds from the values present)."""
    out: list[dict[str, Any]] = []
    texts: dict[str, set[str]] = {}
    numbers: dict[str, list[float]] = {}
    for r in records:
        for key, value in r.metadata.items():
            if isinstance(value, str):
                texts.setdefault(key, set()).add(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                numbers.setdefault(key, []).append(value)
    for key in sorted(texts):
        values = sorted(texts[key])
        out.append({key: rng.choice(values)})
        out.append({key: {"$in": rng.sample(values, min(2, len(values)))}})
    for key in sorted(numbers):
        nums = sorted(numbers[key])
        lo, hi = nums[len(nums) // 4], nums[(3 * len(nums)) // 4]
        out.append({key: {"$gte": lo, "$lt": hi}} if lo < hi else {key: {"$lte": lo}})
    return out


def probe_queries(records: Sequence[VectorRecord], seed: int, count: int = 8) -> list[Probe]:
    """``count`` queries for a store holding ``records`` (deterministic for ``seed``): half at
    a record's own vector (a distance-0 neighbour), half at a record's vector moved a little;
    ``k`` 1, 10 or more than the records; every other one with a filter built from the
    records' metadata (``_filters``). None without records."""
    if not records:
        return []
    rng = random.Random(seed)
    ordered = sorted(records, key=lambda r: r.id)
    filters = _filters(ordered, rng)
    probes = []
    for i in range(count):
        base = rng.choice(ordered).vector
        vector = base if i % 2 == 0 else tuple(x + rng.uniform(-0.1, 0.1) for x in base)
        k = (1, 10, len(ordered) + 3)[i % 3]
        where = filters[(i // 2) % len(filters)] if filters and i % 2 == 1 else None
        probes.append(Probe(tuple(float(x) for x in vector), k, where))
    return probes


@dataclass
class RecallTally:
    """Neighbour slots over many queries: ``found`` true neighbours of ``possible`` slots."""

    found: int = 0
    possible: int = 0
    queries: int = 0

    def add(self, found: int, possible: int) -> None:
        if not 0 <= found <= possible:
            raise ValueError(f"found={found}, possible={possible}: need 0 <= found <= possible")
        self.found += found
        self.possible += possible
        self.queries += 1

    @property
    def recall(self) -> float | None:
        return self.found / self.possible if self.possible else None

    def interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """The Wilson interval for recall; None when nothing was counted. Each neighbour slot
        is treated as an independent trial: slots of one query are correlated, so the interval
        is narrower than the truth when a store fails whole queries at once."""
        if not self.possible:
            return None
        ci = stats.binomtest(self.found, self.possible).proportion_ci(
            confidence_level=confidence, method="wilson")
        return float(ci.low), float(ci.high)

    def verdict(self, promise: Recall, confidence: float = 0.95) -> tuple[Verdict, str]:
        """``pass`` when the interval's low end is at least the promise, ``fail`` when its high
        end is below it, ``unknown`` otherwise and when nothing was counted."""
        interval = self.interval(confidence)
        if interval is None:
            return Verdict.UNKNOWN, f"no neighbour slot counted: {promise} not measured"
        low, high = interval
        seen = (f"recall@{promise.k} {self.found}/{self.possible} = {self.recall:.4f} over "
                f"{self.queries} queries, {confidence:.0%} interval [{low:.4f}, {high:.4f}]")
        if low >= promise.at_least:
            return Verdict.PASS, f"{seen}: holds {promise}"
        if high < promise.at_least:
            return Verdict.FAIL, f"{seen}: below the promised {promise}"
        return Verdict.UNKNOWN, f"{seen}: too few slots to decide {promise}"
