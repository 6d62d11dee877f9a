"""Auditing a file: recompute the witness chain and every content hash, and list segments.

Unlike opening, which verifies only what the live state is rebuilt from, ``verify`` reads every
segment of the committed region: manifests, data, witness and carried segments.
"""

from __future__ import annotations

import hashlib

from crashgate.backends import File
from crashgate.reference.rvf.manifest import Manifest
from crashgate.reference.rvf.scan import ChunkReader, Seg, payload_verifies, read_payload, walk
from crashgate.reference.rvf.segments import CHECKSUM_SHAKE256, SegmentInfo, SegType, type_name
from crashgate.reference.rvf.witness import Anchor, WitnessEntry, decode_entries, verify_chain

__all__ = ["list_segments", "verify_file", "witness_history"]


def _action_hash(reader: ChunkReader, segs: list[Seg]) -> bytes:
    h = hashlib.shake_256()
    for s in segs:
        h.update(reader.read(s.offset, s.header.total_length))
    return h.digest(32)


def verify_file(file: File, committed_end: int, supported: int) -> list[str]:
    """Problems found in ``[0, committed_end)``: witness entries first (by index), then
    segments. Empty when everything verifies."""
    reader = ChunkReader(file, min(committed_end, file.size()))
    w = walk(reader, supported)
    other: list[str] = []
    if reader.size < committed_end:
        other.append(f"the file is {reader.size} bytes, its committed region ends at "
                     f"{committed_end}")
    if w.stop < reader.size:
        other.append(f"the segment walk stops inside the committed region: {w.stop_reason}")
    by_offset = {s.offset: s for s in w.segments}
    for s in w.segments:
        known = s.seg_type in set(SegType) and s.seg_type in (
            SegType.VEC, SegType.META, SegType.JOURNAL, SegType.MANIFEST, SegType.WITNESS)
        if not known and s.header.checksum_algo != CHECKSUM_SHAKE256:
            continue  # a carried segment hashed with an algorithm this reader lacks
        if not payload_verifies(s, read_payload(reader, s)):
            other.append(f"{type_name(s.seg_type)} segment id {s.header.seg_id} at offset "
                         f"{s.offset}: content hash does not match its payload")
    entries: list[WitnessEntry] = []
    anchors: dict[int, Anchor] = {}
    for s in w.segments:
        if s.seg_type != SegType.MANIFEST:
            continue
        where = f"manifest at offset {s.offset}"
        try:
            m = Manifest.decode(read_payload(reader, s))
        except ValueError as exc:
            other.append(f"{where} does not parse: {exc}")
            continue
        wseg = by_offset.get(m.witness.offset)
        if wseg is None or wseg.seg_type != SegType.WITNESS:
            other.append(f"{where} names a witness segment at offset {m.witness.offset} that "
                         "is missing")
            continue
        try:
            entries.extend(decode_entries(read_payload(reader, wseg)))
        except ValueError as exc:
            other.append(f"witness segment at offset {wseg.offset}: {exc}")
            continue
        if m.witness_count != len(entries):
            other.append(f"{where} records {m.witness_count} witness entries, the chain up to it "
                         f"holds {len(entries)}")
        data = [by_offset[r.offset] for r in m.segments if r.offset in by_offset]
        action = _action_hash(reader, data) if len(data) == len(m.segments) else None
        anchors[len(entries) - 1] = Anchor(m.witness_head, action,
                                           f"{where} (epoch {m.epoch}, {m.kind})")
    chain = verify_chain(entries, anchors)
    return [msg for _, msg in chain] + other


def witness_history(file: File, witness_segs: list[Seg]) -> list[WitnessEntry]:
    """Every witness entry of the committed region, in chain order."""
    reader = ChunkReader(file, file.size())
    out: list[WitnessEntry] = []
    for s in witness_segs:
        out.extend(decode_entries(read_payload(reader, s)))
    return out


def list_segments(file: File, committed_end: int, supported: int) -> list[SegmentInfo]:
    """Every intact segment of the file, then one ``TORN-TAIL`` row for bytes that do not parse."""
    reader = ChunkReader(file, file.size())
    w = walk(reader, max(supported, 255))
    out = []
    for s in w.segments:
        ok = s.end <= committed_end and payload_verifies(s, read_payload(reader, s))
        h = s.header
        out.append(SegmentInfo(s.offset, type_name(h.seg_type), h.seg_id, h.payload_length,
                               h.version, h.flags, ok))
    if w.stop < reader.size:
        out.append(SegmentInfo(w.stop, "TORN-TAIL", 0, reader.size - w.stop, 0, 0, False))
    return out
