"""The manifest of a file the real ``@ruvector/rvf`` runtime wrote: its payload (epoch,
dimension, the segment directory, the deleted ids, the ``FIDI`` lineage trailer) and which
manifest the runtime boots from.

- ``parse_manifest(payload, offset)``: a payload exactly as ``parse_manifest_payload``
  (rvf-runtime/src/read_path.rs) reads it, or None where that parser gives up.
- ``find_latest_manifest(data, checked)``: the manifest the runtime boots from
  (``find_latest_manifest`` in read_path.rs): scanning the last 64 KiB backwards byte by byte,
  the first magic + type 0x05 whose payload is complete and parses. Its content hash is *not*
  checked by the runtime (``verify`` does check it); ``checked`` is the reference store's
  stricter boot.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from crashgate.reference.rvf_real.layout import (
    FIDI_MARKER,
    HEADER_SIZE,
    MAGIC_BYTES,
    MANIFEST,
    MAX_READ_PAYLOAD,
    TAIL_SCAN,
    content_hash,
)

__all__ = ["DirEntry", "FileIdentity", "Manifest", "find_latest_manifest", "parse_manifest"]


@dataclass(frozen=True)
class DirEntry:
    """One manifest directory entry: (segment id, file offset, payload length, segment type)."""

    seg_id: int
    offset: int
    payload_length: int
    seg_type: int


@dataclass(frozen=True)
class FileIdentity:
    """The manifest's lineage trailer (rvf-types/src/lineage.rs ``FileIdentity``, 68 bytes)."""

    file_id: bytes
    parent_id: bytes
    parent_hash: bytes
    lineage_depth: int


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest payload; ``offset`` is its segment's offset in the file."""

    offset: int
    epoch: int
    dimension: int
    total_vectors: int
    profile_id: int
    directory: tuple[DirEntry, ...]
    deleted_ids: tuple[int, ...]
    identity: FileIdentity | None



def parse_manifest(payload: bytes, offset: int) -> Manifest | None:
    """The manifest in ``payload`` exactly as ``parse_manifest_payload`` (read_path.rs) reads it,
    or None where the runtime's parser gives up (then the runtime looks further back)."""
    if len(payload) < 22:
        return None
    epoch, dimension, total, seg_count, profile = struct.unpack_from("<IHQIB", payload)
    if seg_count > (len(payload) - 22) // 25:
        return None
    pos = 22
    directory = []
    for _ in range(seg_count):
        sid, off, plen, stype = struct.unpack_from("<QQQB", payload, pos)
        directory.append(DirEntry(sid, off, plen, stype))
        pos += 25
    deleted: list[int] = []
    if pos + 4 <= len(payload):
        (count,) = struct.unpack_from("<I", payload, pos)
        pos += 4
        for _ in range(count):
            if pos + 8 > len(payload):
                break  # the runtime keeps the ids that fit
            deleted.append(struct.unpack_from("<Q", payload, pos)[0])
            pos += 8
    identity = None
    if pos + 72 <= len(payload) and struct.unpack_from("<I", payload, pos)[0] == FIDI_MARKER:
        raw = payload[pos + 4:pos + 72]
        identity = FileIdentity(raw[0:16], raw[16:32], raw[32:64],
                                struct.unpack_from("<I", raw, 64)[0])
    return Manifest(offset, epoch, dimension, total, profile, tuple(directory), tuple(deleted),
                    identity)


def find_latest_manifest(data: bytes, checked: bool = False) -> Manifest | None:
    """``checked``: the reference store's boot: pass over a manifest whose content hash fails
    (a torn last commit rolls back instead of booting from garbage), and look back through the
    whole file, not the last 64 KiB only (a torn data segment longer than that hides the last
    good manifest from the runtime: its open fails with ManifestNotFound)."""
    start = 0 if checked else max(0, len(data) - TAIL_SCAN)
    i = len(data) - HEADER_SIZE
    while i >= start:
        i = data.rfind(MAGIC_BYTES, start, i + 4)
        if i < 0:
            return None
        if data[i + 5] == MANIFEST:
            (plen,) = struct.unpack_from("<Q", data, i + 0x10)
            end = i + HEADER_SIZE + plen
            if plen <= MAX_READ_PAYLOAD and end <= len(data) and not (
                    checked and content_hash(data[i + HEADER_SIZE:end])
                    != data[i + 0x28:i + 0x38]):
                found = parse_manifest(data[i + HEADER_SIZE:end], i)
                if found is not None:
                    return found
        i -= 1
    return None

