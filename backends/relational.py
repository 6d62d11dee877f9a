"""ADR-072's relational operations on a store: Q-values and GOAP plans, an optional capability
(``Capability.RELATIONAL``), and the input rules every store applies to them, so that all
stores refuse and normalise alike. Key-value scan by prefix is ``KVStore.scan``."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["MAX_UPDATES", "QValue", "Relational", "check_q_record", "check_q_value",
           "next_update_count",
           "check_relational_id", "plan_json"]

MAX_UPDATES = 2**63 - 1
"""The largest update count a store keeps (SQLite's INTEGER is a signed 64-bit integer)."""


@dataclass(frozen=True)
class QValue:
    """The Q-value of one (state, action): ``value`` as last written, and ``updates``, how many
    ``q_value_update`` calls it has had (a lost read-modify-write shows as a count short of
    the calls)."""

    value: float
    updates: int


@runtime_checkable
class Relational(Protocol):
    """ADR-072's relational operations (key-value scan by prefix is ``KVStore.scan``).

    Relational records are not key-value records: they never show in ``get``/``scan``, and
    key-value writes never touch them. Ids (state, action, plan id) are non-empty str;
    ``check_relational_id``, ``check_q_value`` and ``plan_json`` are the input rules every
    store applies, so all stores refuse and normalise alike."""

    def q_value_get(self, state: str, action: str) -> QValue | None:
        """The Q-value of (state, action); ``None`` if it was never updated."""
        ...

    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        """One atomic read-modify-write: the value becomes ``value`` and ``updates`` the old
        count + 1; returns the new QValue. Two updates (threads, or processes where the store
        allows several writers) never lose one. Acknowledged means durable as the store
        declares, like a put."""
        ...

    def q_values(self, state: str) -> dict[str, QValue]:
        """action -> QValue for every action of ``state`` ever updated (a Q-value scan)."""
        ...

    def q_value_put(self, state: str, action: str, q: QValue) -> None:
        """Write the Q-value of (state, action) exactly as ``q`` gives it, value and count
        (``check_q_record``): for copying a record from one store into another (a mirror must
        hold the truth's count, not replay the update). Atomic and durable like an update."""
        ...

    def q_value_delete(self, state: str, action: str) -> None:
        """Delete the Q-value of (state, action), so that ``q_value_get`` gives ``None`` and the
        next update counts from 1; deleting a missing one is not an error. For copying between
        stores only (a sync makes one store hold exactly what another holds): an agent never
        unlearns a Q-value. Atomic and durable like an update."""
        ...

    def relational_states(self) -> list[str]:
        """Every state with at least one Q-value, sorted."""
        ...

    def goap_ids(self) -> list[str]:
        """Every stored plan's id, sorted."""
        ...

    def goap_store(self, plan_id: str, plan: Mapping[str, Any]) -> None:
        """Store (or replace) a plan: a JSON object with str keys at every level."""
        ...

    def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None:
        """The plan as JSON gives it back (tuples become lists), a fresh copy; ``None`` if
        there is none."""
        ...

    def goap_delete(self, plan_id: str) -> None:
        """Delete a plan; deleting a missing one is not an error."""
        ...


def check_relational_id(name: str, value: object) -> str:
    """``value`` as a state, action or plan id (``name`` is the argument's name): a non-empty
    str that encodes to UTF-8 (SQLite TEXT and RVF's META keys hold UTF-8 only)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}; pass "
                        f"the {name} as text")
    if not value:
        raise ValueError(f"{name} is empty; give a non-empty {name}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {value!r} holds a lone surrogate; use a {name} that encodes "
                         "to UTF-8") from None
    return value


def check_q_value(value: object, name: str = "value") -> float:
    """``value`` as a Q-value: a finite real number (not a bool), as a float. -0.0 becomes 0.0,
    since SQLite's REAL does not keep the sign of zero and every store must answer alike.
    ``name`` is the argument's name, for the error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}; "
                        "pass a float")
    try:
        out = float(value)
    except OverflowError:
        raise ValueError(f"{name} is an integer too large for a float (a Q-value is a finite "
                         "float); pass a smaller number") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} {value!r} is not finite; a Q-value must be a finite float")
    return out + 0.0


def check_q_record(q: object) -> QValue:
    """``q`` as a Q-value record to write as it is (``q_value_put``): a ``QValue`` whose value
    passes ``check_q_value`` and whose count is an int (not a bool) from 1, the count after the
    first update, to ``MAX_UPDATES``. The value comes back normalised (-0.0 as 0.0)."""
    if not isinstance(q, QValue):
        raise TypeError(f"q must be a QValue, got {type(q).__name__}: {q!r}; pass "
                        "QValue(value, updates), e.g. what q_value_get returned")
    value = check_q_value(q.value, "q.value")
    if isinstance(q.updates, bool) or not isinstance(q.updates, int):
        raise TypeError(f"q.updates must be an int, got {type(q.updates).__name__}: "
                        f"{q.updates!r}; pass the update count")
    if not 1 <= q.updates <= MAX_UPDATES:
        raise ValueError(f"q.updates is {q.updates}; a Q-value that exists has had 1 to "
                         f"{MAX_UPDATES} updates (to remove one, use q_value_delete)")
    return QValue(value, q.updates)


def next_update_count(state: str, action: str, old: QValue | None) -> int:
    """The update count after one more ``q_value_update`` of (state, action), whose record is
    ``old`` (None: never updated); ``ValueError``, before anything is written, when it has
    had ``MAX_UPDATES`` already: no store can count further (SQLite's INTEGER is a signed
    64-bit integer), and a count that wrapped or stuck would hide lost updates."""
    updates = old.updates if old is not None else 0
    if updates >= MAX_UPDATES:
        raise ValueError(f"the Q-value ({state!r}, {action!r}) has had {MAX_UPDATES} updates, "
                         "the most a store counts; nothing was written (to count from 1 "
                         "again, q_value_delete it)")
    return updates + 1


def plan_json(plan: object) -> str:
    """A GOAP plan as its canonical JSON text (sorted keys, compact, no NaN or infinity): the
    form every store keeps. ``plan`` must be a mapping with str keys at every level, holding
    only what JSON holds (str, int, float, bool, None, lists, tuples, mappings)."""
    if not isinstance(plan, Mapping):
        raise TypeError(f"plan must be a JSON object (a Mapping), got {type(plan).__name__}: "
                        f"{plan!r}; pass a dict")
    _check_json_keys(plan, "plan")
    try:
        text = json.dumps(plan, sort_keys=True, separators=(",", ":"), allow_nan=False,
                          ensure_ascii=False, default=_not_json)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("plan holds a str with a lone surrogate; use text that encodes to "
                         "UTF-8") from None
    except ValueError as exc:   # NaN or infinity, or a circular reference
        raise ValueError(f"plan is not JSON: {exc}; use finite numbers and no cycles") from None
    return text


def _check_json_keys(value: object, where: str) -> None:
    # json.dumps turns the keys 1 and True into "1" and "true": a plan read back would differ
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"plan key {key!r} at {where} is a {type(key).__name__}; JSON "
                                "object keys are str, so use str keys")
            _check_json_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_keys(item, f"{where}[{i}]")


def _not_json(value: object) -> Any:
    if isinstance(value, Mapping):   # json.dumps writes only dicts as objects
        return dict(value)
    raise TypeError(f"plan holds a {type(value).__name__} ({value!r}), which JSON cannot hold; "
                    "use str, int, float, bool, None, lists and dicts")
