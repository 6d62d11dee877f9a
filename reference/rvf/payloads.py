"""Payload encodings of the data segments this reference writes (all little-endian).

- VEC (0x01): ``u32 count, u32 dim, u8 dtype, 7 zero bytes``, then ``count`` u64 ids, then
  ``count * dim`` values (dtype 2 = float64, the only one written; 1 = float32 is reserved), then
  the metadata: a UTF-8 JSON array of ``count`` objects.
- META (0x07): ``u32 count``, then per record ``u32 key length, key (UTF-8), u32 value length,
  value bytes``.
- JOURNAL (0x04, flag TOMBSTONE): ``u32 key count``, the keys as in META (without values),
  ``u32 id count``, the removed u64 ids.

A payload that does not parse raises ``ValueError``; the store turns it into ``CorruptStore``
(it only parses payloads whose content hash verified, so this means a writer bug or a foreign
writer, not a torn write).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DTYPE_F64",
    "Journal",
    "VecBlock",
    "decode_journal",
    "decode_meta",
    "decode_vec",
    "encode_journal",
    "encode_meta",
    "encode_vec",
]

DTYPE_F32, DTYPE_F64 = 1, 2
_VEC_HEAD = struct.Struct("<IIB7x")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class VecBlock:
    """Decoded VEC payload: ``ids`` (n,) uint64, ``vectors`` (n, dim) in the file's dtype
    (float32 or float64, a read-only view of the payload: whoever keeps them widens them as it
    copies, one pass instead of two), ``metadata``."""

    ids: np.ndarray
    vectors: np.ndarray
    metadata: list[dict[str, Any]]


@dataclass(frozen=True)
class Journal:
    keys: list[str]
    ids: list[int]


def encode_vec(ids: Sequence[int] | np.ndarray, vectors: np.ndarray,
               metadata: Sequence[Mapping[str, Any]]) -> bytes:
    n, dim = vectors.shape
    meta = json.dumps([dict(m) for m in metadata], separators=(",", ":")).encode()
    return (_VEC_HEAD.pack(n, dim, DTYPE_F64)
            + np.asarray(ids, dtype="<u8").tobytes()
            + np.ascontiguousarray(vectors, dtype="<f8").tobytes()
            + meta)


def decode_vec(payload: bytes) -> VecBlock:
    if len(payload) < _VEC_HEAD.size:
        raise ValueError(f"VEC payload of {len(payload)} bytes is shorter than its header")
    n, dim, dtype = _VEC_HEAD.unpack_from(payload)
    width = {DTYPE_F64: 8, DTYPE_F32: 4}.get(dtype)
    if width is None:
        raise ValueError(f"VEC dtype {dtype} is not 1 (float32) or 2 (float64)")
    at = _VEC_HEAD.size
    end_ids = at + 8 * n
    end_vec = end_ids + width * n * dim
    if len(payload) < end_vec:
        raise ValueError(f"VEC payload holds {len(payload)} bytes, {n}x{dim} needs {end_vec}")
    ids = np.frombuffer(payload, dtype="<u8", count=n, offset=at)
    vectors = np.frombuffer(payload, dtype="<f8" if dtype == DTYPE_F64 else "<f4",
                            count=n * dim, offset=end_ids).reshape(n, dim)
    try:
        metadata = json.loads(payload[end_vec:].decode())
    except RecursionError:
        raise ValueError("VEC metadata is nested too deeply to parse") from None
    if not isinstance(metadata, list) or len(metadata) != n \
            or not all(isinstance(m, dict) for m in metadata):
        raise ValueError(f"VEC metadata is not a list of {n} objects")
    return VecBlock(ids, vectors, metadata)


def _put_bytes(out: list[bytes], data: bytes) -> None:
    out.append(_U32.pack(len(data)))
    out.append(data)


class _Cursor:
    __slots__ = ("at", "buf")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.at = 0

    def u32(self) -> int:
        if self.at + 4 > len(self.buf):
            raise ValueError(f"payload ends at {len(self.buf)} inside a length at {self.at}")
        (value,) = _U32.unpack_from(self.buf, self.at)
        self.at += 4
        return int(value)

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.buf):
            raise ValueError(f"payload ends at {len(self.buf)}, a field needs {self.at + n}")
        data = self.buf[self.at:self.at + n]
        self.at += n
        return data

    def done(self) -> None:
        if self.at != len(self.buf):
            raise ValueError(f"{len(self.buf) - self.at} unexpected bytes after the last field")


def encode_meta(puts: Mapping[str, bytes]) -> bytes:
    out = [_U32.pack(len(puts))]
    for key, value in puts.items():
        _put_bytes(out, key.encode())
        _put_bytes(out, bytes(value))
    return b"".join(out)


def decode_meta(payload: bytes) -> list[tuple[str, bytes]]:
    cur = _Cursor(payload)
    items = []
    for _ in range(cur.u32()):
        key = cur.take(cur.u32()).decode()
        items.append((key, cur.take(cur.u32())))
    cur.done()
    return items


def encode_journal(keys: Sequence[str], ids: Sequence[int]) -> bytes:
    out = [_U32.pack(len(keys))]
    for key in keys:
        _put_bytes(out, key.encode())
    out.append(_U32.pack(len(ids)))
    out.append(np.asarray(list(ids), dtype="<u8").tobytes())
    return b"".join(out)


def decode_journal(payload: bytes) -> Journal:
    cur = _Cursor(payload)
    keys = [cur.take(cur.u32()).decode() for _ in range(cur.u32())]
    n = cur.u32()
    ids = [int(i) for i in np.frombuffer(cur.take(8 * n), dtype="<u8")]
    cur.done()
    return Journal(keys, ids)
