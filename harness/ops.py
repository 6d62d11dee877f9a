"""Operations on a store, as values: what a workload generates, the interpreter runs and the
history records. Each op knows how to run itself on a store and how it changes the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crashgate.backends import VectorRecord

__all__ = [
    "Batch",
    "Compact",
    "Delete",
    "Op",
    "Promote",
    "Put",
    "Remove",
    "Reopen",
    "Rollback",
    "Upsert",
    "describe_op",
    "is_mutation",
    "thin",
]


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes

    def run(self, store: Any) -> Any:
        return store.put(self.key, self.value)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        kv[self.key] = self.value


@dataclass(frozen=True)
class Delete:
    key: str

    def run(self, store: Any) -> Any:
        return store.delete(self.key)

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        kv.pop(self.key, None)


@dataclass(frozen=True)
class Batch:
    """An all-or-nothing group of puts and deletes (deletes first, then puts)."""

    puts: tuple[tuple[str, bytes], ...]
    deletes: tuple[str, ...] = ()

    def run(self, store: Any) -> Any:
        return store.write_batch(dict(self.puts), list(self.deletes))

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        for k in self.deletes:
            kv.pop(k, None)
        kv.update(dict(self.puts))


@dataclass(frozen=True)
class Upsert:
    records: tuple[VectorRecord, ...]

    def run(self, store: Any) -> Any:
        return store.upsert(list(self.records))

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        for r in self.records:
            vectors[r.id] = r


@dataclass(frozen=True)
class Remove:
    ids: tuple[int, ...]

    def run(self, store: Any) -> Any:
        return store.remove(list(self.ids))

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        for i in self.ids:
            vectors.pop(i, None)


@dataclass(frozen=True)
class Compact:
    """Compaction: changes how the data is stored, never what it is."""

    def run(self, store: Any) -> Any:
        return store.compact()

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
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

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        return None


@dataclass(frozen=True)
class Promote:
    """A stage adapter's move to its next ADR-072 stage (``backends.Staged``): changes where
    the data lives and which store is read, never what the data is."""

    def run(self, store: Any) -> Any:
        return store.promote()

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        return None


@dataclass(frozen=True)
class Rollback:
    """A stage adapter's move back to its previous ADR-072 stage; like ``Promote``, it changes
    no data."""

    def run(self, store: Any) -> Any:
        return store.rollback()

    def apply(self, kv: dict[str, bytes], vectors: dict[int, VectorRecord]) -> None:
        return None


Op = Put | Delete | Batch | Upsert | Remove | Compact | Reopen | Promote | Rollback


def is_mutation(op: object) -> bool:
    return isinstance(op, Put | Delete | Batch | Upsert | Remove)


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
    return f"remove ids {list(op.ids)}"


def thin(op: Op) -> Op:
    """``op`` as judging needs it once the model has applied it: an upsert keeps its ids and
    drops its vectors and metadata (thousands of 384-dimensional vectors are the bulk of a
    large run); every other op is kept as it is."""
    if isinstance(op, Upsert):
        return Upsert(tuple(VectorRecord(r.id, ()) for r in op.records))
    return op


def batch_keys(op: Op) -> Mapping[str, bytes | None]:
    """What a batch sets each key to (None for deleted), for telling a partial batch apart."""
    if not isinstance(op, Batch):
        return {}
    out: dict[str, bytes | None] = dict.fromkeys(op.deletes)
    out.update(dict(op.puts))
    return out
