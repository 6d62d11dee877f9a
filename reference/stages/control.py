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
                          {"op", "keys", "ids", "error", "behind", "stage"}; ``<seq>`` is 12
                          digits, so the queue scans in the order the writes failed

A divergence names the keys and vector ids a failed write touched, not its values: ``repair``
copies what the source of truth holds now, so replaying the queue is idempotent and a later
write to the same key cannot be undone by an old entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crashgate.backends import CorruptStore

__all__ = ["Divergence", "StageControl", "StageRecord"]

_STAGE = "stage"
_DIVERGENCE = "divergence/"


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
    """One write the store named ``behind`` (``sqlite`` or ``rvf``) did not get."""

    seq: int
    op: str
    keys: tuple[str, ...]
    ids: tuple[int, ...]
    error: str
    behind: str
    stage: int


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
                out.append(Divergence(
                    seq=int(key[len(_DIVERGENCE):]), op=str(doc["op"]),
                    keys=tuple(str(k) for k in doc["keys"]),
                    ids=tuple(int(i) for i in doc["ids"]), error=str(doc["error"]),
                    behind=str(doc["behind"]), stage=int(doc["stage"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptStore(self.path, f"control record {key!r} is not a divergence: "
                                              f"{type(exc).__name__}: {exc}") from None
        return out

    def record(self, op: str, keys: Iterable[str], ids: Iterable[int], error: BaseException,
               behind: str, stage: int) -> Divergence:
        """Append one divergence, durably (as durable as the control store's commits)."""
        last = self._kv.scan(_DIVERGENCE)
        seq = int(last[-1][0][len(_DIVERGENCE):]) + 1 if last else 1
        entry = Divergence(seq, op, tuple(keys), tuple(int(i) for i in ids),
                           f"{type(error).__name__}: {error}", behind, stage)
        doc = {"op": entry.op, "keys": list(entry.keys), "ids": list(entry.ids),
               "error": entry.error, "behind": entry.behind, "stage": entry.stage}
        self._kv.put(f"{_DIVERGENCE}{seq:012d}", json.dumps(doc).encode())
        return entry

    def forget(self, entries: Iterable[Divergence]) -> None:
        """Drop repaired entries, in one transaction."""
        keys = [f"{_DIVERGENCE}{d.seq:012d}" for d in entries]
        if keys:
            self._kv.write_batch({}, keys)

    def close(self) -> None:
        self._kv.close()
