"""The model: what a store must contain, as plain Python, and the canonical form of a store's
contents so that a recovered store can be compared with the model's states.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json import encoder as _json_encoder
from typing import Any

import numpy as np
import xxhash

from crashgate.backends import (
    BulkFetch,
    Capability,
    MissionStore,
    QValue,
    Relational,
    VectorBlock,
    VectorRecord,
    check_mission,
    plan_json,
)
from crashgate.harness.ops import Op, Relations, Remove, Upsert, mission_text

__all__ = ["PrefixModel", "StoreState", "block_disagreement", "fingerprint", "prefix_states",
           "mission_seen", "read_missions", "read_relational", "read_state", "relations"]


_METADATA_JSON = json.JSONEncoder(sort_keys=True)   # json.dumps(..., sort_keys=True), built once
# The C encoder behind ``_METADATA_JSON.encode``, made once instead of once a call (a recovered
# store shows thousands of small dicts: the per-call set-up was most of their cost). Same text:
# ``encode`` builds exactly this for a dict (no circularity check: metadata is JSON-able).
_MAKE = getattr(_json_encoder, "c_make_encoder", None)   # None where _json is not built
_C_ENCODER = None if _MAKE is None else _MAKE(
    None, _METADATA_JSON.default, _json_encoder.encode_basestring_ascii, None, ": ", ", ",
    True, False, True)


def _metadata_text(metadata: Mapping[str, Any]) -> bytes:
    """``json.dumps(dict(metadata), sort_keys=True)`` as UTF-8."""
    plain = metadata if type(metadata) is dict else dict(metadata)   # no copy of a dict
    if _C_ENCODER is None:
        return _METADATA_JSON.encode(plain).encode()
    return "".join(_C_ENCODER(plain, 0)).encode()


def fingerprint(record: VectorRecord) -> str:
    """A short digest of a record's vector and metadata. Vectors are compared at 1e-6 (rounded),
    a precision every store can honour; states hold digests, not vectors, so that models of
    stores holding thousands of 384-dimensional vectors stay cheap. Digests are compared only
    within one process (XXH3-128: fast, not a content address)."""
    return _fingerprints([record])[0]


def _fingerprints(records: Sequence[VectorRecord]) -> list[str]:
    """``fingerprint`` of each record; the vectors are rounded as one matrix when they share a
    dimension (a recovered store shows thousands: one numpy call, not one per record)."""
    if len({len(r.vector) for r in records}) == 1:
        return _matrix_fingerprints(np.asarray([r.vector for r in records], dtype=np.float64),
                                    [r.metadata for r in records])
    return [_matrix_fingerprints(np.asarray([r.vector], dtype=np.float64), [r.metadata])[0]
            for r in records]


def _matrix_fingerprints(vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]
                         ) -> list[str]:
    """``fingerprint`` of the records whose vectors are the rows of ``vectors`` (n, d), any
    float dtype (widened to float64 exactly, as ``fetch`` widens it to Python floats), and
    whose metadata are ``metadata`` (n mappings)."""
    n = len(metadata)
    if n == 0:
        return []
    # one rounding for the whole matrix, then each row's bytes are a slice of one buffer: no
    # copy per row (ascontiguousarray: a store may hand a transposed or strided view)
    rounded = np.ascontiguousarray(
        np.round(np.asarray(vectors, dtype=np.float64).reshape(n, -1), 6))
    raw = rounded.data.cast("B") if rounded.size else memoryview(b"")
    width = len(raw) // n
    out = []
    for i, meta in enumerate(metadata):
        h = xxhash.xxh3_128(raw[i * width:(i + 1) * width])
        h.update(_metadata_text(meta))
        out.append(h.hexdigest())
    return out


@dataclass(frozen=True)
class StoreState:
    """The whole visible contents of a store, canonical and hashable."""

    kv: tuple[tuple[str, bytes], ...] = ()
    vectors: tuple[tuple[int, str], ...] = ()
    """(id, fingerprint) of every live vector, sorted by id."""
    relational: tuple[tuple[tuple[str, ...], QValue | str], ...] = ()
    """ADR-072's relational records (``ops.Relations``) sorted by key: ``(("q", state,
    action), QValue)``, ``(("plan", plan_id), canonical JSON text)`` and ARCH-001's missions
    ``(("mission", mission_id), canonical JSON text)``. Empty for a store without
    ``Capability.RELATIONAL`` or ``Capability.MISSIONS``."""

    @staticmethod
    def of(kv: dict[str, bytes], vectors: dict[int, VectorRecord],
           prints: dict[int, tuple[int, str]] | None = None,
           relational: Relations | None = None) -> StoreState:
        """``prints`` caches ``(id, fingerprint)`` by ``id(record)`` across many states (the
        same pair object in each: a run's prefix states share them instead of each holding
        thousands of its own). ``relational``: the model's relational records, if any."""
        if prints is None:
            prints = {}
        new = [r for r in vectors.values() if id(r) not in prints]
        if new:
            pairs = zip([r.id for r in new], _fingerprints(new), strict=True)
            prints.update(zip(map(id, new), pairs, strict=True))
        out = sorted(prints[id(r)] for r in vectors.values())
        return StoreState(tuple(sorted(kv.items())), tuple(out), relations(relational or {}))

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
        if self.relational:   # absent from the digest when empty: no state of a store without
            h.update(b"|relational|")   # relational records changes its digest
            for name, record in self.relational:
                h.update(len(name).to_bytes(8, "little"))
                for part in name:
                    _length_prefixed(h, part.encode())
                if isinstance(record, QValue):   # the exact float and count, not a rounding
                    _length_prefixed(h, struct.pack("<dq", record.value, record.updates))
                else:
                    _length_prefixed(h, record.encode())
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
        rm, rt = dict(self.relational), dict(other.relational)
        for key in sorted(set(rm) | set(rt)):
            if rm.get(key) != rt.get(key):
                if key[0] == "mission":
                    out.append(f"mission {key[1]!r}: {_mission_diff(rm.get(key), rt.get(key))}")
                    continue
                out.append(f"{_relational_name(key)}: seen {_record(rm.get(key))}, expected "
                           f"{_record(rt.get(key))}")
        return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def _short(v: bytes | None) -> str:
    if v is None:
        return "absent"
    return repr(v if len(v) <= 16 else v[:16] + b"...") + f" ({len(v)} bytes)"


def _length_prefixed(h: Any, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little") + data)


def relations(records: Relations) -> tuple[tuple[tuple[str, ...], QValue | str], ...]:
    """``records`` in ``StoreState.relational``'s canonical form (sorted by key)."""
    return tuple(sorted(records.items()))


def _relational_name(key: tuple[str, ...]) -> str:
    if key[0] == "mission":
        return f"mission {key[1]!r}"
    if key[0] == "q":
        return f"Q-value ({key[1]!r}, {key[2]!r})"
    return f"GOAP plan {key[1]!r}"


def _mission_diff(seen: QValue | str | None, want: QValue | str | None) -> str:
    """Where two missions' canonical JSON texts (None: absent) first differ, for a person:
    ``at ['tool_calls']: seen 2 items, expected 3``."""
    if seen is None or want is None or isinstance(seen, QValue) or isinstance(want, QValue):
        return f"seen {_record(seen)}, expected {_record(want)}"
    try:
        mine, theirs = json.loads(seen), json.loads(want)
    except ValueError:   # one is a text saying what the store did wrong (read_missions)
        return f"seen {_record(seen)}, expected {_record(want)}"
    return _first_difference(mine, theirs, "")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _first_difference(seen: Any, want: Any, path: str) -> str:
    """The first place (a path of keys and indices) where two JSON values differ as JSON
    (``1``, ``1.0`` and ``true`` differ: compared through their text, not with ``==``)."""
    if isinstance(seen, dict) and isinstance(want, dict):
        for key in sorted(set(seen) | set(want)):
            here = f"{path}[{key!r}]"
            if key not in seen or key not in want:
                return (f"at {here}: seen {'absent' if key not in seen else _few_json(seen[key])}"
                        f", expected {'absent' if key not in want else _few_json(want[key])}")
            if _json(seen[key]) != _json(want[key]):
                return _first_difference(seen[key], want[key], here)
    if isinstance(seen, list) and isinstance(want, list):
        for i, (a, b) in enumerate(zip(seen, want, strict=False)):
            if _json(a) != _json(b):
                return _first_difference(a, b, f"{path}[{i}]")
        if len(seen) != len(want):
            return (f"at {path or 'the document'}: seen {len(seen)} items, expected "
                    f"{len(want)}")
    return f"at {path or 'the document'}: seen {_few_json(seen)}, expected {_few_json(want)}"


def _few_json(value: Any, limit: int = 60) -> str:
    text = _json(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _record(record: QValue | str | None) -> str:
    if record is None:
        return "absent"
    if isinstance(record, QValue):
        return f"{record.value!r} after {record.updates} update{'s' * (record.updates != 1)}"
    return repr(record if len(record) <= 40 else record[:40] + "...")


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
        self.relational: Relations = {}
        self.states = [StoreState()]
        self._prints: dict[int, tuple[int, str]] = {}   # id(record) -> pair, live records

    def apply(self, op: Op) -> StoreState:
        if not isinstance(op, Upsert | Remove):
            # only upserts and removes change vectors: the others share the last state's pairs
            # (a kv op in a store of thousands of vectors costs its keys, not the vectors)
            op.apply(self.kv, self.vectors, self.relational)
            state = StoreState(tuple(sorted(self.kv.items())), self.states[-1].vectors,
                               relations(self.relational))
            self.states.append(state)
            return state
        touched = {r.id for r in op.records} if isinstance(op, Upsert) else set(op.ids)
        before = {i: self.vectors[i] for i in touched if i in self.vectors}
        op.apply(self.kv, self.vectors, self.relational)
        # a record that left the model may be freed and its id() reused: forget it
        for i, r in before.items():
            if self.vectors.get(i) is not r:
                self._prints.pop(id(r), None)
        state = StoreState.of(self.kv, self.vectors, self._prints, self.relational)
        self.states.append(state)
        return state


def read_state(store: Any, ids: Iterable[int]) -> StoreState:
    """Read everything visible in ``store``: all keys by scan, the given vector ids by
    ``fetch_block`` when the store offers it (``BulkFetch``: no Python float per component),
    else by ``fetch``. Both give the same state for the same records. A store declaring
    ``Capability.RELATIONAL`` shows its relational records too (``read_relational``), and one
    declaring ``Capability.MISSIONS`` its mission documents (``read_missions``)."""
    decl = store.declaration
    kv = dict(store.scan("")) if decl.has(Capability.KV) else {}
    prints: dict[int, str] = {}
    if decl.has(Capability.VECTOR):
        wanted = sorted(set(ids))
        if wanted and isinstance(store, BulkFetch):
            prints = _block_prints(store.fetch_block(wanted), store)
        elif wanted:
            recs = store.fetch(wanted)
            prints = dict(zip([r.id for r in recs], _fingerprints(recs), strict=True))
        count = store.count()
        if count != len(prints):
            # a record we never wrote is visible: make it show up in the state
            prints[-1] = fingerprint(
                VectorRecord.of(-1, [float(count)], {"unexpected_count": count}))
    # a view of a store that passes on its declaration but not these methods (a wrapper) shows
    # none; a store declaring the capability without them is refused by ``machine_for``
    relational = (read_relational(store)
                  if decl.has(Capability.RELATIONAL) and isinstance(store, Relational) else {})
    if decl.has(Capability.MISSIONS) and isinstance(store, MissionStore):
        relational.update(read_missions(store))
    return StoreState(tuple(sorted(kv.items())), tuple(sorted(prints.items())),
                      relations(relational))


def read_relational(store: Relational) -> Relations:
    """Every relational record ``store`` shows, through its listings: each state's Q-values
    (``relational_states``, ``q_values``) and each plan (``goap_ids``, ``goap_retrieve``, as
    canonical JSON). A plan listed but not retrievable, or a Q-value that is not a QValue of
    a float and an int, shows as a text saying so, which differs from every model state."""
    out: Relations = {}
    for state in store.relational_states():
        for action, q in store.q_values(state).items():
            well_formed = (isinstance(q, QValue) and isinstance(q.value, float | int)
                           and isinstance(q.updates, int) and -2**63 <= q.updates < 2**63)
            out[("q", state, action)] = (QValue(float(q.value), q.updates) if well_formed
                                         else f"<q_values returned {q!r}>")
    for plan_id in store.goap_ids():
        plan = store.goap_retrieve(plan_id)
        out[("plan", plan_id)] = ("<listed by goap_ids, but goap_retrieve returned None>"
                                  if plan is None else plan_json(plan))
    return out


def read_missions(store: MissionStore) -> Relations:
    """Every mission ``store`` shows, through its listing (``mission_ids``, ``mission_get``),
    as ``("mission", mission_id)`` -> canonical JSON text (``ops.mission_text``). A mission
    listed but not retrievable, listed twice, or whose document is not a mission document
    (``check_mission``) shows as a text saying so, which differs from every model state."""
    out: Relations = {}
    for mission_id in store.mission_ids():
        name = mission_id if isinstance(mission_id, str) else repr(mission_id)
        if ("mission", name) in out:
            out[("mission", name)] = "<listed more than once by mission_ids>"
            continue
        text = mission_seen(store.mission_get(mission_id))
        out[("mission", name)] = ("<listed by mission_ids, but mission_get returned None>"
                                  if text is None else text)
    return out


def mission_seen(doc: object) -> str | None:
    """What ``mission_get`` returned as the model holds a mission (``ops.mission_text``), None
    for None, or a text saying it is no mission document (``check_mission``), which differs
    from every mission the model holds."""
    if doc is None:
        return None
    try:
        return mission_text(check_mission(doc))
    except (TypeError, ValueError) as exc:
        return f"<mission_get returned no mission document: {exc}>"


def _block_prints(block: VectorBlock, store: Any) -> dict[int, str]:
    """id -> fingerprint of a ``fetch_block`` answer whose shapes agree."""
    vectors = _block_vectors(block, store)
    return dict(zip(map(int, block.ids), _matrix_fingerprints(vectors, block.metadata),
                    strict=True))


def _block_vectors(block: VectorBlock, store: Any) -> np.ndarray:
    """``block.vectors`` as an array, after checking there is one float row and one metadata
    mapping per id (``ValueError`` naming the store otherwise)."""
    vectors = np.asarray(block.vectors)
    n = len(block.ids)
    if (vectors.ndim != 2 or vectors.shape[0] != n or len(block.metadata) != n
            or vectors.dtype.kind != "f"):
        raise ValueError(
            f"{type(store).__name__}.fetch_block returned {n} ids, {len(block.metadata)} "
            f"metadata and vectors of shape {vectors.shape} ({vectors.dtype}); a VectorBlock "
            f"needs one float row and one metadata mapping per id: fix the store's fetch_block")
    return vectors


def block_disagreement(store: Any, block: VectorBlock, records: Sequence[VectorRecord]
                       ) -> str | None:
    """How ``store.fetch_block(ids)`` (``block``) differs from ``store.fetch(ids)``
    (``records``), or None when they agree: the same ids in the same order, the same vectors
    exactly once widened to float64 (each at the store's own precision) and equal metadata."""
    try:
        vectors = _block_vectors(block, store)
    except ValueError as exc:
        return str(exc)
    got, want = [int(i) for i in block.ids], [r.id for r in records]
    if got != want:
        return f"ids {_few(got)}, fetch gives {_few(want)}"
    for row, r in enumerate(records):
        seen = vectors[row].astype(np.float64)
        if len(seen) != len(r.vector) or not np.array_equal(seen, r.vector):
            return (f"the vector of id {r.id} is {_few(seen.tolist())}, fetch gives "
                    f"{_few(list(r.vector))}")
        if dict(block.metadata[row]) != dict(r.metadata):
            return (f"the metadata of id {r.id} is {dict(block.metadata[row])!r}, fetch gives "
                    f"{dict(r.metadata)!r}")
    return None


def _few(values: Sequence[Any], limit: int = 6) -> str:
    shown = ", ".join(map(repr, values[:limit]))
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)})"
