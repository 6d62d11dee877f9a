"""Stores with a defect only a crash between two of their writes shows, and no failpoint there
(``module:factory`` specs with ``PYTHONPATH=tests``, e.g. ``defects_crashpoints:open_in_place``).

- ``open_in_place``: a key-value store that declares ``process-crash`` durability and rewrites
  its one file in place on every change (truncate, then write). Between the two the page cache
  holds an empty file, which reads as an empty store: a process crash there loses every
  acknowledged write. Power loss can show the same empty file, but its declared durability
  does not cover power loss, so only a process crash between the two writes catches it.
- ``open_metadata_first``: the rvlite hybrid writing metadata before the vectors reach RVF (the
  defect ADR-032 warns about), declaring no failpoints; ``open_metadata_first_with_failpoints``
  is the same store with rvlite's failpoints declared.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence

from crashgate.backends import (
    Capability,
    Declaration,
    Durability,
    Env,
    StoreClosed,
    VectorRecord,
    check_options,
)
from crashgate.reference.rvlite import FAILPOINTS, META_STORE, RvliteStore, open_rvlite

__all__ = ["InPlaceKV", "MetadataFirst", "open_in_place", "open_metadata_first",
           "open_metadata_first_with_failpoints"]

_HEADER = 8   # payload length and CRC-32, 4 bytes each, little-endian


class InPlaceKV:
    """One file holding ``header + JSON {key: hex value}``, rewritten in place on each change.

    The file is checksummed, and a file that fails its checksum (or is empty) reads as an
    empty store: the author reasoned that damage can only come from power loss, which the store
    does not promise to survive. That makes every power-loss state an allowed one; the defect
    is the window between ``truncate`` and ``write`` that a process crash can hit."""

    def __init__(self, path: str, env: Env) -> None:
        self.path = path
        self.declaration = Declaration(Durability.PROCESS_CRASH, frozenset({Capability.KV}))
        self._file = env.fs.open(path, "c")
        self._kv = self._load()
        self._closed = False

    def _load(self) -> dict[str, bytes]:
        raw = self._file.read(0, self._file.size())
        size = int.from_bytes(raw[:4], "little")
        payload = raw[_HEADER:_HEADER + size]
        # (zeros, as a torn extension leaves them, would pass a checksum of nothing)
        if len(raw) < _HEADER or size == 0 or len(payload) != size or \
                zlib.crc32(payload) != int.from_bytes(raw[4:8], "little"):
            return {}
        return {k: bytes.fromhex(v) for k, v in json.loads(payload).items()}

    def _save(self) -> None:
        payload = json.dumps({k: v.hex() for k, v in sorted(self._kv.items())}).encode()
        header = len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little")
        self._file.truncate(0)   # the defect: the old contents are gone before the new arrive
        self._file.write(0, header + payload)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    def put(self, key: str, value: bytes) -> None:
        self._check_open()
        self._kv[key] = bytes(value)
        self._save()

    def get(self, key: str) -> bytes | None:
        self._check_open()
        return self._kv.get(key)

    def delete(self, key: str) -> None:
        self._check_open()
        if self._kv.pop(key, None) is not None:
            self._save()

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        return sorted((k, v) for k, v in self._kv.items() if k.startswith(prefix))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()


def open_in_place(path: str, env: Env, **options: str) -> InPlaceKV:
    check_options("in-place", options, {})
    return InPlaceKV(path, env)


class MetadataFirst(RvliteStore):
    """The defect ADR-032 warns about: metadata committed to the cache before the vectors
    reach RVF. A crash between the two leaves new metadata on old vectors at an unchanged
    epoch, which the next open does not reconcile."""

    def _commit(self, *, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = (),
                upserts: Sequence[VectorRecord] = (), removes: Iterable[int] = ()) -> None:
        removes = list(removes)
        if upserts or removes:
            with self._write([META_STORE]) as txn:
                for i in removes:
                    txn.delete(META_STORE, i)
                for r in upserts:
                    txn.put(META_STORE, r.id, dict(r.metadata))
        self._env.failpoints.hit(FAILPOINTS[1])
        self._rvf.commit(puts=dict(puts or {}), deletes=list(deletes), upserts=list(upserts),
                         removes=removes, epoch=self.epoch + 1)
        self._env.failpoints.hit(FAILPOINTS[0])
        self.reconcile()   # bring the cache's epoch along


def open_metadata_first_with_failpoints(path: str, env: Env, **options: str) -> RvliteStore:
    """The defect, with rvlite's failpoints declared (hit, in this order, around the writes)."""
    store = open_rvlite(path, env, **options)
    store.__class__ = MetadataFirst
    return store


def open_metadata_first(path: str, env: Env, **options: str) -> RvliteStore:
    """The defect, declaring no failpoints: only crashes between disk operations reach it."""
    store = open_metadata_first_with_failpoints(path, env, **options)
    decl = store.declaration
    store.declaration = dataclasses.replace(
        decl, failpoints=(), capabilities=decl.capabilities - {Capability.FAILPOINTS})
    return store
