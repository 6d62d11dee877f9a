"""Random workloads for a store, seeded so a run can be replayed exactly.

A workload uses only what the store declares: key-value ops for a key-value store, batches for
a store with atomic batches, vector upserts and removes for a vector store, and ARCH-001's
mission puts and deletes for a store with missions (``Capability.MISSIONS``: generated
documents of a few KB over a handful of mission ids, so that puts replace and deletes hit).

``history=True`` (the power-loss row's workload) adds what only a store with a past can get
wrong: sessions (``Reopen``: close and open again), compaction (``Compact``, when the store
declares ``compact``), the same ids removed and re-inserted and the same keys deleted and
put again, most often with a session in between, and now and then a long record, larger than
a store's read window, that lives for a few ops and is then deleted or overwritten (so that it
spans more than one window without making every later crash state carry it).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from crashgate.backends import Capability, Declaration, VectorRecord
from crashgate.harness.missions import generate_missions
from crashgate.harness.ops import (
    Batch,
    Compact,
    Delete,
    MissionDelete,
    MissionPut,
    Op,
    Put,
    Remove,
    Reopen,
    Upsert,
    op_for,
)

__all__ = ["LONG_RECORD", "PROFILES", "Profile", "iter_workload", "random_workload"]

# A long record's size: past RVF's 1 MiB read window (reference/rvf/scan.py CHUNK, the largest
# window among the reference stores), so also hundreds of SQLite 4 KiB pages; odd, so that it
# ends inside a sector.
LONG_RECORD = (1 << 20) + 4099


@dataclass(frozen=True)
class Profile:
    """The shape of a workload: key pool, value sizes, vector batch sizes, delete share."""

    keys: int = 12
    max_value: int = 300
    big_value: int = 8192
    dimension: int = 8
    max_batch: int = 6
    delete_share: float = 0.2
    id_pool: int = 40
    pooled_vectors: bool = False
    """Draw each vector as a slice of one shared pool of floats (``VECTOR_POOL``) instead of
    drawing every value: the vectors stay distinct within an op, and a workload of thousands
    of 384-dimensional vectors holds pointers to shared floats (8 bytes a value) instead of a
    float object each (32 bytes), and is drawn in C rather than one ``uniform`` per value."""
    missions: int = 4
    """Mission ids a store with missions is written under (``Capability.MISSIONS``)."""
    mission_narrative: int = 3
    mission_tool_calls: int = 5
    """The most narrative entries and tool calls a drawn mission document keeps (a generated
    one has up to 20 and 40: cut to keep a document a few KB)."""


PROFILES = {
    "small": Profile(),
    # several-MiB segments and many deletes (issue: "also with large batches and many deletes")
    "large": Profile(keys=24, max_value=4096, big_value=1 << 20, dimension=384, max_batch=1200,
                     delete_share=0.45, id_pool=4000, pooled_vectors=True),
    # ARCH-001's mission state: more missions, longer audit trails and narratives, few keys
    "missions": Profile(keys=4, missions=6, mission_narrative=8, mission_tool_calls=20),
}

VECTOR_POOL = 1 << 18
"""Floats in the shared pool of ``pooled_vectors`` (2 MiB of values, 8 MiB as objects)."""
_POOL: list[list[float]] = []

_STEP = 2.0 ** -20
"""Every vector component is a multiple of this in [-1, 1]: exact in float32 (21 significant
bits) as in float64, so a store keeping float32 (the RVF layouts) holds exactly what was
written, and a comparison at 1e-6 never falls on a rounding edge that float32 moved."""


def _component(rng: random.Random) -> float:
    return round(rng.uniform(-1, 1) / _STEP) * _STEP


def _pool() -> list[float]:
    """The pool, drawn once per process from a fixed seed (workloads differ by their starts)."""
    if not _POOL:
        rng = random.Random("vector-pool")
        _POOL.append([_component(rng) for _ in range(VECTOR_POOL)])
    return _POOL[0]


def _value(rng: random.Random, p: Profile, n: int, tag: str = "op") -> bytes:
    size = p.big_value if rng.random() < 0.05 else rng.randrange(0, p.max_value + 1)
    # a recognisable, per-op payload: torn data can never look like a value that was written
    stamp = f"{tag}{n}:".encode()
    body = rng.randbytes(max(0, size - len(stamp)))
    return (stamp + body)[:size] if size else b""


def random_workload(decl: Declaration, ops: int, seed: int, profile: Profile, *,
                    history: bool = False) -> list[Op]:
    """``ops`` operations, deterministic for ``seed``. With ``history``, sessions, compactions,
    re-inserts and long records take some of the places; the other ops are the plain ones,
    in the same order (see the module docstring)."""
    return list(iter_workload(decl, ops, seed, profile, history=history))


def iter_workload(decl: Declaration, ops: int, seed: int, profile: Profile, *,
                  history: bool = False) -> Iterator[Op]:
    """``random_workload`` one op at a time: a run of the large profile need not hold every
    vector it ever wrote. A store that keeps no metadata (``Declaration.metadata``) gets the
    same ops with metadata ``{}`` (``ops.op_for``; drawn as for any store, so the same seed
    gives the same ids and vectors)."""
    plain = _plain_ops(decl, seed, profile)
    made = (_History(decl, seed, profile).ops(ops, plain) if history
            else itertools.islice(plain, ops))
    return made if decl.metadata else (op_for(decl, op) for op in made)


def _plain_ops(decl: Declaration, seed: int, p: Profile) -> Iterator[Op]:
    """The plain mix, endless: puts, deletes, batches, upserts and removes."""
    rng = random.Random(seed)
    kv = decl.has(Capability.KV)
    vec = decl.has(Capability.VECTOR)
    batch = decl.has(Capability.BATCH)
    missions = decl.has(Capability.MISSIONS)
    keys = _keys(p)
    mission_ids = _mission_ids(p)
    live: set[int] = set()
    for n in itertools.count():
        kinds: list[str] = []
        if kv:
            kinds += ["put", "put", "delete"] + (["batch"] if batch else [])
        if vec:
            kinds += ["upsert", "upsert"] + (["remove"] if live else [])
        if missions:   # last, and drawn only here: a store without missions draws as before
            kinds += ["mission put", "mission put", "mission delete"]
        kind = rng.choice(kinds)
        if kind == "put":
            yield Put(rng.choice(keys), _value(rng, p, n))
        elif kind == "delete":
            yield Delete(rng.choice(keys))
        elif kind == "batch":
            chosen = rng.sample(keys, rng.randrange(2, min(6, len(keys)) + 1))
            split = rng.randrange(1, len(chosen))
            yield Batch(tuple((k, _value(rng, p, n)) for k in chosen[:split]),
                        tuple(chosen[split:]))
        elif kind == "mission put":
            yield MissionPut(_mission_doc(rng, p, rng.choice(mission_ids)))
        elif kind == "mission delete":
            yield MissionDelete(rng.choice(mission_ids))
        elif kind == "upsert":
            size = rng.randrange(1, p.max_batch + 1)
            ids = rng.sample(range(p.id_pool), min(size, p.id_pool))
            live.update(ids)
            yield Upsert(_records(rng, p, ids, {"op": n}))
        else:
            k = max(1, int(len(live) * p.delete_share * rng.random()))
            gone = tuple(sorted(rng.sample(sorted(live), min(k, len(live)))))
            live.difference_update(gone)
            yield Remove(gone)


def _keys(p: Profile) -> list[str]:
    return [f"k{i:02d}" if i % 3 else f"dir/k{i:02d}" for i in range(p.keys)]


def _mission_ids(p: Profile) -> list[str]:
    # one id in three with a path separator and a non-ASCII letter: the JSON side names a
    # file after a mission id
    return [f"mission-{i:02d}" if i % 3 else f"mïssion/{i:02d}" for i in range(p.missions)]


def _mission_doc(rng: random.Random, p: Profile, mission_id: str) -> dict[str, Any]:
    """A realistic mission document (``missions.generate_missions``, seeded from ``rng``: a
    different one each call) under ``mission_id``, cut to ``p``'s narrative and tool calls."""
    [doc] = generate_missions(1, rng.randrange(1 << 62))
    memory = doc["project_memory"]
    memory["narrative"] = memory["narrative"][:p.mission_narrative]
    doc["tool_calls"] = doc["tool_calls"][:p.mission_tool_calls]
    doc["mission_id"] = mission_id
    return doc


def _records(rng: random.Random, p: Profile, ids: Iterable[int],
             metadata: dict[str, object]) -> tuple[VectorRecord, ...]:
    if not p.pooled_vectors:
        return tuple(VectorRecord.of(i, [_component(rng) for _ in range(p.dimension)],
                                     {**metadata, "tag": rng.choice("xyz")})
                     for i in ids)
    ids = list(ids)
    pool = _pool()
    # distinct starts: no two vectors of one op are equal
    starts = rng.sample(range(VECTOR_POOL - p.dimension), len(ids))
    return tuple(VectorRecord(i, tuple(pool[s:s + p.dimension]),
                              {**metadata, "tag": rng.choice("xyz")})
                 for i, s in zip(ids, starts, strict=True))


class _History:
    """The ``history=True`` generator, with its own random stream. Each place holds a planned
    follow-up of an earlier op (a re-insert after a remove or delete, often after a reopen;
    the end of a long record's life), or a drawn session boundary, compaction or long record,
    or else the next plain op."""

    REOPEN = 1 / 12          # about ten sessions in a 120-op run
    COMPACT = 1 / 20
    LONG = 1 / 60            # besides the one every run of 8 ops or more gets
    REINSERT = 0.6           # share of removes and deletes undone a few ops later

    def __init__(self, decl: Declaration, seed: int, profile: Profile) -> None:
        self.rng = random.Random(f"history:{seed}")
        self.p = profile
        self.kv = decl.has(Capability.KV)
        self.vec = decl.has(Capability.VECTOR)
        self.compact = decl.has(Capability.COMPACT)
        self.keys = _keys(profile)
        self.planned: dict[int, list[Op]] = {}

    def ops(self, count: int, plain: Iterator[Op]) -> Iterator[Op]:
        rng = self.rng
        first_long = rng.randrange(count // 8, count // 3) if count >= 8 else -1
        for n in range(count):
            op: Op
            if self.planned.get(n):
                op = self.planned[n].pop(0)
                if self.planned[n]:   # a clash: the rest wait for the next place
                    self.planned.setdefault(n + 1, []).extend(self.planned.pop(n))
                if n == first_long:   # so does the run's long record
                    first_long += 1
            elif n == first_long or rng.random() < self.LONG:
                op = self._long(n)
            elif rng.random() < self.REOPEN:
                op = Reopen()
            elif self.compact and rng.random() < self.COMPACT:
                op = Compact()
            else:
                op = next(plain)
            self._follow_up(n, op)
            yield op

    def _later(self, n: int, op: Op, lo: int, hi: int) -> None:
        self.planned.setdefault(n + self.rng.randrange(lo, hi), []).append(op)

    def _undo_later(self, n: int, op: Op) -> None:
        """Re-insert what was removed, after a session boundary half of the time: a store
        that replays its sessions out of order shows it."""
        if self.rng.random() < 0.5:
            self._later(n, Reopen(), 1, 2)
            self._later(n, op, 2, 15)
        else:
            self._later(n, op, 1, 15)

    def _long(self, n: int) -> Op:
        """A record longer than a read window: a value, or a vector whose metadata is long."""
        rng = self.rng
        if self.kv and (not self.vec or rng.random() < 0.5):
            stamp = f"h{n}:long:".encode()
            return Put(rng.choice(self.keys), stamp + rng.randbytes(LONG_RECORD - len(stamp)))
        blob = rng.randbytes(LONG_RECORD // 2).hex()
        return Upsert(_records(rng, self.p, [rng.randrange(self.p.id_pool)],
                               {"op": f"h{n}", "blob": blob}))

    def _follow_up(self, n: int, op: Op) -> None:
        """Plan what this op calls for later."""
        rng = self.rng
        if isinstance(op, Upsert) and any("blob" in r.metadata for r in op.records):
            ids = [r.id for r in op.records]     # a long record: retire it soon
            self._later(n, Remove(tuple(ids)) if rng.random() < 0.5 else
                        Upsert(_records(rng, self.p, ids, {"op": f"h{n}"})), 2, 9)
        elif isinstance(op, Remove) and rng.random() < self.REINSERT:
            self._undo_later(n, Upsert(_records(rng, self.p, op.ids, {"op": f"h{n}"})))
        elif isinstance(op, Put) and len(op.value) >= LONG_RECORD:
            self._later(n, Delete(op.key) if rng.random() < 0.5 else
                        Put(op.key, _value(rng, self.p, n, "h")), 2, 9)
        elif isinstance(op, Delete) and rng.random() < self.REINSERT:
            self._undo_later(n, Put(op.key, _value(rng, self.p, n, "h")))
        elif isinstance(op, Batch) and op.deletes and rng.random() < self.REINSERT:
            self._undo_later(n, Put(op.deletes[0], _value(rng, self.p, n, "h")))
        elif isinstance(op, MissionDelete) and rng.random() < self.REINSERT:
            self._undo_later(n, MissionPut(_mission_doc(rng, self.p, op.mission_id)))
