"""RVF segments: the 64-byte header, segment types, flags and the hashes.

A file is a run of segments, each a 64-byte little-endian header, the payload, and zero padding
up to the next multiple of 64 bytes (so every header sits at a 64-byte aligned offset)::

    0x00 u32 magic 0x52564653 ("SFVR" on disk)   0x18 u64 timestamp, ns
    0x04 u8  version (the wire version)           0x20 u8  checksum algorithm (1 XXH3-128, 2 SHAKE)
    0x05 u8  segment type                         0x21 u8  compression (0 = none)
    0x06 u16 flags                                0x22 u16 reserved, zero
    0x08 u64 segment id (monotonic)               0x24 u32 header check (see below)
    0x10 u64 payload length                       0x28 16B content hash of the payload
                                                  0x38 u32 uncompressed length
                                                  0x3C u32 alignment padding after the payload

The specification leaves 0x24 reserved; this reference stores there a *header check*: the first
four bytes (little-endian u32) of SHAKE-256 over the 64 header bytes with 0x24..0x28 zeroed. It
is what makes a torn or flipped header detectable before its version byte or its length is
trusted, and it is computed the same way for every wire version (see FORMAT.md).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass

import xxhash

__all__ = [
    "ALIGN",
    "CHECKSUM_SHAKE256",
    "CHECKSUM_XXH3",
    "VERIFIABLE",
    "HEADER_SIZE",
    "MAGIC",
    "MAGIC_BYTES",
    "Flag",
    "HeaderError",
    "SegType",
    "SegmentHeader",
    "SegmentInfo",
    "content_hash",
    "encode_segment",
    "hash256",
    "padding_for",
    "type_name",
]

MAGIC = 0x52564653
MAGIC_BYTES = struct.pack("<I", MAGIC)  # b"SFVR"
HEADER_SIZE = 64
ALIGN = 64
CHECKSUM_XXH3 = 1
"""XXH3-128 (``xxhash``), the 128-bit value little-endian: what the published runtime writes by
default, and what this writer writes (~40x faster than SHAKE-256 here)."""
CHECKSUM_SHAKE256 = 2
"""SHAKE-256 truncated to 128 bits: read and verified (files written before XXH3 was the
default hold it)."""
VERIFIABLE = frozenset({CHECKSUM_XXH3, CHECKSUM_SHAKE256})
"""Checksum algorithm 2: SHAKE-256 truncated to 128 bits (algorithm 1, XXH3-128, is not used)."""

_HEADER = struct.Struct("<IBBHQQQBBHI16sII")
_CHECK_AT = 0x24
assert _HEADER.size == HEADER_SIZE


class SegType(enum.IntEnum):
    VEC = 0x01
    INDEX = 0x02
    OVERLAY = 0x03
    JOURNAL = 0x04
    MANIFEST = 0x05
    QUANT = 0x06
    META = 0x07
    HOT = 0x08
    SKETCH = 0x09
    WITNESS = 0x0A
    PROFILE = 0x0B
    CRYPTO = 0x0C
    METAIDX = 0x0D
    COW_MAP = 0x20
    REFCOUNT = 0x21
    MEMBERSHIP = 0x22
    DELTA = 0x23


class Flag(enum.IntFlag):
    COMPRESSED = 0x1
    SIGNED = 0x4
    SEALED = 0x8
    PARTIAL = 0x10
    TOMBSTONE = 0x20
    SNAPSHOT = 0x100
    CHECKPOINT = 0x200
    HAS_LINEAGE = 0x800
    SAME_SYNC = 0x1000
    """This reference, on a MANIFEST only: its commit's data was written in the same fsync as
    the manifest (``sync=one``), so a crash can leave it whole over torn data; see FORMAT.md."""


def type_name(seg_type: int) -> str:
    """``VEC``, ``MANIFEST`` ... or ``UNKNOWN(0x40)`` for a type this reader does not know."""
    try:
        return SegType(seg_type).name
    except ValueError:
        return f"UNKNOWN(0x{seg_type:02X})"


def content_hash(payload: bytes | memoryview, algo: int = CHECKSUM_XXH3) -> bytes:
    """The 16-byte content hash of a payload with checksum algorithm ``algo`` (1 or 2)."""
    if algo == CHECKSUM_XXH3:
        return xxhash.xxh3_128_intdigest(payload).to_bytes(16, "little")
    if algo == CHECKSUM_SHAKE256:
        return hashlib.shake_256(payload).digest(16)
    raise ValueError(f"checksum algorithm {algo} is not one this reader computes "
                     f"({sorted(VERIFIABLE)})")


def hash256(data: bytes | memoryview) -> bytes:
    """SHAKE-256 with a 256-bit output: witness entries, action hashes, parent hashes."""
    return hashlib.shake_256(data).digest(32)


def padding_for(payload_length: int) -> int:
    return -payload_length % ALIGN


def _check(raw: bytes | bytearray | memoryview) -> int:
    buf = bytearray(raw)
    buf[_CHECK_AT:_CHECK_AT + 4] = b"\0\0\0\0"
    return int.from_bytes(hashlib.shake_256(buf).digest(4), "little")


class HeaderError(ValueError):
    """64 bytes that are not an intact segment header (the reason says why)."""


@dataclass(frozen=True)
class SegmentHeader:
    version: int
    seg_type: int
    flags: int
    seg_id: int
    payload_length: int
    timestamp_ns: int
    content_hash: bytes
    checksum_algo: int = CHECKSUM_XXH3
    compression: int = 0
    uncompressed_length: int = 0
    padding: int = 0

    @property
    def total_length(self) -> int:
        """Header, payload and padding: the distance to the next header."""
        return HEADER_SIZE + self.payload_length + self.padding

    def encode(self) -> bytes:
        fields = (MAGIC, self.version, self.seg_type, self.flags, self.seg_id,
                  self.payload_length, self.timestamp_ns, self.checksum_algo, self.compression,
                  0, 0, self.content_hash, self.uncompressed_length, self.padding)
        raw = bytearray(_HEADER.pack(*fields))
        raw[_CHECK_AT:_CHECK_AT + 4] = _check(raw).to_bytes(4, "little")
        return bytes(raw)

    @staticmethod
    def decode(raw: bytes | memoryview) -> SegmentHeader:
        """Parse 64 bytes; ``HeaderError`` when the magic or the header check does not hold."""
        if len(raw) < HEADER_SIZE:
            raise HeaderError(f"only {len(raw)} of {HEADER_SIZE} header bytes")
        (magic, version, seg_type, flags, seg_id, length, ts, algo, compression, _reserved,
         check, chash, ulen, pad) = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise HeaderError(f"magic is 0x{magic:08X}, not 0x{MAGIC:08X}")
        if check != _check(raw[:HEADER_SIZE]):
            raise HeaderError("header check does not match (torn or damaged header)")
        return SegmentHeader(version, seg_type, flags, seg_id, length, ts, chash, algo,
                             compression, ulen, pad)


def encode_segment(*, version: int, seg_type: int, seg_id: int, payload: bytes,
                   timestamp_ns: int, flags: int = 0, checksum_algo: int = CHECKSUM_XXH3
                   ) -> bytes:
    """Header + payload + zero padding, ready to append at a 64-byte aligned offset."""
    pad = padding_for(len(payload))
    header = SegmentHeader(
        version=version, seg_type=seg_type, flags=flags, seg_id=seg_id,
        payload_length=len(payload), timestamp_ns=timestamp_ns,
        content_hash=content_hash(payload, checksum_algo), checksum_algo=checksum_algo,
        uncompressed_length=min(len(payload), 0xFFFFFFFF), padding=pad,
    )
    return header.encode() + payload + b"\0" * pad


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as ``RvfStore.segments()`` lists it. ``length`` is the payload length;
    ``valid`` is true when the header and the content hash verify and the segment lies in the
    committed region (a torn or uncommitted tail is listed with ``valid=False``)."""

    offset: int
    type_name: str
    seg_id: int
    length: int
    version: int
    flags: int
    valid: bool
