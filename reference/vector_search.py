"""Exact k-nearest-neighbour search with NumPy: the query path of every reference store.

Distances and the filter grammar are the contract's (``backends.search``: ``distances``,
``matches``, ``check_where``), re-exported here under the names reference stores import; the
harness's oracle (``harness.vector_oracle``) uses the same functions. Results are ordered by
(distance, id), so ties are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import Hit
from crashgate.backends.search import METRICS, check_where, distances, matches

__all__ = ["METRICS", "check_where", "distances", "exact_search", "matches"]


def exact_search(
    ids: Sequence[int] | np.ndarray,
    matrix: np.ndarray,
    metadata: Sequence[Mapping[str, Any]],
    query: Sequence[float] | np.ndarray,
    k: int,
    metric: str,
    where: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """The ``k`` nearest rows whose metadata matches ``where``, as hits ordered by (distance,
    id). A malformed ``where`` is a ``ValueError`` before anything is searched."""
    check_where(where)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if len(ids) == 0 or k == 0:
        return []
    d = distances(matrix, query, metric)
    id_arr = np.asarray(ids, dtype=np.uint64)
    keep = np.arange(len(id_arr))
    if where:
        keep = np.array([i for i in keep if matches(metadata[int(i)], where)], dtype=np.int64)
        if keep.size == 0:
            return []
    order = np.lexsort((id_arr[keep], d[keep]))[:k]
    return [Hit(int(id_arr[keep[i]]), float(d[keep[i]]), dict(metadata[keep[i]])) for i in order]
