"""A stage adapter's own durable state: which stage it is in, and the divergences not yet
repaired. Both live in ``<dir>/control.db``, a reference SQLite store used as key-value (the
real engine: a switch of stage is one transaction, so a crash leaves the old stage or the new
one, never a mix).

Keys::

    stage                 {"stage": n, "moving_to": m | null, "sqlite": name}: ``moving_to``
                          is set while a promotion or rollback is catching a store up; only
                          the write of ``{"stage": m}`` switches (see
                          ``adapter.StageAdapter._move``). ``sqlite`` names the SQLite data
                          file in the directory: the escape hatch exports into a new file and
                          switches stage and file in this one write
    divergence/<seq>      one write that reached the source of truth and not the other store:
                          {"op", "keys", "ids", "relational", "error", "behind", "stage"};
                          ``<seq>`` is 12 digits, so the queue scans in the order the writes
                          failed; an entry from before relational records has no
                          "relational" (read as none)

A divergence names the keys, vector ids and relational records a failed write touched, not
their values: ``repair`` copies what the source of truth holds now, so replaying the queue is
idempotent and a later write to the same key cannot be undone by an old entry.

A relational record is named by compact JSON: ``["q",<state>,<action>]`` for a Q-value,
``["goap",<plan id>]`` for a plan (``q_value_ref``, ``plan_ref``). A JSON string is
prefix-free, so the Q-values of one state are exactly the names that start with
``["q",<state>,`` (``state_ref``), which is how a read of a whole state finds the entries that
touch it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crashgate.backends import CorruptStore

__all__ = ["PLANS", "Q_VALUES", "Divergence", "StageControl", "StageRecord", "plan_ref",
           "q_value_ref", "split_refs", "state_ref"]

_STAGE = "stage"
_DIVERGENCE = "divergence/"
Q_VALUES = '["q",'
"""The start of every Q-value's name."""
PLANS = '["goap",'
"""The start of every plan's name."""


def _json(*parts: str) -> str:
    return json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))


def q_value_ref(state: str, action: str) -> str:
    """The name of the Q-value of (state, action) in a divergence."""
    return _json("q", state, action)


def state_ref(state: str) -> str:
    """What the names of every Q-value of ``state`` start with."""
    return _json("q", state)[:-1] + ","


def plan_ref(plan_id: str) -> str:
    """The name of the plan ``plan_id`` in a divergence."""
    return _json("goap", plan_id)


def split_refs(refs: Iterable[str]) -> tuple[list[str], list[str]]:
    """Names of relational records -> (the states of the Q-values, the plan ids), each sorted
    and distinct: what ``sync.sync_relational`` takes (it copies a Q-value's whole state)."""
    states: set[str] = set()
    plans: set[str] = set()
    for ref in refs:
        doc = json.loads(ref)
        if not (isinstance(doc, list) and all(isinstance(p, str) for p in doc)
                and (doc[:1] == ["q"] and len(doc) == 3 or doc[:1] == ["goap"] and len(doc) == 2)):
            raise ValueError(f"{ref!r} names no Q-value or plan")
        (states if doc[0] == "q" else plans).add(doc[1])
    return sorted(states), sorted(plans)


@dataclass(frozen=True)
class StageRecord:
    """The durable stage: ``stage`` is what the adapter is; ``moving_to`` the stage a
    promotion or rollback in progress is catching up for (None when none is); ``sqlite`` the
    name of the SQLite data file in the adapter's directory."""

    stage: int
    moving_to: int | None = None
    sqlite: str = "sqlite.db"


@dataclass(frozen=True)
class Divergence:
    """One write the store named ``behind`` (``sqlite`` or ``rvf``) did not get: the keys,
    vector ids and relational records (their names: ``q_value_ref``, ``plan_ref``) it
    touched."""

    seq: int
    op: str
    keys: tuple[str, ...]
    ids: tuple[int, ...]
    error: str
    behind: str
    stage: int
    relational: tuple[str, ...] = ()


class StageControl:
    """The control store of one adapter. ``kv`` is an open key-value store (the reference
    SQLite store at ``<dir>/control.db``); this class owns it and closes it."""

    def __init__(self, kv: Any, path: str) -> None:
        self._kv = kv
        self.path = path

    def _load(self, key: str, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise CorruptStore(self.path, f"control record {key!r} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise CorruptStore(self.path, f"control record {key!r} is not a JSON object")
        return doc

    def stage(self) -> StageRecord | None:
        """The durable stage, or None for an adapter that never recorded one (a new one)."""
        raw = self._kv.get(_STAGE)
        if raw is None:
            return None
        doc = self._load(_STAGE, raw)
        stage, moving = doc.get("stage"), doc.get("moving_to")
        sqlite = doc.get("sqlite", "sqlite.db")
        if not isinstance(stage, int) or not 0 <= stage <= 4 or not (
                moving is None or isinstance(moving, int) and 0 <= moving <= 4) or not (
                isinstance(sqlite, str) and sqlite.endswith(".db") and "/" not in sqlite):
            raise CorruptStore(self.path, f"control record 'stage' holds {doc!r}")
        return StageRecord(stage, moving, sqlite)

    def set_stage(self, record: StageRecord) -> None:
        """One transaction: the stage and the transition in progress change together."""
        doc = {"stage": record.stage, "moving_to": record.moving_to, "sqlite": record.sqlite}
        self._kv.write_batch({_STAGE: json.dumps(doc).encode()})

    def divergences(self) -> list[Divergence]:
        """The queue, oldest first."""
        out = []
        for key, raw in self._kv.scan(_DIVERGENCE):
            doc = self._load(key, raw)
            try:
                split_refs(doc.get("relational", []))   # names repair() can act on
                out.append(Divergence(
                    seq=int(key[len(_DIVERGENCE):]), op=str(doc["op"]),
                    keys=tuple(str(k) for k in doc["keys"]),
                    ids=tuple(int(i) for i in doc["ids"]), error=str(doc["error"]),
                    behind=str(doc["behind"]), stage=int(doc["stage"]),
                    relational=tuple(str(r) for r in doc.get("relational", []))))
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptStore(self.path, f"control record {key!r} is not a divergence: "
                                              f"{type(exc).__name__}: {exc}") from None
        return out

    def record(self, op: str, keys: Iterable[str], ids: Iterable[int], error: BaseException,
               behind: str, stage: int, relational: Iterable[str] = ()) -> Divergence:
        """Append one divergence, durably (as durable as the control store's commits)."""
        last = self._kv.scan(_DIVERGENCE)
        seq = int(last[-1][0][len(_DIVERGENCE):]) + 1 if last else 1
        entry = Divergence(seq, op, tuple(keys), tuple(int(i) for i in ids),
                           f"{type(error).__name__}: {error}", behind, stage, tuple(relational))
        doc = {"op": entry.op, "keys": list(entry.keys), "ids": list(entry.ids),
               "relational": list(entry.relational), "error": entry.error,
               "behind": entry.behind, "stage": entry.stage}
        self._kv.put(f"{_DIVERGENCE}{seq:012d}", json.dumps(doc).encode())
        return entry

    def forget(self, entries: Iterable[Divergence]) -> None:
        """Drop repaired entries, in one transaction."""
        keys = [f"{_DIVERGENCE}{d.seq:012d}" for d in entries]
        if keys:
            self._kv.write_batch({}, keys)

    def close(self) -> None:
        self._kv.close()
