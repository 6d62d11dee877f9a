"""A stage adapter's own durable state: which stage it is in, and the divergences not yet
repaired. Both live in ``<dir>/control.db``, a reference SQLite store used as key-value (the
real engine: a switch of stage is one transaction, so a crash leaves the old stage or the new
one, never a mix).

Keys::

    stage                 {"stage": n, "moving_to": m | null, "sqlite": name,
                          "restoring": r | null}: ``moving_to`` is set while a promotion or
                          rollback is catching a store up; only the write of ``{"stage": m}``
                          switches (see ``adapter.StageAdapter._move``). ``sqlite`` names the
                          SQLite data file in the directory: the escape hatch exports into a
                          new file and switches stage and file in this one write.
                          ``restoring`` names a restore past its commit point: the stage of
                          the backup whose parts wait in ``restore.pending/`` (``backup.py``);
                          a record without it has none
    rvf-epoch             {"epoch": e}: in a stage whose key-value data is in SQLite and whose
                          vectors are in RVF (1), RVF's epoch after the last vector write. An
                          RVF that opens at an older epoch lost commits to damage, while SQLite
                          kept its newer key-value data: a mix, refused (``CorruptStore``)
    shutdown              {"clean": bool}: false from a writer's open (before its first write)
                          until its clean ``close``; an open that finds false (the writer died,
                          or ended in doubt) or no record (a control file from before it)
                          reconciles the mirror of a dual-write stage (``reconcile.py``)
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
from typing import Any, TypeGuard

from crashgate.backends import CorruptStore

__all__ = ["MISSIONS", "PLANS", "Q_VALUES", "Divergence", "StageControl", "StageRecord",
           "divergence_doc", "divergence_from_doc", "mission_ref", "plan_ref", "q_value_ref",
           "split_refs",
           "state_ref"]

_STAGE = "stage"
_DIVERGENCE = "divergence/"
_RVF_EPOCH = "rvf-epoch"
_SHUTDOWN = "shutdown"
Q_VALUES = '["q",'
"""The start of every Q-value's name."""
PLANS = '["goap",'
"""The start of every plan's name."""
MISSIONS = '["mission",'
"""The start of every mission's name (ARCH-001's mission documents)."""


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


def mission_ref(mission_id: str) -> str:
    """The name of the mission ``mission_id`` in a divergence."""
    return _json("mission", mission_id)


def split_refs(refs: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """Names of records -> (the states of the Q-values, the plan ids, the mission ids), each
    sorted and distinct: what ``sync.sync_relational`` (it copies a Q-value's whole state) and
    a mission sync take."""
    found: dict[str, set[str]] = {"q": set(), "goap": set(), "mission": set()}
    for ref in refs:
        doc = json.loads(ref)
        if not (isinstance(doc, list) and all(isinstance(p, str) for p in doc)
                and (doc[:1] == ["q"] and len(doc) == 3
                     or doc[:1] in (["goap"], ["mission"]) and len(doc) == 2)):
            raise ValueError(f"{ref!r} names no Q-value, plan or mission")
        found[doc[0]].add(doc[1])
    return sorted(found["q"]), sorted(found["goap"]), sorted(found["mission"])


@dataclass(frozen=True)
class StageRecord:
    """The durable stage: ``stage`` is what the adapter is; ``moving_to`` the stage a
    promotion or rollback in progress is catching up for (None when none is); ``sqlite`` the
    name of the SQLite data file in the adapter's directory; ``restoring`` the stage of a
    backup whose restore is committed and not yet finished (None when none is)."""

    stage: int
    moving_to: int | None = None
    sqlite: str = "sqlite.db"
    restoring: int | None = None


@dataclass(frozen=True)
class Divergence:
    """One write the store named ``behind`` (``sqlite``, ``rvf``, ``json``) did not get: the
    keys, vector ids and other records (their names: ``q_value_ref``, ``plan_ref``,
    ``mission_ref``) it touched."""

    seq: int
    op: str
    keys: tuple[str, ...]
    ids: tuple[int, ...]
    error: str
    behind: str
    stage: int
    relational: tuple[str, ...] = ()


def divergence_doc(d: Divergence) -> dict[str, Any]:
    """The JSON object a divergence is stored as (its ``seq`` is in its key, not here)."""
    return {"op": d.op, "keys": list(d.keys), "ids": list(d.ids),
            "relational": list(d.relational), "error": d.error, "behind": d.behind,
            "stage": d.stage}


def divergence_from_doc(seq: int, doc: dict[str, Any]) -> Divergence:
    """``divergence_doc``'s inverse; ``KeyError``, ``TypeError`` or ``ValueError`` for an
    object that is not one (the caller names where it came from)."""
    split_refs(doc.get("relational", []))   # names repair() can act on
    return Divergence(seq=seq, op=str(doc["op"]), keys=tuple(str(k) for k in doc["keys"]),
                      ids=tuple(int(i) for i in doc["ids"]), error=str(doc["error"]),
                      behind=str(doc["behind"]), stage=int(doc["stage"]),
                      relational=tuple(str(r) for r in doc.get("relational", [])))


def _divergence_key(seq: int) -> str:
    return f"{_DIVERGENCE}{seq:012d}"


def _is_stage(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 4


def _stage_doc(record: StageRecord) -> bytes:
    return json.dumps({"stage": record.stage, "moving_to": record.moving_to,
                       "sqlite": record.sqlite, "restoring": record.restoring}).encode()


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
        sqlite, restoring = doc.get("sqlite", "sqlite.db"), doc.get("restoring")
        if not _is_stage(stage) or not (moving is None or _is_stage(moving)) or not (
                isinstance(sqlite, str) and sqlite.endswith(".db") and "/" not in sqlite) or not (
                restoring is None or _is_stage(restoring)):
            raise CorruptStore(self.path, f"control record 'stage' holds {doc!r}")
        return StageRecord(stage, moving, sqlite, restoring)

    def set_stage(self, record: StageRecord) -> None:
        """One transaction: the stage and the transition in progress change together, fsynced
        whatever the file's ``synchronous`` says: what a stage does once it starts (an import
        that renames the files it read) must never outlive the record of the switch."""
        self._kv.write_batch({_STAGE: _stage_doc(record)}, durable=True)

    def replace(self, record: StageRecord, queue: Iterable[Divergence]) -> None:
        """One transaction: the stage record, and the whole divergence queue replaced by
        ``queue`` (the last step of a restore, ``backup.py``); the RVF epoch recorded for the
        old RVF file is dropped with them (the restored file has its own)."""
        puts = {_STAGE: _stage_doc(record),
                **{_divergence_key(d.seq): json.dumps(divergence_doc(d)).encode()
                   for d in queue}}
        old = [key for key, _ in self._kv.scan(_DIVERGENCE) if key not in puts]
        self._kv.write_batch(puts, [*old, _RVF_EPOCH], durable=True)

    def rvf_epoch(self) -> int | None:
        """The RVF epoch recorded after the last vector write of a stage that keeps its
        key-value data in SQLite and its vectors in RVF (stage 1); None when none was."""
        raw = self._kv.get(_RVF_EPOCH)
        if raw is None:
            return None
        doc = self._load(_RVF_EPOCH, raw)
        epoch = doc.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise CorruptStore(self.path, f"control record {_RVF_EPOCH!r} holds {doc!r}")
        return epoch

    def set_rvf_epoch(self, epoch: int) -> None:
        self._kv.put(_RVF_EPOCH, json.dumps({"epoch": int(epoch)}).encode())

    def clean_shutdown(self) -> bool | None:
        """Whether the last writer closed cleanly: False while one is open or after one died
        or ended in doubt; None when no writer ever recorded it."""
        raw = self._kv.get(_SHUTDOWN)
        if raw is None:
            return None
        doc = self._load(_SHUTDOWN, raw)
        clean = doc.get("clean")
        if not isinstance(clean, bool):
            raise CorruptStore(self.path, f"control record {_SHUTDOWN!r} holds {doc!r}")
        return clean

    def set_clean_shutdown(self, clean: bool) -> None:
        """One control write (a writer's open: False; its clean close: True)."""
        self._kv.put(_SHUTDOWN, json.dumps({"clean": bool(clean)}).encode())

    def divergences(self) -> list[Divergence]:
        """The queue, oldest first."""
        out = []
        for key, raw in self._kv.scan(_DIVERGENCE):
            doc = self._load(key, raw)
            try:
                out.append(divergence_from_doc(int(key[len(_DIVERGENCE):]), doc))
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
        self._kv.put(_divergence_key(seq), json.dumps(divergence_doc(entry)).encode())
        return entry

    def forget(self, entries: Iterable[Divergence]) -> None:
        """Drop repaired entries, in one transaction."""
        keys = [_divergence_key(d.seq) for d in entries]
        if keys:
            self._kv.write_batch({}, keys)

    def close(self) -> None:
        self._kv.close()
