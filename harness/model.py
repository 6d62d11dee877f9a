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

__all__ = ["StoreState", "fingerprint", "prefix_states", "read_state"]


def fingerprint(record: VectorRecord) -> str:
    """A short digest of a record's vector and metadata. Vectors are compared at 1e-6 (rounded),
    a precision every store can honour; states hold digests, not vectors, so that models of
    stores holding thousands of 384-dimensional vectors stay cheap."""
    h = hashlib.blake2b(digest_size=12)
    h.update(np.round(np.asarray(record.vector, dtype=np.float64), 6).tobytes())
    h.update(json.dumps(dict(record.metadata), sort_keys=True).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class StoreState:
    """The whole visible contents of a store, canonical and hashable."""

    kv: tuple[tuple[str, bytes], ...] = ()
    vectors: tuple[tuple[int, str], ...] = ()
    """(id, fingerprint) of every live vector, sorted by id."""

    @staticmethod
    def of(kv: dict[str, bytes], vectors: dict[int, VectorRecord],
           prints: dict[int, str] | None = None) -> StoreState:
        """``prints`` caches fingerprints by ``id(record)`` across many states."""
        if prints is None:
            prints = {}
        out = []
        for r in vectors.values():
            fp = prints.get(id(r))
            if fp is None:
                fp = prints[id(r)] = fingerprint(r)
            out.append((r.id, fp))
        return StoreState(tuple(sorted(kv.items())), tuple(sorted(out)))

    @property
    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((self.kv, self.vectors)).encode())
        return h.hexdigest()

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
    kv: dict[str, bytes] = {}
    vectors: dict[int, VectorRecord] = {}
    prints: dict[int, str] = {}
    states = [StoreState()]
    for op in ops:
        op.apply(kv, vectors)
        states.append(StoreState.of(kv, vectors, prints))
    return states


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
