"""Test backends whose defects need a history: earlier sessions, a compaction, a record larger
than a read window (``module:factory`` specs, e.g. ``defects_history:open_session_order``).

All are one store, ``SegmentLog``: key-value pairs and vectors on a directory of append-only
segment files, each record framed as ``<u32 payload length><u32 crc32 of payload><payload>``
(payload: ``<u32 n><n bytes of JSON><the values put, raw, in the JSON's order>``). Every write
is appended and fsynced before it returns (power-loss durability); a new segment is started at
open once the newest holds ``ROTATE_AT`` bytes; ``compact()`` rewrites the live data as one
snapshot segment (temp file, fsync, rename, directory fsync, then the old segments are
unlinked), but only once the log holds ``COMPACT_AT`` bytes: below that a rewrite is not worth
it. ``open_segment_log`` is the correct store. Each defect is one realistic slip in it:

- ``open_session_order`` (declares no compaction, so its segments pile up): segment files are
  named ``seg-<n>.log`` without zero padding and replayed in ``listdir`` (lexicographic) order,
  so from the tenth segment on ``seg-10`` is replayed before ``seg-2``: a key deleted and put
  again (an id removed and re-inserted) in a later session is back to its old value or gone
  after a reopen;
- ``open_compaction_drops``: compaction rebuilds the snapshot from the segment files applying
  every put before every tombstone, so a key deleted and put again, or an id removed and
  re-inserted, is dropped by the compaction (the running session still shows it; the next
  open does not);
- ``open_window_reader``: open reads each record with one read of at most ``WINDOW`` (1 MiB)
  bytes and takes a short payload for a torn tail, so a record longer than a window cuts
  the log there: it and everything after it are lost (and truncated away).

The model's crash inside an op is shown on ``defects_crashpoints:open_in_place``.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import (
    Capability,
    CorruptStore,
    Declaration,
    Durability,
    Env,
    File,
    Hit,
    StoreClosed,
    VectorRecord,
)
from crashgate.reference.vector_search import check_where, exact_search

__all__ = ["SegmentLog", "open_compaction_drops", "open_segment_log", "open_session_order",
           "open_window_reader"]

HEADER = struct.Struct("<II")
LENGTH = struct.Struct("<I")
ROTATE_AT = 1024
COMPACT_AT = 64 << 10
WINDOW = 1 << 20


def _frame(payload: Mapping[str, Any]) -> bytes:
    """``payload["put"]`` maps keys to values; they go raw after the JSON, which keeps lengths."""
    meta = {**payload, "put": [[k, len(v)] for k, v in payload.get("put", {}).items()]}
    head = json.dumps(meta, sort_keys=True).encode()
    body = b"".join([LENGTH.pack(len(head)), head, *payload.get("put", {}).values()])
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def _unframe(body: bytes) -> dict[str, Any]:
    (n,) = LENGTH.unpack_from(body)
    meta: dict[str, Any] = json.loads(body[LENGTH.size:LENGTH.size + n])
    pos, puts = LENGTH.size + n, {}
    for k, size in meta.get("put", []):
        puts[k] = body[pos:pos + size]
        pos += size
    return {**meta, "put": puts}


def _record_json(r: VectorRecord) -> dict[str, Any]:
    return {"id": r.id, "vector": list(r.vector), "metadata": dict(r.metadata)}


class SegmentLog:
    """See the module docstring. ``defect`` is ``None`` (correct), ``"session-order"``,
    ``"compaction-drops"`` or ``"window-reader"``."""

    def __init__(self, path: str, env: Env, defect: str | None = None, *,
                 compactable: bool = True) -> None:
        self.path = path
        self._fs = env.fs
        self._defect = defect
        self._kv: dict[str, bytes] = {}
        self._vectors: dict[int, VectorRecord] = {}
        self._closed = False
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS,
            capabilities=frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH,
                                    Capability.METADATA_FILTER}
                                   | ({Capability.COMPACT} if compactable else set())),
            metric="l2",
        )
        self._fs.makedirs(path)
        self._fs.sync_dir(os.path.dirname(os.path.normpath(path)) or "/")
        segments = self._segments()
        for name in self._replay_order(segments):
            self._replay(name, newest=name == segments[-1])
        self._file, self._end = self._open_current(segments)

    # -- files --------------------------------------------------------------------------------

    def _name(self, n: int) -> str:
        return f"seg-{n}.log"

    def _segments(self) -> list[str]:
        """Segment names, oldest first (by number)."""
        names = [n for n in self._fs.listdir(self.path)
                 if n.startswith("seg-") and n.endswith(".log")]
        return sorted(names, key=lambda n: int(n[4:-4]))

    def _replay_order(self, segments: list[str]) -> list[str]:
        if self._defect == "session-order":
            return sorted(segments)     # the slip: "seg-10.log" < "seg-2.log"
        return segments

    def _open_current(self, segments: list[str]) -> tuple[File, int]:
        last = int(segments[-1][4:-4]) if segments else 0
        if segments:
            f = self._fs.open(os.path.join(self.path, segments[-1]), "r+")
            if f.size() < ROTATE_AT:
                return f, f.size()
            f.close()
        f = self._fs.open(os.path.join(self.path, self._name(last + 1)), "c")
        f.sync()
        self._fs.sync_dir(self.path)
        return f, 0

    def _records(self, f: File) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """``(offset, payload)`` of each record; ``None`` payload at a torn tail (then stops)."""
        size, pos = f.size(), 0
        while pos < size:
            if self._defect == "window-reader":
                chunk = f.read(pos, min(WINDOW, size - pos))   # the slip: one window a record
                n, crc = HEADER.unpack(chunk[:HEADER.size]) if len(chunk) >= 8 else (0, 0)
                body = chunk[HEADER.size:HEADER.size + n]
            else:
                head = f.read(pos, HEADER.size)
                if len(head) < HEADER.size:
                    yield pos, None
                    return
                n, crc = HEADER.unpack(head)
                body = f.read(pos + HEADER.size, n)
            if n == 0 or len(body) < n or zlib.crc32(body) != crc:   # zeros: torn
                yield pos, None
                return
            yield pos, _unframe(body)
            pos += HEADER.size + n

    def _replay(self, name: str, newest: bool) -> None:
        f = self._fs.open(os.path.join(self.path, name), "r+")
        try:
            for pos, payload in self._records(f):
                if payload is None:
                    if not newest:
                        raise CorruptStore(self.path, f"{name}: damaged record at {pos} in a "
                                           "sealed segment")
                    f.truncate(pos)   # a torn tail of the newest segment: cut it
                    f.sync()
                    return
                self._apply(payload)
        finally:
            f.close()

    def _apply(self, p: Mapping[str, Any]) -> None:
        if p.get("reset"):
            self._kv, self._vectors = {}, {}
        for k in p.get("del", []):
            self._kv.pop(k, None)
        self._kv.update(p.get("put", {}))
        for i in p.get("rm", []):
            self._vectors.pop(int(i), None)
        for r in p.get("up", []):
            self._vectors[int(r["id"])] = VectorRecord.of(r["id"], r["vector"], r["metadata"])

    def _append(self, payload: dict[str, Any]) -> None:
        if self._closed:
            raise StoreClosed(self.path)
        data = _frame(payload)
        self._file.write(self._end, data)
        self._file.sync()
        self._end += len(data)
        self._apply(payload)

    # -- key-value -----------------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        self._append({"put": {key: bytes(value)}})

    def delete(self, key: str) -> None:
        self._append({"del": [key]})

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        self._append({"del": list(deletes), "put": {k: bytes(v) for k, v in puts.items()}})

    def get(self, key: str) -> bytes | None:
        return self._kv.get(key)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._kv.items() if k.startswith(prefix))

    # -- vectors -------------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self._append({"up": [_record_json(r) for r in records]})

    def remove(self, ids: Iterable[int]) -> int:
        ids = sorted({int(i) for i in ids})
        live = sum(i in self._vectors for i in ids)
        self._append({"rm": ids})
        return live

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        return [self._vectors[i] for i in sorted({int(i) for i in ids}) if i in self._vectors]

    def count(self) -> int:
        return len(self._vectors)

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        check_where(where)   # a malformed filter is refused on an empty store too
        recs = sorted(self._vectors.values(), key=lambda r: r.id)
        if not recs:
            return []
        matrix = np.array([r.vector for r in recs], dtype=np.float64)
        return exact_search([r.id for r in recs], matrix, [r.metadata for r in recs], vector, k,
                            "l2", where)

    # -- compaction ----------------------------------------------------------------------------

    def compact(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)
        segments = self._segments()
        total = sum(self._size(n) for n in segments)
        if total < COMPACT_AT:
            return
        kv, vectors = (self._from_files(segments) if self._defect == "compaction-drops"
                       else (self._kv, self._vectors))
        snapshot = _frame({"reset": True, "put": dict(kv),
                           "up": [_record_json(r) for r in vectors.values()]})
        name = self._name(int(segments[-1][4:-4]) + 1)
        tmp = os.path.join(self.path, ".tmp-" + name)
        f = self._fs.open(tmp, "w")
        f.write(0, snapshot)
        f.sync()
        f.close()
        self._fs.rename(tmp, os.path.join(self.path, name))
        self._fs.sync_dir(self.path)
        self._file.close()
        for old in segments:
            self._fs.remove(os.path.join(self.path, old))
        self._fs.sync_dir(self.path)
        self._file = self._fs.open(os.path.join(self.path, name), "r+")
        self._end = len(snapshot)

    def _size(self, name: str) -> int:
        f = self._fs.open(os.path.join(self.path, name), "r")
        try:
            return f.size()
        finally:
            f.close()

    def _from_files(self, segments: list[str]
                    ) -> tuple[dict[str, bytes], dict[int, VectorRecord]]:
        """The slip: every put of the log first, then every tombstone."""
        payloads: list[dict[str, Any]] = []
        for name in segments:
            f = self._fs.open(os.path.join(self.path, name), "r")
            try:
                payloads += [p for _, p in self._records(f) if p is not None]
            finally:
                f.close()
        kv: dict[str, bytes] = {}
        vectors: dict[int, VectorRecord] = {}
        for p in payloads:
            if p.get("reset"):
                kv, vectors = {}, {}
            self._apply_puts(p, kv, vectors)
        for p in payloads:
            for k in p.get("del", []):
                kv.pop(k, None)
            for i in p.get("rm", []):
                vectors.pop(int(i), None)
        return kv, vectors

    @staticmethod
    def _apply_puts(p: Mapping[str, Any], kv: dict[str, bytes],
                    vectors: dict[int, VectorRecord]) -> None:
        kv.update(p.get("put", {}))
        for r in p.get("up", []):
            vectors[int(r["id"])] = VectorRecord.of(r["id"], r["vector"], r["metadata"])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()


def open_segment_log(path: str, env: Env, **options: str) -> SegmentLog:
    """The correct store."""
    return SegmentLog(path, env)


def open_session_order(path: str, env: Env, **options: str) -> SegmentLog:
    """Replays its segments in lexicographic order: wrong from the tenth segment on. Does not
    declare compaction."""
    return SegmentLog(path, env, "session-order", compactable=False)


def open_compaction_drops(path: str, env: Env, **options: str) -> SegmentLog:
    """Compaction applies tombstones after all puts: re-inserted records are dropped."""
    return SegmentLog(path, env, "compaction-drops")


def open_window_reader(path: str, env: Env, **options: str) -> SegmentLog:
    """Reads a record with one 1 MiB window at open: a longer record cuts the log there."""
    return SegmentLog(path, env, "window-reader")
