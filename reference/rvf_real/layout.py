"""The layout the real ``@ruvector/rvf`` runtime writes: constants, the 64-byte segment header,
the content hash and the witness-chain hash (facts and source paths in FORMAT-ruvector.md).

A file is a run of segments with no file header and **no padding**: each segment is a 64-byte
little-endian header directly followed by its payload, the next header right after it::

    0x00 u32 magic 0x52564653 ("SFVR" on disk)   0x18 u64 timestamp_ns   (runtime writes 0)
    0x04 u8  version (1; versions.py)             0x20 u8  checksum_algo  (runtime writes 0)
    0x05 u8  segment type                         0x21 u8  compression    (0)
    0x06 u16 flags (runtime writes 0)             0x22 u16 reserved_0     (0)
    0x08 u64 segment id (1, 2, ... per file)      0x24 u32 reserved_1     (0)
    0x10 u64 payload length                       0x28 16B content hash of the payload
                                                  0x38 u32 uncompressed_len (0)
                                                  0x3C u32 alignment_pad    (0)

The segment magic is the same as crashgate's reference layout (reference/rvf/FORMAT.md); what
tells the two apart is the header: the reference writes checksum algorithm 1 or 2 and a
non-zero header check at 0x24, the runtime writes algorithm 0, zero at 0x24 and a content hash
made of four byte-rotations of one CRC-32 (``looks_real``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, fields

__all__ = [
    "FIDI_MARKER",
    "FILE_FORMAT",
    "HEADER_SIZE",
    "MAGIC",
    "MAGIC_BYTES",
    "MAX_READ_PAYLOAD",
    "SEG_TYPES",
    "TAIL_SCAN",
    "VERSION",
    "Header",
    "content_hash",
    "is_real_file",
    "looks_real",
    "type_name",
    "witness_hash",
]

FILE_FORMAT = "rvf-ruvector/1"
"""The name crashgate gives this layout (``Declaration.file_format`` of rvf-node / rvf-sdk and of
the reference store writing it). The source names no format string; 1 is its segment version."""

MAGIC = 0x52564653
MAGIC_BYTES = struct.pack("<I", MAGIC)  # b"SFVR"
HEADER_SIZE = 64
VERSION = 1
FIDI_MARKER = 0x46494449  # "FIDI" as a LE u32 ("IDIF" on disk): the manifest's lineage trailer
TAIL_SCAN = 65536  # the runtime looks for the latest manifest in the last 64 KiB only
MAX_READ_PAYLOAD = 256 * 1024 * 1024  # the runtime refuses to read a larger payload

VEC, JOURNAL, MANIFEST, WITNESS = 0x01, 0x04, 0x05, 0x0A
SEG_TYPES: dict[int, str] = {
    0x00: "invalid", 0x01: "vec", 0x02: "index", 0x03: "overlay", 0x04: "journal",
    0x05: "manifest", 0x06: "quant", 0x07: "meta", 0x08: "hot", 0x09: "sketch",
    0x0A: "witness", 0x0B: "profile", 0x0C: "crypto", 0x0D: "meta_idx", 0x0E: "kernel",
    0x0F: "ebpf", 0x10: "wasm", 0x11: "dashboard", 0x20: "cow_map", 0x21: "refcount",
    0x22: "membership", 0x23: "delta", 0x30: "transfer_prior", 0x31: "policy_kernel",
    0x32: "cost_curve", 0x33: "federated_manifest", 0x34: "diff_privacy_proof",
    0x35: "redaction_log", 0x36: "aggregate_weights",
}

_HEADER = struct.Struct("<IBBHQQQBBHI16sII")
assert _HEADER.size == HEADER_SIZE


def type_name(seg_type: int) -> str:
    """``"vec"``, ``"manifest"``, ... or ``"0x7f"`` for a value the runtime does not define."""
    return SEG_TYPES.get(seg_type, f"0x{seg_type:02x}")


@dataclass(frozen=True)
class Header:
    """One 64-byte segment header, every field as stored (no field is checked here)."""

    magic: int
    version: int
    seg_type: int
    flags: int
    seg_id: int
    payload_length: int
    timestamp_ns: int
    checksum_algo: int
    compression: int
    reserved_0: int
    reserved_1: int
    content_hash: bytes
    uncompressed_len: int
    alignment_pad: int

    @classmethod
    def parse(cls, raw: bytes) -> Header:
        """The header in ``raw`` (exactly 64 bytes)."""
        if len(raw) != HEADER_SIZE:
            raise ValueError(f"raw: a segment header is {HEADER_SIZE} bytes, got {len(raw)}")
        return cls(*_HEADER.unpack(raw))

    @property
    def type_name(self) -> str:
        return type_name(self.seg_type)

    def encode(self) -> bytes:
        """The 64 bytes of this header (the inverse of ``parse``; writer.py writes with it)."""
        return _HEADER.pack(*(getattr(self, f.name) for f in fields(self)))


def _rotl32(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF if n else x


def content_hash(payload: bytes) -> bytes:
    """The runtime's 16-byte content hash: CRC-32 (IEEE, reflected polynomial 0xEDB88320, which is
    ``zlib.crc32``) as four little-endian u32 words, word i rotated left by 8*i bits."""
    crc = zlib.crc32(payload)
    return b"".join(struct.pack("<I", _rotl32(crc, 8 * i)) for i in range(4))


def _rotation_shaped(digest: bytes) -> bool:
    """Whether a 16-byte hash has the shape ``content_hash`` gives (or is all zero, "not set")."""
    first = struct.unpack_from("<I", digest)[0]
    return digest == b"\0" * 16 or digest == b"".join(
        struct.pack("<I", _rotl32(first, 8 * i)) for i in range(4))


def looks_real(first: bytes) -> bool:
    """Whether the first 64 bytes of a file are a header the runtime writes: the segment magic,
    checksum algorithm 0, zero at 0x24 (where the reference keeps its header check) and a
    rotation-shaped content hash. Any version byte: a file of another segment version is still
    this layout (its reader then says which version, ``versions.py``), not the reference's. A
    file that does not start with such a header is left to the reference reader."""
    if len(first) < HEADER_SIZE or first[:4] != MAGIC_BYTES:
        return False
    h = Header.parse(first[:HEADER_SIZE])
    return h.checksum_algo == 0 and h.reserved_1 == 0 and _rotation_shaped(h.content_hash)


def is_real_file(path: str) -> bool:
    """``looks_real`` of the file's first 64 bytes (False for a missing or short file)."""
    try:
        with open(path, "rb") as fh:
            return looks_real(fh.read(HEADER_SIZE))
    except OSError:
        return False


def witness_hash(data: bytes) -> bytes:
    """The runtime's chain hash of one witness entry (``simple_shake256_256`` in store.rs: a
    32-byte additive fold, *not* SHAKE-256 despite its name): for byte i,
    ``out[i%32] += b`` then ``out[(i+13)%32] += rotl8(out[i%32], 3)``, all mod 256."""
    out = [0] * 32
    for i, b in enumerate(data):
        k = i % 32
        out[k] = (out[k] + b) & 0xFF
        v = out[k]
        j = (i + 13) % 32
        out[j] = (out[j] + (((v << 3) | (v >> 5)) & 0xFF)) & 0xFF
    return bytes(out)
