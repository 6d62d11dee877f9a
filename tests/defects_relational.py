"""Issue 10: stores whose ADR-072 relational records (``backends.Relational``) have one
deliberate defect each, for ``test_stateful_relational.py``. Each is a reference store with one
thing done wrong, opened by a factory (``defects_relational:open_loses_update_count`` ...):

- ``LosesUpdateCount`` (memory): ``q_value_update`` sets the value but does not add one to the
  count after the first update, the shape of a read-modify-write that lost its read.
- ``StalePlan`` (memory): ``goap_retrieve`` answers from a cache of the first plan stored under
  an id, so a plan that ``goap_store`` replaced is still what a read gets.
- ``WriteBackRelational`` (SQLite): the relational records live in memory and reach the
  database only at a clean ``close()`` (a write-back cache): every acknowledged Q-value update
  or plan write since the store was opened is lost to a crash, though SQLite promises more.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from crashgate.backends import (
    Env,
    QValue,
    check_options,
    check_q_value,
    check_relational_id,
    plan_json,
)
from crashgate.reference.memory import OPTIONS as MEMORY_OPTIONS
from crashgate.reference.memory import MemoryStore
from crashgate.reference.sqlite_store import OPTIONS as SQLITE_OPTIONS
from crashgate.reference.sqlite_store import SqliteStore

__all__ = ["LosesUpdateCount", "StalePlan", "WriteBackRelational", "open_loses_update_count",
           "open_stale_plan", "open_write_back_relational"]


class LosesUpdateCount(MemoryStore):
    """A Q-value update that keeps the old count (the first one still counts 1)."""

    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        key = (check_relational_id("state", state), check_relational_id("action", action))
        new_value = check_q_value(value)
        with self._q_lock:
            self._check_open()
            old = self._q.get(key)
            # the defect: the count is carried over, not incremented
            self._q[key] = new = QValue(new_value, old.updates if old else 1)
        return new


class StalePlan(MemoryStore):
    """``goap_retrieve`` serves the first plan ever stored under an id from a cache."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[str, dict[str, Any]] = {}

    def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None:
        plan = super().goap_retrieve(plan_id)
        if plan is None:
            self._cache.pop(plan_id, None)
            return None
        # the defect: a cached copy is never invalidated by a later goap_store
        return dict(self._cache.setdefault(plan_id, plan))


class WriteBackRelational(SqliteStore):
    """The SQLite store with its relational records held in memory between open and close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._q: dict[tuple[str, str], QValue] = {
            (s, a): q for s in super().relational_states() for a, q in super().q_values(s).items()}
        self._plans: dict[str, str] = {
            p: plan_json(super(WriteBackRelational, self).goap_retrieve(p) or {})
            for p in super().goap_ids()}
        self._dirty = False

    def q_value_get(self, state: str, action: str) -> QValue | None:
        self._check_open()
        return self._q.get((check_relational_id("state", state),
                            check_relational_id("action", action)))

    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        key = (check_relational_id("state", state), check_relational_id("action", action))
        new_value = check_q_value(value)
        with self._lock:
            self._check_open()
            old = self._q.get(key)
            self._q[key] = new = QValue(new_value, (old.updates if old else 0) + 1)
            self._dirty = True   # the defect: acknowledged, but only in memory
        return new

    def q_values(self, state: str) -> dict[str, QValue]:
        self._check_open()
        state = check_relational_id("state", state)
        return {a: q for (s, a), q in sorted(self._q.items()) if s == state}

    def relational_states(self) -> list[str]:
        self._check_open()
        return sorted({s for s, _ in self._q})

    def goap_ids(self) -> list[str]:
        self._check_open()
        return sorted(self._plans)

    def goap_store(self, plan_id: str, plan: Mapping[str, Any]) -> None:
        text = plan_json(plan)
        self._check_open()
        self._plans[check_relational_id("plan_id", plan_id)] = text
        self._dirty = True

    def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None:
        self._check_open()
        text = self._plans.get(check_relational_id("plan_id", plan_id))
        return None if text is None else dict(json.loads(text))

    def goap_delete(self, plan_id: str) -> None:
        self._check_open()
        self._plans.pop(check_relational_id("plan_id", plan_id), None)
        self._dirty = True

    def close(self) -> None:
        if not self._closed and self._dirty:   # write back what the session changed
            for state in super().relational_states():
                for action in super().q_values(state):
                    if (state, action) not in self._q:
                        super().q_value_delete(state, action)
            for (state, action), q in self._q.items():
                super().q_value_put(state, action, q)
            for plan_id in set(super().goap_ids()) - set(self._plans):
                super().goap_delete(plan_id)
            for plan_id, text in self._plans.items():
                super().goap_store(plan_id, json.loads(text))
        super().close()


def open_loses_update_count(path: str, env: Env, **options: str) -> MemoryStore:
    """A memory store (same options) whose Q-value updates do not count."""
    return LosesUpdateCount(path, env, str(check_options("memory", options,
                                                         MEMORY_OPTIONS)["metric"]))


def open_stale_plan(path: str, env: Env, **options: str) -> MemoryStore:
    """A memory store (same options) whose plan reads are served from a stale cache."""
    return StalePlan(path, env, str(check_options("memory", options, MEMORY_OPTIONS)["metric"]))


def open_write_back_relational(path: str, env: Env, **options: str) -> SqliteStore:
    """A SQLite store (same options) whose relational writes reach the file only at close."""
    opts = check_options("sqlite", options, SQLITE_OPTIONS)
    return WriteBackRelational(path, env, str(opts["journal_mode"]), str(opts["synchronous"]),
                               str(opts["metric"]))
