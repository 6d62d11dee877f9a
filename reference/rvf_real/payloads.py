"""The data payloads of a file the real ``@ruvector/rvf`` runtime wrote, parsed: VEC (the
vectors), JOURNAL (deleted ids) and WITNESS (the audit chain). Each parser returns None for a
payload whose lengths do not add up; ``writer.py`` holds the inverse encoders.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["WitnessEntry", "parse_journal", "parse_vec", "parse_witness"]


@dataclass(frozen=True)
class WitnessEntry:
    """One WITNESS segment's payload: type, ns timestamp, action text, the previous entry's hash."""

    witness_type: int
    timestamp_ns: int
    action: str
    prev_hash: bytes



def parse_vec(payload: bytes) -> tuple[int, list[tuple[int, tuple[float, ...]]]] | None:
    """(dimension, [(id, vector)]) of a VEC payload: u16 dimension, u32 count, then per vector a
    u64 id and ``dimension`` f32; None when the payload is shorter than that (the runtime then
    skips the segment silently)."""
    if len(payload) < 6:
        return None
    dim, count = struct.unpack_from("<HI", payload)
    if len(payload) < 6 + count * (8 + 4 * dim):
        return None
    vec = struct.Struct(f"<Q{dim}f")
    out = []
    for k in range(count):
        vid, *values = vec.unpack_from(payload, 6 + k * vec.size)
        out.append((vid, tuple(values)))
    return dim, out


def parse_journal(payload: bytes) -> tuple[int, list[int]] | None:
    """(epoch, deleted ids) of a JOURNAL payload: u32 entry count, u32 epoch, u64 previous journal
    segment id (0), then per entry u8 type (1 = delete), u8 0, u16 length 8, u64 id."""
    if len(payload) < 16:
        return None
    count, epoch = struct.unpack_from("<II", payload)
    if len(payload) != 16 + 12 * count:
        return None
    ids = []
    for k in range(count):
        etype, _pad, elen, vid = struct.unpack_from("<BBHQ", payload, 16 + 12 * k)
        if etype != 1 or elen != 8:
            return None
        ids.append(vid)
    return epoch, ids


def parse_witness(payload: bytes) -> WitnessEntry | None:
    """A WITNESS payload: u8 type, u64 timestamp_ns, u32 action length, the action, 32-byte
    previous hash; None when the lengths do not add up."""
    if len(payload) < 13 + 32:
        return None
    wtype, ts, alen = struct.unpack_from("<BQI", payload)
    if len(payload) != 13 + alen + 32:
        return None
    return WitnessEntry(wtype, ts, payload[13:13 + alen].decode("utf-8", "replace"),
                        payload[13 + alen:])

