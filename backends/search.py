"""What a vector query means, for every store and for the harness that checks it: the distance
functions, the metadata filter grammar (``where``) and the recall a store promises.

A filter maps a metadata key to a condition; a record matches when every key's condition holds:

- a plain value (anything but a dict whose keys all start with ``$``): equal as JSON values
  (a bool equals only a bool, numbers compare numerically so ``1 == 1.0``, lists and dicts
  element by element under the same rule); a key absent from the metadata never matches;
- ``{"$eq": v}`` the same, ``{"$ne": v}`` present and not equal, ``{"$in": [v, ...]}`` equal to
  one of the list's values;
- ranges ``{"$gt": x, "$gte": x, "$lt": x, "$lte": x}``: the value is a number (int or float,
  never a bool) within every bound. Operators of one condition combine with AND.

A malformed filter is a ``ValueError`` naming the key, the operator and the fix, raised by
``check_where`` before anything is searched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["METRICS", "OPERATORS", "Recall", "check_where", "distances", "json_equal",
           "matches"]

METRICS = ("l2", "cosine")
RANGES = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$eq", "$ne", "$in", *RANGES)


@dataclass(frozen=True)
class Recall:
    """An approximate store's promise: recall@``k`` (the share of the true ``k`` nearest among
    the ``k`` returned, ties at the k-th distance counted as true) is at least ``at_least``."""

    k: int = 10
    at_least: float = 0.95

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"Recall(k={self.k!r}): k must be an int >= 1, e.g. Recall(k=10)")
        if not 0.0 < float(self.at_least) <= 1.0:
            raise ValueError(f"Recall(at_least={self.at_least!r}): at_least must be in (0, 1], "
                             "e.g. Recall(at_least=0.95)")

    def __str__(self) -> str:
        return f"recall@{self.k} >= {self.at_least:g}"


def distances(matrix: np.ndarray, query: Sequence[float] | np.ndarray, metric: str) -> np.ndarray:
    """Distances (float64, shape (n,)) from ``query`` (dim,) to each row of ``matrix`` (n, dim).
    ``l2`` is the Euclidean distance, ``cosine`` is 1 - cosine similarity (a zero vector has
    distance 1 to everything)."""
    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or q.ndim != 1 or m.shape[1] != q.shape[0]:
        raise ValueError(
            f"query has dimension {q.shape[0] if q.ndim == 1 else q.shape}, the store holds "
            f"dimension {m.shape[1] if m.ndim == 2 else '?'}")
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


# -- the filter grammar -------------------------------------------------------------------------


def _is_operators(condition: object) -> bool:
    return isinstance(condition, dict) and all(
        isinstance(k, str) and k.startswith("$") for k in condition)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_where(where: Mapping[str, Any] | None) -> None:
    """Raise ``ValueError`` if ``where`` is not a filter of the grammar above; None and ``{}``
    are the empty filter (everything matches)."""
    if where is None:
        return
    if not isinstance(where, Mapping):
        raise ValueError(f"where={where!r} is not a mapping of metadata key to condition; "
                         "pass e.g. where={'tag': 'x'} or None")
    for key, condition in where.items():
        if not isinstance(key, str):
            raise ValueError(f"where key {key!r} is not a str: metadata keys are JSON object "
                             f"keys; use {str(key)!r}")
        if _is_operators(condition):
            _check_operators(key, condition)


def _check_operators(key: str, ops: Mapping[str, Any]) -> None:
    if not ops:
        raise ValueError(f"where[{key!r}] is an empty operator dict; give one of {OPERATORS}, "
                         f"e.g. {{{key!r}: {{'$eq': value}}}}")
    for op, arg in ops.items():
        if op not in OPERATORS:
            raise ValueError(f"where[{key!r}] has unknown operator {op!r}; use one of "
                             f"{OPERATORS}")
        if op == "$in" and not isinstance(arg, list | tuple):
            raise ValueError(f"where[{key!r}]['$in'] is {arg!r}, not a list; give the values "
                             f"as a list, e.g. {{'$in': [{arg!r}]}}")
        if op in RANGES and (not _is_number(arg) or math.isnan(arg)):
            raise ValueError(f"where[{key!r}][{op!r}] is {arg!r}, not a number; a range bound "
                             "is an int or float (not a bool, not NaN)")


def json_equal(a: object, b: object) -> bool:
    """Equality of two JSON values: a bool equals only a bool, numbers compare numerically,
    lists (or tuples) and dicts element by element under this same rule."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return (isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b)
                and all(json_equal(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (isinstance(a, Mapping) and isinstance(b, Mapping) and a.keys() == b.keys()
                and all(json_equal(a[k], b[k]) for k in a))
    return a == b


def _holds(op: str, arg: Any, value: Any) -> bool:
    if op == "$eq":
        return json_equal(value, arg)
    if op == "$ne":
        return not json_equal(value, arg)
    if op == "$in":
        return any(json_equal(value, v) for v in arg)
    if not _is_number(value):   # ranges hold numbers only
        return False
    if op == "$gt":
        return bool(value > arg)
    if op == "$gte":
        return bool(value >= arg)
    if op == "$lt":
        return bool(value < arg)
    if op == "$lte":
        return bool(value <= arg)
    raise ValueError(f"unknown operator {op!r}; use one of {OPERATORS} (check_where first)")


def matches(metadata: Mapping[str, Any], where: Mapping[str, Any] | None) -> bool:
    """Whether ``metadata`` satisfies every condition of ``where`` (see the module docstring).
    Call ``check_where`` once first: this is called per record and assumes a valid filter."""
    if not where:
        return True
    for key, condition in where.items():
        if key not in metadata:
            return False
        value = metadata[key]
        if _is_operators(condition):
            if not all(_holds(op, arg, value) for op, arg in condition.items()):
                return False
        elif not json_equal(value, condition):
            return False
    return True
