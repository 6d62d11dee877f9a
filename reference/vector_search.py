"""Exact k-nearest-neighbour search with NumPy: the first query path of every reference store
and the oracle the harness checks approximate indexes against.

Distances: ``l2`` is the Euclidean distance, ``cosine`` is 1 - cosine similarity (a zero vector
has distance 1 to everything). Results are ordered by (distance, id), so ties are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import Hit

__all__ = ["METRICS", "distances", "exact_search", "matches"]

METRICS = ("l2", "cosine")


def distances(matrix: np.ndarray, query: Sequence[float] | np.ndarray, metric: str) -> np.ndarray:
    """Distances (float64) from ``query`` (dim,) to each row of ``matrix`` (n, dim)."""
    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != q.shape[0]:
        raise ValueError(
            f"query has dimension {q.shape[0]}, the store holds dimension "
            f"{m.shape[1] if m.ndim == 2 else '?'}"
        )
    if metric == "l2":
        diff = m - q
        return np.sqrt(np.einsum("ij,ij->i", diff, diff))
    if metric == "cosine":
        norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
        dots = m @ q
        with np.errstate(invalid="ignore", divide="ignore"):
            sim = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
        return 1.0 - sim
    raise ValueError(f"metric {metric!r} is not one of {METRICS}")


def matches(metadata: Mapping[str, Any], where: Mapping[str, Any] | None) -> bool:
    """Equality filter: every key of ``where`` is present in ``metadata`` with an equal value."""
    return not where or all(k in metadata and metadata[k] == v for k, v in where.items())


def exact_search(
    ids: Sequence[int] | np.ndarray,
    matrix: np.ndarray,
    metadata: Sequence[Mapping[str, Any]],
    query: Sequence[float] | np.ndarray,
    k: int,
    metric: str,
    where: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """The ``k`` nearest rows, as hits ordered by (distance, id)."""
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
