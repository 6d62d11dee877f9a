"""Checkpoints: a snapshot of the live state appended to the file now and then, so that opening
reads the newest snapshot and what follows it instead of every commit since the file was made.

A checkpoint is written after a commit is durable, under the same commit protocol and with the
same failpoints (``sync=two``: snapshot, fsync, manifest, fsync; ``sync=one``: one write, one
fsync)::

    META...   live key-value records, sorted by key, ~4 MiB per segment (as compaction writes them)
    VEC...    live vectors, sorted by id, 4096 per segment
    WITNESS   empty: a checkpoint changes no data, so it adds no witness entry
    MANIFEST  flags CHECKPOINT | HAS_LINEAGE, the epoch, counts, ``dead`` and witness head of the
              commit before it, ``segments`` empty, ``snapshot`` naming the META/VEC segments,
              ``checkpoint`` the offset of the previous checkpoint manifest

Every manifest a writer appends records ``checkpoint``: the offset of the newest checkpoint
manifest (a fresh file's first manifest is one). A reader that knows no checkpoints replays every
manifest from offset 0 as before; to it a checkpoint is a commit that names no data.

When: each commit adds its segments and bytes to the replay cost since the newest checkpoint
(``Cost``: one per segment, one per 64 KiB). A checkpoint is written once that cost reaches the
cost of the newest snapshot and at least ``MIN_COST`` segments were appended since it. So an
open reads at most about twice the live data plus ``MIN_COST`` segments, and a checkpoint writes
at most what was appended since the previous one plus the growth of the live data: the write
amplification is amortised O(1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crashgate.reference.rvf.payloads import encode_meta, encode_vec
from crashgate.reference.rvf.rewrite import VEC_PER_SEGMENT, meta_chunks
from crashgate.reference.rvf.segments import (
    ALIGN,
    HEADER_SIZE,
    MAGIC_BYTES,
    HeaderError,
    SegmentHeader,
    SegType,
)
from crashgate.reference.rvf.table import VectorTable

__all__ = ["BYTES_PER_COST", "MIN_COST", "Cost", "nested_headers", "snapshot_payloads"]

MIN_COST = 32
"""Segments appended since the newest checkpoint below which no checkpoint is written: about ten
small commits. It bounds how often a small store checkpoints, and is the constant in the open
bound (twice the live data plus this)."""
BYTES_PER_COST = 64 << 10


@dataclass(frozen=True)
class Cost:
    """Replay cost of a run of segments: how many, and how many bytes (headers and padding)."""

    segments: int = 0
    nbytes: int = 0

    @property
    def units(self) -> int:
        return self.segments + self.nbytes // BYTES_PER_COST

    def plus(self, segments: int, nbytes: int) -> Cost:
        return Cost(self.segments + segments, self.nbytes + nbytes)

    def due(self, snapshot: Cost) -> bool:
        """Whether replaying this since the newest checkpoint costs as much as a new one, and
        is at least ``MIN_COST`` segments: a few large commits cost what their snapshot
        would, so only many segments make a checkpoint pay."""
        return self.segments >= MIN_COST and self.units >= snapshot.units


def snapshot_payloads(kv: dict[str, bytes], table: VectorTable
                      ) -> Iterable[tuple[SegType, bytes]]:
    """The live state as ``(type, payload)`` of META then VEC segments, in the order and sizes
    a compaction writes them."""
    for chunk in meta_chunks(kv):
        yield SegType.META, encode_meta(chunk)
    for ids, vectors, metadata in table.chunks(VEC_PER_SEGMENT):
        yield SegType.VEC, encode_vec(ids, vectors, metadata)


def nested_headers(blob: bytes, at: int, own: Iterable[int]) -> list[int]:
    """File offsets, inside ``blob`` (to be written at the aligned offset ``at``), of intact
    segment headers at aligned offsets other than ``own`` (the blob's own segments). Empty for
    anything but crafted bytes (a magic and a 32-bit header check by chance: 2**-64 per offset).

    Why it matters: open trusts the newest intact manifest it finds searching backward from the
    end of the file (scan.last_manifest). A value holding a whole, verifying manifest at an
    aligned offset, in a commit cut by a crash before its own manifest, would be found first.
    So the writer never appends such bytes (store.py refuses the commit, a checkpoint is
    skipped), and every intact aligned header of a file it appended to is a real segment."""
    mine = set(own)
    found: list[int] = []
    i = blob.find(MAGIC_BYTES)
    while i >= 0:
        pos = at + i
        if pos % ALIGN == 0 and pos not in mine and i + HEADER_SIZE <= len(blob):
            try:
                SegmentHeader.decode(blob[i:i + HEADER_SIZE])
                found.append(pos)
            except HeaderError:
                pass
        i = blob.find(MAGIC_BYTES, i + 1)
    return found
