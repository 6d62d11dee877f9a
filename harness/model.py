"""The model: what a store must contain, as plain Python, and the canonical form of a store's
contents so that a recovered store can be compared with the model's states.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crashgate.backends import Capability, VectorRecord
from crashgate.harness.ops import Op

__all__ = ["PrefixModel", "StoreState", "fingerprint", "prefix_states", "read_state"]


_METADATA_JSON = json.JSONEncoder(sort_keys=True)   # json.dumps(..., sort_keys=True), built once


def fingerprint(record: VectorRecord) -> str:
    """A short digest of a record's vector and metadata. Vectors are compared at 1e-6 (rounded),
    a precision every store can honour; states hold digests, not vectors, so that models of
    stores holding thousands of 384-dimensional vectors stay cheap."""
    return _fingerprints([record])[0]


def _fingerprints(records: Sequence[VectorRecord]) -> list[str]:
    """``fingerprint`` of each record; the vectors are rounded as one matrix when they share a
    dimension (a recovered store shows thousands: one numpy call, not one per record)."""
    dims = {len(r.vector) for r in records}
    if len(dims) == 1:
        rows = np.round(np.asarray([r.vector for r in records], dtype=np.float64), 6)
        raw = [row.tobytes() for row in rows]
    else:
        raw = [np.round(np.asarray(r.vector, dtype=np.float64), 6).tobytes() for r in records]
    out = []
    for r, vec in zip(records, raw, strict=True):
        h = hashlib.blake2b(vec, digest_size=12)
        h.update(_METADATA_JSON.encode(dict(r.metadata)).encode())
        out.append(h.hexdigest())
    return out


@dataclass(frozen=True)
class StoreState:
    """The whole visible contents of a store, canonical and hashable."""

    kv: tuple[tuple[str, bytes], ...] = ()
    vectors: tuple[tuple[int, str], ...] = ()
    """(id, fingerprint) of every live vector, sorted by id."""

    @staticmethod
    def of(kv: dict[str, bytes], vectors: dict[int, VectorRecord],
           prints: dict[int, tuple[int, str]] | None = None) -> StoreState:
        """``prints`` caches ``(id, fingerprint)`` by ``id(record)`` across many states (the
        same pair object in each: a run's prefix states share them instead of each holding
        thousands of its own)."""
        if prints is None:
            prints = {}
        new = [r for r in vectors.values() if id(r) not in prints]
        if new:
            pairs = zip([r.id for r in new], _fingerprints(new), strict=True)
            prints.update(zip(map(id, new), pairs, strict=True))
        out = sorted(prints[id(r)] for r in vectors.values())
        return StoreState(tuple(sorted(kv.items())), tuple(out))

    @property
    def digest(self) -> str:
        """A digest of the whole contents, computed once: keys and values length-prefixed (a
        value's bytes hashed as they are, never through ``repr``: a 1 MiB value is one pass)."""
        cached = self.__dict__.get("_digest")
        if cached is not None:
            return str(cached)
        h = hashlib.blake2b(digest_size=16)
        for key, value in self.kv:
            k = key.encode()
            h.update(len(k).to_bytes(8, "little") + k + len(value).to_bytes(8, "little"))
            h.update(value)
        h.update(b"|vectors|" + ";".join(f"{i}:{fp}" for i, fp in self.vectors).encode())
        out = h.hexdigest()
        object.__setattr__(self, "_digest", out)
        return out

    def kv_dict(self) -> dict[str, bytes]:
        return dict(self.kv)

    def describe_diff(self, other: StoreState, limit: int = 5) -> list[str]:
        """Lines saying how ``self`` (seen) differs from ``other`` (expected)."""
        out: list[str] = []
        mine, theirs = dict(self.kv), dict(other.kv)
        for k in sorted(set(mine) | set(theirs)):
            if mine.get(k) != theirs.get(k):
                out.append(
                    f"key {k!r}: seen {_short(mine.get(k))}, expected {_short(theirs.get(k))}")
        vm = {v[0]: v for v in self.vectors}
        vt = {v[0]: v for v in other.vectors}
        for i in sorted(set(vm) | set(vt)):
            if vm.get(i) != vt.get(i):
                seen = "absent" if i not in vm else "present"
                want = "absent" if i not in vt else "present"
                out.append(f"vector {i}: seen {seen}, expected {want}"
                           + (" (contents differ)" if i in vm and i in vt else ""))
        return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def _short(v: bytes | None) -> str:
    if v is None:
        return "absent"
    return repr(v if len(v) <= 16 else v[:16] + b"...") + f" ({len(v)} bytes)"


def prefix_states(ops: Sequence[Op]) -> list[StoreState]:
    """``S[j]``: the model after the first ``j`` ops (``S[0]`` is empty)."""
    model = PrefixModel()
    for op in ops:
        model.apply(op)
    return model.states


class PrefixModel:
    """``prefix_states`` built op by op, holding only the live records: a run can drop each
    op's vectors once it is applied (``ops.thin``), so the large profile's workload is never
    all in memory. ``states[j]`` is the model after ``j`` ops."""

    def __init__(self) -> None:
        self.kv: dict[str, bytes] = {}
        self.vectors: dict[int, VectorRecord] = {}
        self.states = [StoreState()]
        self._prints: dict[int, tuple[int, str]] = {}   # id(record) -> pair, live records

    def apply(self, op: Op) -> StoreState:
        before = self.vectors.copy() if self._prints else {}
        op.apply(self.kv, self.vectors)
        # a record that left the model may be freed and its id() reused: forget it
        for i, r in before.items():
            if self.vectors.get(i) is not r:
                self._prints.pop(id(r), None)
        state = StoreState.of(self.kv, self.vectors, self._prints)
        self.states.append(state)
        return state


def read_state(store: Any, ids: Iterable[int]) -> StoreState:
    """Read everything visible in ``store``: all keys by scan, the given vector ids by fetch."""
    decl = store.declaration
    kv = dict(store.scan("")) if decl.has(Capability.KV) else {}
    vectors: dict[int, VectorRecord] = {}
    if decl.has(Capability.VECTOR):
        wanted = sorted(set(ids))
        vectors = {r.id: r for r in store.fetch(wanted)} if wanted else {}
        count = store.count()
        if count != len(vectors):
            # a record we never wrote is visible: make it show up in the state
            vectors[-1] = VectorRecord.of(-1, [float(count)], {"unexpected_count": count})
    return StoreState.of(kv, vectors)
