"""The simplest backend: a dict and a table of vectors, held in memory.

It declares no durability: a crash loses everything since the store was last closed. A clean
``close()`` writes a snapshot (temp file, fsync, rename) so that closing and reopening keeps the
data, and so that even a crash during ``close()`` leaves either the old or the new snapshot. The
snapshot starts with a line holding a BLAKE2b checksum of the rest, so a damaged snapshot is
reported as ``CorruptStore``, never read back as other data.

It also holds ADR-072's relational records (``Relational``): Q-values and GOAP plans, apart
from the key-value data. Plans are kept as their canonical JSON text (``plan_json``), so what a
caller stored or was handed back cannot change what the store holds. ARCH-001's mission
documents (``MissionStore``) are kept the same way, as their canonical JSON text
(``canonical_mission``), so a document comes back exactly as JSON (an int still an int).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import (
    Capability,
    CorruptStore,
    Declaration,
    Durability,
    Env,
    Hit,
    Option,
    QValue,
    StoreClosed,
    VectorBlock,
    VectorRecord,
    canonical_mission,
    check_mission,
    check_mission_id,
    check_options,
    check_q_record,
    check_q_value,
    check_relational_id,
    next_update_count,
    plan_json,
    read_all,
)
from crashgate.reference.vector_search import METRICS, check_where, exact_search

__all__ = ["MemoryStore", "open_memory"]

OPTIONS = {"metric": Option("l2", METRICS, help="distance for vector queries")}
_MAGIC = b"crashgate-memory-snapshot blake2b:"


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).hexdigest().encode()


class MemoryStore:
    def __init__(self, path: str, env: Env, metric: str) -> None:
        self.path = path
        self._env = env
        self._metric = metric
        self._kv: dict[str, bytes] = {}
        self._vectors: dict[int, VectorRecord] = {}
        self._q: dict[tuple[str, str], QValue] = {}
        self._plans: dict[str, str] = {}           # plan id -> canonical JSON text
        self._missions: dict[str, str] = {}        # mission id -> canonical JSON text
        self._q_lock = threading.Lock()            # q_value_update is a read-modify-write
        self._closed = False
        self.declaration = Declaration(
            durability=Durability.NONE,
            capabilities=frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH,
                                    Capability.METADATA_FILTER, Capability.RELATIONAL,
                                    Capability.MISSIONS}),
            metric=metric,
        )
        self._load()

    # -- snapshot -------------------------------------------------------------------------

    def _load(self) -> None:
        if not self._env.fs.exists(self.path):
            return
        raw = read_all(self._env.fs, self.path)
        if raw.startswith(_MAGIC):
            head, _, body = raw.partition(b"\n")
            if head[len(_MAGIC):] != _digest(body):
                raise CorruptStore(self.path, "snapshot fails its checksum")
            raw = body
        # else: a snapshot from before checksums, read unchecked (the next close adds one)
        try:
            doc = json.loads(raw)
            self._kv = {k: base64.b64decode(v) for k, v in doc["kv"].items()}
            for rec in doc["vectors"]:
                r = VectorRecord.of(rec["id"], rec["vector"], rec["metadata"])
                self._vectors[r.id] = r
            # snapshots from before the relational records have neither key
            for state, action, value, updates in doc.get("q_values", []):
                self._q[(str(state), str(action))] = QValue(float(value), int(updates))
            self._plans = {str(k): str(v) for k, v in doc.get("goap_plans", {}).items()}
            self._missions = {str(k): str(v) for k, v in doc.get("missions", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStore(self.path, f"snapshot does not parse: {exc}") from exc

    def _save(self) -> None:
        doc = {
            "kv": {k: base64.b64encode(v).decode() for k, v in self._kv.items()},
            "vectors": [
                {"id": r.id, "vector": list(r.vector), "metadata": dict(r.metadata)}
                for r in self._vectors.values()
            ],
            "q_values": [[s, a, q.value, q.updates] for (s, a), q in self._q.items()],
            "goap_plans": self._plans,
            "missions": self._missions,
        }
        body = json.dumps(doc).encode()
        data = _MAGIC + _digest(body) + b"\n" + body
        tmp = self.path + ".tmp"
        f = self._env.fs.open(tmp, "w")
        try:
            f.write(0, data)
            f.sync()
        finally:
            f.close()
        self._env.fs.rename(tmp, self.path)
        self._env.fs.sync_dir(os.path.dirname(self.path) or ".")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    # -- key-value ------------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        self._check_open()
        self._kv[key] = bytes(value)

    def get(self, key: str) -> bytes | None:
        self._check_open()
        return self._kv.get(key)

    def delete(self, key: str) -> None:
        self._check_open()
        self._kv.pop(key, None)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        return sorted((k, v) for k, v in self._kv.items() if k.startswith(prefix))

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        self._check_open()
        for k in deletes:
            self._kv.pop(k, None)
        self._kv.update({k: bytes(v) for k, v in puts.items()})

    # -- vectors --------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self._check_open()
        dims = {len(r.vector) for r in records} | {
            len(r.vector) for r in list(self._vectors.values())[:1]}
        if len(dims) > 1:
            raise ValueError(f"vectors of different dimensions in one store: {sorted(dims)}")
        for r in records:
            self._vectors[int(r.id)] = VectorRecord.of(r.id, r.vector, r.metadata)

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        self._check_open()
        check_where(where)   # a bad filter is refused on an empty store too
        recs = sorted(self._vectors.values(), key=lambda r: r.id)
        if not recs:
            return []
        matrix = np.array([r.vector for r in recs], dtype=np.float64)
        return exact_search([r.id for r in recs], matrix, [r.metadata for r in recs],
                            vector, k, self._metric, where)

    def remove(self, ids: Iterable[int]) -> int:
        self._check_open()
        return sum(self._vectors.pop(int(i), None) is not None for i in set(ids))

    def count(self) -> int:
        self._check_open()
        return len(self._vectors)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        self._check_open()
        return [self._vectors[i] for i in sorted({int(i) for i in ids}) if i in self._vectors]

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        """``fetch`` as arrays (``BulkFetch``): one float64 matrix built from the held tuples."""
        recs = self.fetch(ids)
        dim = len(recs[0].vector) if recs else 0
        matrix = np.array([r.vector for r in recs], dtype=np.float64).reshape(len(recs), dim)
        return VectorBlock(tuple(r.id for r in recs), matrix,
                           tuple(dict(r.metadata) for r in recs))

    # -- relational (ADR-072) ---------------------------------------------------------------

    def q_value_get(self, state: str, action: str) -> QValue | None:
        self._check_open()
        return self._q.get((check_relational_id("state", state),
                            check_relational_id("action", action)))

    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        key = (check_relational_id("state", state), check_relational_id("action", action))
        new_value = check_q_value(value)
        with self._q_lock:
            self._check_open()
            updates = next_update_count(*key, self._q.get(key))
            self._q[key] = new = QValue(new_value, updates)
        return new

    def q_values(self, state: str) -> dict[str, QValue]:
        """action -> QValue of every action of ``state``, sorted by action."""
        self._check_open()
        state = check_relational_id("state", state)
        return dict(sorted(((a, q) for (s, a), q in list(self._q.items()) if s == state),
                           key=lambda item: item[0]))

    def q_value_put(self, state: str, action: str, q: QValue) -> None:
        key = (check_relational_id("state", state), check_relational_id("action", action))
        record = check_q_record(q)
        with self._q_lock:
            self._check_open()
            self._q[key] = record

    def q_value_delete(self, state: str, action: str) -> None:
        key = (check_relational_id("state", state), check_relational_id("action", action))
        with self._q_lock:
            self._check_open()
            self._q.pop(key, None)

    def relational_states(self) -> list[str]:
        self._check_open()
        return sorted({s for s, _ in list(self._q)})

    def goap_ids(self) -> list[str]:
        self._check_open()
        return sorted(list(self._plans))

    def goap_store(self, plan_id: str, plan: Mapping[str, Any]) -> None:
        text = plan_json(plan)
        self._check_open()
        self._plans[check_relational_id("plan_id", plan_id)] = text

    def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None:
        self._check_open()
        text = self._plans.get(check_relational_id("plan_id", plan_id))
        return None if text is None else dict(json.loads(text))

    def goap_delete(self, plan_id: str) -> None:
        self._check_open()
        self._plans.pop(check_relational_id("plan_id", plan_id), None)

    # -- missions (ARCH-001) ------------------------------------------------------------------

    def mission_put(self, doc: Mapping[str, Any]) -> None:
        doc = check_mission(doc)
        text = canonical_mission(doc).decode("utf-8")
        self._check_open()
        self._missions[doc["mission_id"]] = text

    def mission_get(self, mission_id: str) -> dict[str, Any] | None:
        self._check_open()
        text = self._missions.get(check_mission_id(mission_id))
        return None if text is None else dict(json.loads(text))

    def mission_delete(self, mission_id: str) -> None:
        self._check_open()
        self._missions.pop(check_mission_id(mission_id), None)

    def mission_ids(self) -> list[str]:
        self._check_open()
        return sorted(self._missions)

    def close(self) -> None:
        if not self._closed:
            self._save()
            self._closed = True


def open_memory(path: str, env: Env, **options: str) -> MemoryStore:
    """Open (or create) a memory store whose clean-close snapshot lives at ``path``."""
    opts = check_options("memory", options, OPTIONS)
    return MemoryStore(path, env, str(opts["metric"]))
