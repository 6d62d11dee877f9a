"""Operations on a store, as values: what a workload generates, the interpreter runs and the
history records. Each op knows how to run itself on a store and how it changes the model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crashgate.backends import (
    Declaration,
    QValue,
    VectorRecord,
    canonical_mission,
    check_q_value,
    plan_json,
)

__all__ = [
    "Batch",
    "Compact",
    "Delete",
    "GoapDelete",
    "GoapStore",
    "MissionDelete",
    "MissionPut",
    "Op",
    "Promote",
    "Put",
    "QUpdate",
    "Relations",
    "Remove",
    "Reopen",
    "Rollback",
    "Upsert",
    "describe_op",
    "is_mission",
    "is_mutation",
    "is_relational",
    "metadata_rows_reason",
    "mission_text",
    "op_for",
    "records_for",
    "thin",
]

Relations = dict[tuple[str, ...], QValue | str]
"""The model's ADR-072 relational records (``backends.Relational``): ``("q", state, action)``
-> its ``QValue`` (value and update count), ``("plan", plan_id)`` -> the plan's canonical JSON
text (``plan_json``); and ARCH-001's mission documents (``backends.MissionStore``):
``("mission", mission_id)`` -> the document's canonical JSON text (``canonical_mission``).
Every op's ``apply`` takes it as an optional third argument; only the relational and mission
ops below change it."""


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes

    def run(self, store: Any) -> Any:
        return store.put(self.key, self.value)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        kv[self.key] = self.value


@dataclass(frozen=True)
class Delete:
    key: str

    def run(self, store: Any) -> Any:
        return store.delete(self.key)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        kv.pop(self.key, None)


@dataclass(frozen=True)
class Batch:
    """An all-or-nothing group of puts and deletes (deletes first, then puts)."""

    puts: tuple[tuple[str, bytes], ...]
    deletes: tuple[str, ...] = ()

    def run(self, store: Any) -> Any:
        return store.write_batch(dict(self.puts), list(self.deletes))

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        for k in self.deletes:
            kv.pop(k, None)
        kv.update(dict(self.puts))


@dataclass(frozen=True)
class Upsert:
    records: tuple[VectorRecord, ...]

    def run(self, store: Any) -> Any:
        return store.upsert(list(self.records))

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        for r in self.records:
            vectors[r.id] = r


@dataclass(frozen=True)
class Remove:
    ids: tuple[int, ...]

    def run(self, store: Any) -> Any:
        return store.remove(list(self.ids))

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        for i in self.ids:
            vectors.pop(i, None)


@dataclass(frozen=True)
class Compact:
    """Compaction: changes how the data is stored, never what it is."""

    def run(self, store: Any) -> Any:
        return store.compact()

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        return None


@dataclass(frozen=True)
class Reopen:
    """A session boundary: close the store cleanly and open it again on the same disk and env.
    Changes nothing a store shows. Only the interpreter can run it (it holds the path, the env
    and the factory): see ``powerloss.record_run``."""

    def run(self, store: Any) -> Any:
        raise TypeError("Reopen cannot run on a store alone: the interpreter closes the store "
                        "and opens it again with its factory, path and env (as "
                        "crashgate.harness.powerloss.record_run does)")

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        return None


@dataclass(frozen=True)
class Promote:
    """A stage adapter's move to its next ADR-072 stage (``backends.Staged``): changes where
    the data lives and which store is read, never what the data is."""

    def run(self, store: Any) -> Any:
        return store.promote()

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        return None


@dataclass(frozen=True)
class Rollback:
    """A stage adapter's move back to its previous ADR-072 stage; like ``Promote``, it changes
    no data."""

    def run(self, store: Any) -> Any:
        return store.rollback()

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        return None


def _relations(relational: Relations | None, op: object) -> Relations:
    if relational is None:
        raise TypeError(f"{type(op).__name__}.apply needs the model's relational records: pass "
                        "them as its third argument (a dict, ops.Relations)")
    return relational


@dataclass(frozen=True)
class QUpdate:
    """ADR-072's Q-value update: the value becomes ``value`` (normalised as every store
    normalises it, ``check_q_value``) and the update count goes up by one. The count is state:
    a lost update shows as a count short of the acknowledged calls."""

    state: str
    action: str
    value: float

    def run(self, store: Any) -> Any:
        return store.q_value_update(self.state, self.action, self.value)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        records = _relations(relational, self)
        old = records.get(("q", self.state, self.action))
        count = old.updates if isinstance(old, QValue) else 0
        records[("q", self.state, self.action)] = QValue(check_q_value(self.value), count + 1)


@dataclass(frozen=True)
class GoapStore:
    """Store (or replace) a GOAP plan; the model keeps its canonical JSON text."""

    plan_id: str
    plan: Mapping[str, Any]

    def run(self, store: Any) -> Any:
        return store.goap_store(self.plan_id, self.plan)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        _relations(relational, self)[("plan", self.plan_id)] = plan_json(self.plan)


@dataclass(frozen=True)
class GoapDelete:
    """Delete a GOAP plan (a missing one is no error)."""

    plan_id: str

    def run(self, store: Any) -> Any:
        return store.goap_delete(self.plan_id)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        _relations(relational, self).pop(("plan", self.plan_id), None)


@dataclass(frozen=True)
class MissionPut:
    """Insert or replace ARCH-001's mission ``doc["mission_id"]``; the model keeps the
    document's canonical JSON text, so ints, floats and bools stay apart (``1``, ``1.0``,
    ``true``) and key order does not matter."""

    doc: Mapping[str, Any]

    @property
    def mission_id(self) -> str:
        return str(self.doc["mission_id"])

    def run(self, store: Any) -> Any:
        # a copy: a store that changes the document it was handed (drops a field it did not
        # map to a column) must not change the op the model applies after it
        return store.mission_put(copy.deepcopy(dict(self.doc)))

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        _relations(relational, self)[("mission", self.mission_id)] = mission_text(self.doc)


@dataclass(frozen=True)
class MissionDelete:
    """Delete ARCH-001's mission ``mission_id`` (a missing one is no error)."""

    mission_id: str

    def run(self, store: Any) -> Any:
        return store.mission_delete(self.mission_id)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord],
              relational: Relations | None = None) -> None:
        _relations(relational, self).pop(("mission", self.mission_id), None)


def mission_text(doc: Mapping[str, Any]) -> str:
    """How the model holds a mission document: its canonical JSON as text."""
    return canonical_mission(doc).decode("utf-8")


Op = (Put | Delete | Batch | Upsert | Remove | Compact | Reopen | Promote | Rollback | QUpdate
      | GoapStore | GoapDelete | MissionPut | MissionDelete)


def is_mutation(op: object) -> bool:
    return isinstance(op, Put | Delete | Batch | Upsert | Remove | QUpdate | GoapStore
                      | GoapDelete | MissionPut | MissionDelete)


def is_relational(op: object) -> bool:
    """Whether ``op`` is one of ADR-072's relational writes (it changes only ``Relations``)."""
    return isinstance(op, QUpdate | GoapStore | GoapDelete)


def is_mission(op: object) -> bool:
    """Whether ``op`` is one of ARCH-001's mission writes (it changes only ``Relations``)."""
    return isinstance(op, MissionPut | MissionDelete)


def _short(value: bytes) -> str:
    return repr(value if len(value) <= 12 else value[:12] + b"...")


def describe_op(op: Op) -> str:
    """One line for a person: ``put 'a' = b'xy'``, ``batch of 3 puts, 1 delete``."""
    if isinstance(op, Put):
        return f"put {op.key!r} = {_short(op.value)} ({len(op.value)} bytes)"
    if isinstance(op, Delete):
        return f"delete {op.key!r}"
    if isinstance(op, Batch):
        return f"batch of {len(op.puts)} puts, {len(op.deletes)} deletes"
    if isinstance(op, Upsert):
        ids = [r.id for r in op.records]
        return f"upsert {len(ids)} vectors (ids {ids[:5]}{'...' if len(ids) > 5 else ''})"
    if isinstance(op, Compact):
        return "compact"
    if isinstance(op, Reopen):
        return "close and reopen (a new session)"
    if isinstance(op, Promote):
        return "promote to the next stage"
    if isinstance(op, Rollback):
        return "roll back to the previous stage"
    if isinstance(op, QUpdate):
        return f"Q-value update ({op.state!r}, {op.action!r}) = {op.value!r}"
    if isinstance(op, GoapStore):
        return f"store GOAP plan {op.plan_id!r}"
    if isinstance(op, GoapDelete):
        return f"delete GOAP plan {op.plan_id!r}"
    if isinstance(op, MissionPut):
        return f"put mission {op.mission_id!r} ({len(canonical_mission(op.doc))} bytes of JSON)"
    if isinstance(op, MissionDelete):
        return f"delete mission {op.mission_id!r}"
    return f"remove ids {list(op.ids)}"


def thin(op: Op) -> Op:
    """``op`` as judging needs it once the model has applied it: an upsert keeps its ids and
    drops its vectors and metadata (thousands of 384-dimensional vectors are the bulk of a
    large run); every other op is kept as it is."""
    if isinstance(op, Upsert):
        return Upsert(tuple(VectorRecord(r.id, ()) for r in op.records))
    return op


def records_for(decl: Declaration, records: Iterable[VectorRecord]
                ) -> tuple[VectorRecord, ...]:
    """``records`` as a store declaring ``decl`` keeps them: unchanged, or each with metadata
    ``{}`` when it declares it keeps none (``Declaration.metadata``). A row whose metadata is
    incidental writes these, to the store and to its model alike."""
    if decl.metadata:
        return tuple(records)
    return tuple(r if not r.metadata else VectorRecord(r.id, r.vector, {}) for r in records)


def op_for(decl: Declaration, op: Op) -> Op:
    """``op`` as a store declaring ``decl`` can take it: an upsert's records through
    ``records_for``; every other op as it is."""
    if isinstance(op, Upsert) and not decl.metadata:
        return Upsert(records_for(decl, op.records))
    return op


def metadata_rows_reason(decl: Declaration, what: str) -> str | None:
    """None for a store that keeps metadata; for one that declares it keeps none, why a row
    about metadata (``what`` it checks) is n/a."""
    if decl.metadata:
        return None
    return (f"declares it keeps no metadata (Declaration.metadata is False), so {what} "
            "cannot be checked")


def batch_keys(op: Op) -> Mapping[str, bytes | None]:
    """What a batch sets each key to (None for deleted), for telling a partial batch apart."""
    if not isinstance(op, Batch):
        return {}
    out: dict[str, bytes | None] = dict.fromkeys(op.deletes)
    out.update(dict(op.puts))
    return out
