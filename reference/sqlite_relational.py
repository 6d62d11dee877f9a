"""ADR-072's relational operations on the SQLite store: Q-values and GOAP plans in their own
tables (schema version 3), each row checked by the same per-record sum as the kv and vector rows.

Tables (created by ``RELATIONAL_TABLES``, checked against ``RELATIONAL_COLUMNS``)::

    q_values(state TEXT, action TEXT,        -- PRIMARY KEY (state, action)
             value REAL NOT NULL,            -- finite; -0.0 is kept as 0.0 (check_q_value)
             updates INTEGER NOT NULL,       -- q_value_update calls so far
             sum BLOB NOT NULL)              -- record_sum(b"q", state, action, value as f64 LE,
                                             --            updates as i64 LE)
    goap_plans(plan_id TEXT PRIMARY KEY,
               plan TEXT NOT NULL,           -- canonical JSON (plan_json)
               sum BLOB NOT NULL)            -- record_sum(b"goap", plan id, plan)

The leading tag keeps a relational row's sum from ever equalling a kv row's (both have two
other fields for plans). ``q_value_update`` is one ``BEGIN IMMEDIATE`` transaction: the read
and the write hold SQLite's write lock together, so no other connection can interleave, and the
store's write lock keeps its own threads from sharing the transaction. ``q_value_put`` and
``q_value_delete`` (copying between stores) are one transaction each too.

``SqliteRelational`` is a mixin: ``SqliteStore`` inherits it and provides what the host block
below names (the connection, the error and transaction context managers, the sum check).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from crashgate.backends import (
    CorruptStore,
    QValue,
    check_q_record,
    check_q_value,
    check_relational_id,
    next_update_count,
    plan_json,
)

if TYPE_CHECKING:
    import apsw

__all__ = ["RELATIONAL_COLUMNS", "RELATIONAL_TABLES", "SqliteRelational"]

RELATIONAL_TABLES = """
CREATE TABLE IF NOT EXISTS q_values (
    state TEXT NOT NULL, action TEXT NOT NULL, value REAL NOT NULL, updates INTEGER NOT NULL,
    sum BLOB NOT NULL, PRIMARY KEY (state, action));
CREATE TABLE IF NOT EXISTS goap_plans (
    plan_id TEXT PRIMARY KEY, plan TEXT NOT NULL, sum BLOB NOT NULL);
"""
# PRAGMA table_info as (name, type, notnull, pk) of the columns RELATIONAL_TABLES creates
RELATIONAL_COLUMNS = {
    "q_values": (("state", "TEXT", 1, 1), ("action", "TEXT", 1, 2), ("value", "REAL", 1, 0),
                 ("updates", "INTEGER", 1, 0), ("sum", "BLOB", 1, 0)),
    "goap_plans": (("plan_id", "TEXT", 0, 1), ("plan", "TEXT", 1, 0), ("sum", "BLOB", 1, 0)),
}
_Q_TAG, _PLAN_TAG = b"q", b"goap"


def _q_fields(state: str, action: str, value: float, updates: int) -> tuple[bytes, ...]:
    return (_Q_TAG, state.encode("utf-8"), action.encode("utf-8"), struct.pack("<d", value),
            updates.to_bytes(8, "little", signed=True))


def _typed(path: str, value: object, kind: type, what: str) -> Any:
    """A column's value, if it has the type it was written with (a damaged type byte reads as
    another type: an INTEGER where a REAL was, a BLOB where TEXT was)."""
    if type(value) is not kind:
        raise CorruptStore(path, f"the {what} holds {type(value).__name__} where "
                                 f"{kind.__name__} was written")
    return value


class SqliteRelational:
    """``Relational`` for ``SqliteStore`` (module docstring)."""

    # -- the host's (SqliteStore's) --
    path: str
    _db: apsw.Connection
    _record_sum: Callable[..., bytes]
    if TYPE_CHECKING:
        def _check_open(self) -> None: ...
        def _errors(self) -> AbstractContextManager[None]: ...
        def _transaction(self) -> AbstractContextManager[None]: ...
        def _verified(self, what: str, fields: tuple[bytes, ...], got: object) -> None: ...

    def _q_row(self, state: str, action: str, row: tuple[object, ...]) -> QValue:
        """A (value, updates, sum) row of ``q_values``, verified."""
        what = f"Q-value of state {state!r} action {action!r}"
        value = _typed(self.path, row[0], float, what)
        updates = _typed(self.path, row[1], int, what)
        self._verified(what, _q_fields(state, action, value, updates), row[2])
        return QValue(value, updates)

    def q_value_get(self, state: str, action: str) -> QValue | None:
        state = check_relational_id("state", state)
        action = check_relational_id("action", action)
        self._check_open()
        with self._errors():
            rows = self._db.execute(
                "SELECT value, updates, sum FROM q_values WHERE state = ? AND action = ?",
                (state, action)).fetchall()
        return self._q_row(state, action, rows[0]) if rows else None

    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        state = check_relational_id("state", state)
        action = check_relational_id("action", action)
        new_value = check_q_value(value)
        with self._transaction():   # BEGIN IMMEDIATE: the read and the write are one
            rows = self._db.execute(
                "SELECT value, updates, sum FROM q_values WHERE state = ? AND action = ?",
                (state, action)).fetchall()
            # a damaged old row raises here and rolls back: its count cannot be carried on
            updates = next_update_count(
                state, action, self._q_row(state, action, rows[0]) if rows else None)
            self._db.execute(
                "INSERT OR REPLACE INTO q_values(state, action, value, updates, sum) "
                "VALUES (?, ?, ?, ?, ?)",
                (state, action, new_value, updates,
                 self._record_sum(*_q_fields(state, action, new_value, updates))))
        return QValue(new_value, updates)

    def q_value_put(self, state: str, action: str, q: QValue) -> None:
        state = check_relational_id("state", state)
        action = check_relational_id("action", action)
        record = check_q_record(q)
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO q_values(state, action, value, updates, sum) "
                "VALUES (?, ?, ?, ?, ?)",
                (state, action, record.value, record.updates,
                 self._record_sum(*_q_fields(state, action, record.value, record.updates))))

    def q_value_delete(self, state: str, action: str) -> None:
        state = check_relational_id("state", state)
        action = check_relational_id("action", action)
        with self._transaction():
            self._db.execute("DELETE FROM q_values WHERE state = ? AND action = ?",
                             (state, action))

    def _texts(self, column: str, table: str, what: str) -> list[str]:
        """The TEXT ``column`` of ``table``, decoded, sorted and distinct. A name damaged at
        rest fails here (not UTF-8, or no longer TEXT: a BLOB never equals the TEXT a read
        looks up, so its row would vanish unseen) or at the read of its row, whose sum covers
        it."""
        self._check_open()
        out = set()
        with self._errors():
            for raw, kind in self._db.execute(f"SELECT DISTINCT CAST({column} AS BLOB), "
                                              f"typeof({column}) FROM {table}"):
                raw = _typed(self.path, raw, bytes, what)
                if kind != "text":
                    raise CorruptStore(self.path, f"a {what} holds {kind} where text was "
                                                  "written")
                try:
                    out.add(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:   # damage: what was written was UTF-8
                    raise CorruptStore(self.path, f"a {what} does not decode: {exc}") from exc
        return sorted(out)

    def relational_states(self) -> list[str]:
        return self._texts("state", "q_values", "state of a Q-value")

    def goap_ids(self) -> list[str]:
        return self._texts("plan_id", "goap_plans", "GOAP plan id")

    def q_values(self, state: str) -> dict[str, QValue]:
        """action -> QValue of every action of ``state``, sorted by action."""
        state = check_relational_id("state", state)
        self._check_open()
        out: dict[str, QValue] = {}
        with self._errors():
            for raw, value, updates, got in self._db.execute(
                    "SELECT CAST(action AS BLOB), value, updates, sum FROM q_values "
                    "WHERE state = ? ORDER BY action", (state,)):
                raw = _typed(self.path, raw, bytes, f"action of a Q-value of state {state!r}")
                try:
                    action = raw.decode("utf-8")
                except UnicodeDecodeError as exc:   # damage: what was written was UTF-8
                    raise CorruptStore(self.path, f"an action of state {state!r} does not "
                                                  f"decode: {exc}") from exc
                out[action] = self._q_row(state, action, (value, updates, got))
        return out

    def goap_store(self, plan_id: str, plan: Mapping[str, Any]) -> None:
        plan_id = check_relational_id("plan_id", plan_id)
        text = plan_json(plan)
        fields = (_PLAN_TAG, plan_id.encode("utf-8"), text.encode("utf-8"))
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO goap_plans(plan_id, plan, sum) "
                             "VALUES (?, ?, ?)", (plan_id, text, self._record_sum(*fields)))

    def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None:
        plan_id = check_relational_id("plan_id", plan_id)
        self._check_open()
        with self._errors():
            rows = self._db.execute("SELECT CAST(plan AS BLOB), sum FROM goap_plans "
                                    "WHERE plan_id = ?", (plan_id,)).fetchall()
        if not rows:
            return None
        what = f"GOAP plan {plan_id!r}"
        raw = _typed(self.path, rows[0][0], bytes, what)
        self._verified(what, (_PLAN_TAG, plan_id.encode("utf-8"), raw), rows[0][1])
        try:   # verified, so this fails only for a record written wrong, not damaged
            plan = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            raise CorruptStore(self.path, f"the {what} does not decode: {exc}") from exc
        if not isinstance(plan, dict):
            raise CorruptStore(self.path, f"the {what} is a {type(plan).__name__}, not an "
                                          "object")
        return plan

    def goap_delete(self, plan_id: str) -> None:
        plan_id = check_relational_id("plan_id", plan_id)
        with self._transaction():
            self._db.execute("DELETE FROM goap_plans WHERE plan_id = ?", (plan_id,))
