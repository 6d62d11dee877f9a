"""Encode the segments the real ``@ruvector/rvf`` runtime writes (FORMAT-ruvector.md), plus the
META segment in which crashgate's reference store keeps metadata.

Every function returns bytes to append; none does I/O. Headers come from ``layout.Header`` (the
one header codec), hashes from ``layout.content_hash``; payloads are the inverses of
``payloads.parse_vec`` / ``parse_journal`` / ``parse_witness`` and
``manifest.parse_manifest``, and ``parse_meta`` reads the META payload back.

META (type 0x07, a type the runtime defines and never reads; crashgate's payload)::

    u32 count, then per record: u64 id, u32 length, that many bytes of UTF-8 JSON (an object)

A META segment follows the VEC segment of the same commit and is named in the manifest's
directory like it; it holds the metadata of the records that VEC segment wrote with non-empty
metadata (FORMAT-ruvector.md, "Metadata").
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.reference.rvf_real.layout import (
    FIDI_MARKER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Header,
    content_hash,
)
from crashgate.reference.rvf_real.manifest import DirEntry, FileIdentity

__all__ = ["META", "encode_journal", "encode_manifest", "encode_meta", "encode_segment",
           "encode_vec", "encode_witness", "parse_meta"]

META = 0x07
"""The segment type of crashgate's metadata segment (``META`` in rvf-types segment_type.rs)."""
U16_MAX = 0xFFFF


def encode_segment(seg_type: int, seg_id: int, payload: bytes,
                   version: int = VERSION) -> bytes:
    """A 64-byte header as the runtime writes it (flags, timestamp, algorithm and reserved fields
    zero; the content hash of ``payload``; ``version`` in the version byte, 1 as the runtime
    writes, another for a writer at another version, versions.py), then ``payload``, no
    padding."""
    header = Header(MAGIC, version, seg_type, 0, seg_id, len(payload), 0, 0, 0, 0, 0,
                    content_hash(payload), 0, 0)
    raw = header.encode()
    assert len(raw) == HEADER_SIZE
    return raw + payload


def encode_vec(dimension: int, ids: Sequence[int], vectors: np.ndarray) -> bytes:
    """VEC: u16 dimension, u32 count, then per vector u64 id and ``dimension`` f32.
    ``vectors`` is (len(ids), dimension), any float dtype (stored as float32)."""
    if not 1 <= dimension <= U16_MAX:
        raise ValueError(f"dimension {dimension}: the VEC payload stores it as a u16 (1-65535)")
    rows = np.ascontiguousarray(np.asarray(vectors, dtype="<f4").reshape(len(ids), dimension))
    out = [struct.pack("<HI", dimension, len(ids))]
    for vid, row in zip(ids, rows, strict=True):
        out.append(struct.pack("<Q", vid))
        out.append(row.tobytes())
    return b"".join(out)


def encode_journal(epoch: int, ids: Sequence[int]) -> bytes:
    """JOURNAL: u32 entry count, u32 epoch, u64 previous journal id (0, as the runtime writes),
    then per id: u8 1 (DELETE_VECTOR), u8 0, u16 8, u64 id."""
    head = struct.pack("<IIQ", len(ids), epoch, 0)
    return head + b"".join(struct.pack("<BBHQ", 1, 0, 8, vid) for vid in ids)


def encode_witness(witness_type: int, timestamp_ns: int, action: str, prev_hash: bytes) -> bytes:
    """WITNESS: u8 type, u64 timestamp ns, u32 action length, the action, 32-byte previous hash
    (``layout.witness_hash`` of the previous witness payload, zeros for a session's first)."""
    text = action.encode()
    if len(prev_hash) != 32:
        raise ValueError(f"prev_hash is {len(prev_hash)} bytes; it must be 32")
    return struct.pack("<BQI", witness_type, timestamp_ns, len(text)) + text + prev_hash


def encode_manifest(*, epoch: int, dimension: int, total_vectors: int,
                    directory: Iterable[DirEntry], deleted: Iterable[int],
                    identity: FileIdentity, profile_id: int = 0) -> bytes:
    """MANIFEST: u32 epoch, u16 dimension, u64 total_vectors, u32 directory count, u8 profile,
    3 zero bytes, 25-byte directory entries, u32 deleted count and the sorted deleted u64 ids,
    then the ``FIDI`` lineage trailer (file id, parent id, parent hash, u32 depth)."""
    entries = list(directory)
    dead = sorted(deleted)
    out = [struct.pack("<IHQIB3x", epoch, dimension, total_vectors, len(entries), profile_id)]
    out.extend(struct.pack("<QQQB", e.seg_id, e.offset, e.payload_length, e.seg_type)
               for e in entries)
    out.append(struct.pack("<I", len(dead)))
    out.extend(struct.pack("<Q", vid) for vid in dead)
    out.append(struct.pack("<I", FIDI_MARKER) + identity.file_id + identity.parent_id
               + identity.parent_hash + struct.pack("<I", identity.lineage_depth))
    return b"".join(out)


def encode_meta(records: Mapping[int, Mapping[str, Any]]) -> bytes:
    """META: the metadata of ``records`` (id -> JSON object), ids ascending."""
    out = [struct.pack("<I", len(records))]
    for vid in sorted(records):
        text = json.dumps(dict(records[vid]), sort_keys=True, separators=(",", ":")).encode()
        out.append(struct.pack("<QI", vid, len(text)) + text)
    return b"".join(out)


def parse_meta(payload: bytes) -> dict[int, dict[str, Any]] | None:
    """id -> metadata of a META payload; None when it does not parse (lengths that do not add
    up, JSON that is not an object)."""
    if len(payload) < 4:
        return None
    (count,), pos, out = struct.unpack_from("<I", payload), 4, {}
    try:
        for _ in range(count):
            vid, length = struct.unpack_from("<QI", payload, pos)
            pos += 12
            value = json.loads(payload[pos:pos + length].decode())
            if pos + length > len(payload) or not isinstance(value, dict):
                return None
            out[vid] = value
            pos += length
    except (struct.error, UnicodeDecodeError, ValueError):
        return None
    return out if pos == len(payload) else None
