"""ADR-072's relational operations on the RVF store: Q-values and GOAP plans as META records
under a reserved key namespace (FORMAT.md, "Relational records").

They are key-value records inside the file, so everything that carries META carries them:
replay, checkpoints, compaction, derive (a child sees its parent's records; its writes stay its
own). What keeps them apart from the user's key-value data is the namespace: a key starting with
``RESERVED_PREFIX`` is refused as a user key (``check_user_key``) and left out of ``get``,
``scan`` and the key count. Keys and values::

    RESERVED_PREFIX + "q/" + JSON [state, action]    -> f64 value, u64 updates (16 bytes, LE)
    RESERVED_PREFIX + "goap/" + plan id               -> the plan's canonical JSON (UTF-8)

The Q-value key is compact JSON (``separators=(",", ":")``, not ASCII-escaped): a JSON string is
prefix-free, so the keys of one state are exactly those starting with ``["<state>",``.

``RvfRelational`` is a mixin: ``RvfStore`` inherits it and provides what the host block names.
Each write (update, put, delete) is one commit through the store's commit path (same failpoints,
one witness entry).
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crashgate.backends import (
    CorruptStore,
    QValue,
    VectorRecord,
    check_q_record,
    check_q_value,
    check_relational_id,
    next_update_count,
    plan_json,
)

if TYPE_CHECKING:
    from crashgate.backends import File

__all__ = ["RESERVED_PREFIX", "RvfRelational", "check_user_key", "is_reserved"]

RESERVED_PREFIX = "\x00crashgate.relational/"
_Q = RESERVED_PREFIX + "q/"
_PLAN = RESERVED_PREFIX + "goap/"
_Q_VALUE = struct.Struct("<dQ")


def is_reserved(key: str) -> bool:
    """Whether ``key`` is in the relational namespace (never a user's key)."""
    return key.startswith(RESERVED_PREFIX)


def check_user_key(key: object) -> str:
    """``key`` as a user's key-value key: a str outside the reserved namespace."""
    if not isinstance(key, str):
        raise TypeError(f"key {key!r} is a {type(key).__name__}; keys are str")
    if is_reserved(key):
        raise ValueError(f"key {key!r} starts with {RESERVED_PREFIX!r}, the namespace this store "
                         "keeps for Q-values and GOAP plans; use a key that does not start with "
                         "it (or the q_value_* and goap_* methods)")
    return key


def _q_key(state: str, action: str) -> str:
    return _Q + json.dumps([state, action], ensure_ascii=False, separators=(",", ":"))


def _state_prefix(state: str) -> str:
    return _Q + json.dumps([state], ensure_ascii=False, separators=(",", ":"))[:-1] + ","


class RvfRelational:
    """``Relational`` for ``RvfStore`` (module docstring)."""

    # -- the host's (RvfStore's) --
    path: str
    _kv: dict[str, bytes]
    _write_lock: threading.RLock
    if TYPE_CHECKING:
        def _check_open(self) -> File: ...
        def _check_writable(self, what: str) -> File: ...
        def _discard_failed_attempt(self) -> None: ...
        def _commit(self, puts: Mapping[str, bytes], deletes: Iterable[str],
                    upserts: Sequence[VectorRecord], removes: Iterable[int],
                    epoch: int | None) -> None: ...

    def _q_decode(self, key: str, raw: bytes) -> QValue:
        if len(raw) != _Q_VALUE.size:
            # the file verified, so this is a record a writer got wrong, not damage at rest
            raise CorruptStore(self.path, f"the Q-value record {key!r} holds {len(raw)} bytes, "
                                          f"not {_Q_VALUE.size}")
        value, updates = _Q_VALUE.unpack(raw)
        return QValue(value, updates)

    def q_value_get(self, state: str, action: str) -> QValue | None:
        key = _q_key(check_relational_id("state", state), check_relational_id("action", action))
        self._check_open()
        raw = self._kv.get(key)
        return None if raw is None else self._q_decode(key, raw)

    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        key = _q_key(check_relational_id("state", state), check_relational_id("action", action))
        new_value = check_q_value(value)
        with self._write_lock:   # the read and the commit as one, against this store's threads
            self._check_writable("q_value_update")
            raw = self._kv.get(key)
            updates = next_update_count(state, action, self._q_decode(key, raw)
                                        if raw is not None else None)
            self._commit({key: _Q_VALUE.pack(new_value, updates)}, (), (), (), None)
        return QValue(new_value, updates)

    def q_value_put(self, state: str, action: str, q: QValue) -> None:
        key = _q_key(check_relational_id("state", state), check_relational_id("action", action))
        record = check_q_record(q)
        with self._write_lock:
            self._commit({key: _Q_VALUE.pack(record.value, record.updates)}, (), (), (), None)

    def q_value_delete(self, state: str, action: str) -> None:
        key = _q_key(check_relational_id("state", state), check_relational_id("action", action))
        with self._write_lock:
            self._check_writable("q_value_delete")
            if key in self._kv:
                self._commit({}, (key,), (), (), None)
            else:   # as goap_delete does
                self._discard_failed_attempt()

    def relational_states(self) -> list[str]:
        self._check_open()
        return sorted({json.loads(k[len(_Q):])[0] for k in list(self._kv) if k.startswith(_Q)})

    def goap_ids(self) -> list[str]:
        self._check_open()
        return sorted(k[len(_PLAN):] for k in list(self._kv) if k.startswith(_PLAN))

    def q_values(self, state: str) -> dict[str, QValue]:
        """action -> QValue of every action of ``state``, sorted by action."""
        prefix = _state_prefix(check_relational_id("state", state))
        self._check_open()
        found = sorted((json.loads(k[len(_Q):])[1], k, raw)
                       for k, raw in list(self._kv.items()) if k.startswith(prefix))
        return {action: self._q_decode(k, raw) for action, k, raw in found}

    def goap_store(self, plan_id: str, plan: Mapping[str, Any]) -> None:
        key = _PLAN + check_relational_id("plan_id", plan_id)
        text = plan_json(plan)
        with self._write_lock:
            self._commit({key: text.encode("utf-8")}, (), (), (), None)

    def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None:
        key = _PLAN + check_relational_id("plan_id", plan_id)
        self._check_open()
        raw = self._kv.get(key)
        if raw is None:
            return None
        try:   # the file verified: only a record written wrong fails here
            plan = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            raise CorruptStore(self.path, f"GOAP plan {plan_id!r} does not decode: {exc}"
                               ) from exc
        if not isinstance(plan, dict):
            raise CorruptStore(self.path, f"GOAP plan {plan_id!r} is a {type(plan).__name__}, "
                                          "not an object")
        return plan

    def goap_delete(self, plan_id: str) -> None:
        key = _PLAN + check_relational_id("plan_id", plan_id)
        with self._write_lock:
            self._check_writable("goap_delete")
            if key in self._kv:
                self._commit({}, (key,), (), (), None)
            else:   # as delete does: what a failed attempt left must not surface later
                self._discard_failed_attempt()

    def relational_count(self) -> int:
        """How many relational records (Q-values and plans) the file holds."""
        self._check_open()
        return sum(1 for k in list(self._kv) if is_reserved(k))
