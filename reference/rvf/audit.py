"""Auditing a file: recompute the witness chain and every content hash, and list segments.

Unlike opening, which verifies only what the live state is rebuilt from, ``verify`` reads every
segment of the committed region: manifests, data, witness and carried segments.

Bytes past the last good commit (``describe_tail``) are never read as data: a crash leaves them
(a torn last commit) and so does damage to the last manifest (one flipped bit rolls back an
fsynced commit), and from the bytes alone the two cannot always be told apart. ``verify`` says
that they are there, where, and what they look like, so a rollback is never reported as ``ok``.
"""

from __future__ import annotations

import hashlib

from crashgate.backends import File
from crashgate.reference.rvf.manifest import Manifest
from crashgate.reference.rvf.replay import snapshot_of
from crashgate.reference.rvf.scan import (
    ChunkReader,
    Seg,
    payload_verifies,
    read_payload,
    walk,
    whole_manifest,
)
from crashgate.reference.rvf.segments import (
    HEADER_SIZE,
    MAGIC_BYTES,
    VERIFIABLE,
    HeaderError,
    SegmentHeader,
    SegmentInfo,
    SegType,
    type_name,
)
from crashgate.reference.rvf.witness import (
    ZERO_HASH,
    Anchor,
    WitnessEntry,
    decode_entries,
    verify_chain,
)

__all__ = ["describe_tail", "list_segments", "verify_file", "witness_history"]

_TAIL_ITEMS = 4   # segments of the tail described one by one; the rest are summed up


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
        if not known and s.header.checksum_algo not in VERIFIABLE:
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
            added = decode_entries(read_payload(reader, wseg))
        except ValueError as exc:
            other.append(f"witness segment at offset {wseg.offset}: {exc}")
            continue
        if snapshot_of(m) is not None:
            # a checkpoint changes no data and adds no entry: it must repeat the chain's head
            head = entries[-1].digest() if entries else ZERO_HASH
            if added or m.witness_count != len(entries) or m.witness_head != head:
                other.append(f"checkpoint {where} records {m.witness_count} witness entries "
                             f"and a head the chain up to it ({len(entries)}) does not have")
            continue
        entries.extend(added)
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


def describe_tail(file: File, committed_end: int, supported: int) -> str | None:
    """What lies in ``[committed_end, size)``, or ``None`` when the file ends at its last good
    commit. Shape: ``"N bytes past the last good commit, from offset X: <what, item by item>"``,
    each item a segment header that fails its check, an intact header whose payload fails its
    content hash (or runs past the end), a whole segment no manifest commits, zeros or garbage."""
    size = file.size()
    if size <= committed_end:
        return None
    reader = ChunkReader(file, size)
    items: list[str] = []
    pos = committed_end
    while pos < size and len(items) < _TAIL_ITEMS:
        raw = reader.read(pos, min(HEADER_SIZE, size - pos))
        try:
            header = SegmentHeader.decode(raw)
        except HeaderError as exc:
            items.append(_unparsed(reader, pos, size, raw, str(exc)))
            pos = size
            break
        seg = Seg(pos, header)
        name = f"{type_name(header.seg_type)} segment id {header.seg_id} (v{header.version})"
        if seg.end > size:
            items.append(f"at {pos} a {name} header whose segment needs {header.total_length} "
                         f"bytes, {size - pos} are there")
            pos = size
            break
        whole = (whole_manifest(reader, seg) is not None if header.seg_type == SegType.MANIFEST
                 else payload_verifies(seg, read_payload(reader, seg)))
        items.append(f"at {pos} a {name} that no committed manifest names" if whole else
                     f"at {pos} an intact {name} header whose payload fails its content hash")
        pos = seg.end
    if pos < size:
        items.append(f"{size - pos} more bytes")
    return (f"{size - committed_end} bytes past the last good commit, from offset "
            f"{committed_end}: " + "; ".join(items))


def _unparsed(reader: ChunkReader, pos: int, size: int, raw: bytes, why: str) -> str:
    """Bytes from ``pos`` to the end that hold no intact header: zeros, a broken header, garbage."""
    rest = reader.read(pos, size - pos) if size - pos <= 1 << 20 else raw
    n = size - pos
    if not rest.strip(b"\0"):
        return f"{n} zero bytes at {pos}"
    if raw.startswith(MAGIC_BYTES):
        return f"at {pos} a segment header that fails its check ({why}), then {n - len(raw)} " \
               "bytes"
    return f"{n} bytes of garbage at {pos} (no segment header: {why})"
