"""Rebuilding a store's live state from its file: locate the commit point, then replay.

Replay goes through the manifests of the committed region in file order. Each must verify, must
name the manifest before it (``prev``), and the data segments it names must exist before it with
the named id and type and a content hash that verifies; their records are applied in order
(within a segment as written; within a commit JOURNAL, then META, then VEC). Data segments no
manifest names (a writer's leftovers) are ignored; segment types this reader does not use are
skipped by length and remembered for compaction. The final counts must equal the manifest's.
Anything else is ``CorruptStore``: a committed region that does not add up is never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crashgate.backends import CorruptStore, File
from crashgate.reference.rvf.manifest import Manifest
from crashgate.reference.rvf.payloads import decode_journal, decode_meta, decode_vec
from crashgate.reference.rvf.scan import ChunkReader, Seg, locate, payload_verifies, read_payload
from crashgate.reference.rvf.segments import SegType, hash256, type_name
from crashgate.reference.rvf.table import VectorTable

__all__ = ["DATA_TYPES", "Loaded", "load"]

DATA_TYPES = frozenset({SegType.VEC, SegType.META, SegType.JOURNAL})
USED_TYPES = DATA_TYPES | {SegType.MANIFEST, SegType.WITNESS}


@dataclass
class Loaded:
    """The live state of a file and what a writer needs to append to it."""

    kv: dict[str, bytes] = field(default_factory=dict)
    table: VectorTable = field(default_factory=VectorTable)
    manifest: Manifest | None = None
    manifest_seg: Seg | None = None
    manifest_digest: bytes = b"\0" * 32
    """SHAKE-256/256 of the committed manifest segment's bytes (a child's ``parent_hash``)."""
    committed_end: int = 0
    file_size: int = 0
    dead: int = 0
    next_seg_id: int = 1
    witness_segs: list[Seg] = field(default_factory=list)
    unknown: list[Seg] = field(default_factory=list)
    committed_segments: int = 0
    max_version: int = 0


def _apply(loaded: Loaded, seg: Seg, payload: bytes, dimension: int) -> None:
    t = seg.seg_type
    if t == SegType.JOURNAL:
        j = decode_journal(payload)
        for key in j.keys:
            loaded.dead += loaded.kv.pop(key, None) is not None
        loaded.dead += loaded.table.remove(j.ids)
    elif t == SegType.META:
        for key, value in decode_meta(payload):
            loaded.dead += key in loaded.kv
            loaded.kv[key] = value
    elif t == SegType.VEC:
        block = decode_vec(payload)
        if block.vectors.shape[1] != dimension:
            raise ValueError(f"VEC dimension {block.vectors.shape[1]}, manifest says {dimension}")
        loaded.dead += loaded.table.upsert(block.ids, block.vectors, block.metadata)


def _replay_manifest(loaded: Loaded, reader: ChunkReader, path: str, seg: Seg, payload: bytes,
                     by_offset: dict[int, Seg], prev: int) -> Manifest:
    where = f"manifest at offset {seg.offset}"
    try:
        m = Manifest.decode(payload)
    except ValueError as exc:
        raise CorruptStore(path, f"{where} does not parse: {exc}") from None
    if m.prev != prev:
        raise CorruptStore(path, f"{where} follows the manifest at offset {m.prev}, but the one "
                                 f"before it is at offset {prev} (a commit is missing)")
    for ref in (*m.segments, m.witness):
        data = by_offset.get(ref.offset)
        if data is None or data.header.seg_id != ref.seg_id or data.seg_type != ref.seg_type \
                or data.offset >= seg.offset:
            raise CorruptStore(path, f"{where} names a {type_name(ref.seg_type)} segment "
                                     f"(id {ref.seg_id}) at offset {ref.offset} that is missing")
    if loaded.table.dimension is None and m.dimension:
        loaded.table.fix_dimension(m.dimension)
    for ref in m.segments:
        data = by_offset[ref.offset]
        body = read_payload(reader, data)
        if not payload_verifies(data, body):
            raise CorruptStore(path, f"{type_name(data.seg_type)} segment at offset "
                                     f"{data.offset} (named by the {where}) fails its content hash")
        try:
            _apply(loaded, data, body, m.dimension)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise CorruptStore(path, f"{type_name(data.seg_type)} segment at offset "
                                     f"{data.offset} does not parse: {exc}") from None
    loaded.witness_segs.append(by_offset[m.witness.offset])
    return m


def load(file: File, path: str, supported: int) -> Loaded:
    """The live state of ``file``; ``VersionTooNew`` or ``CorruptStore`` (see scan.py)."""
    size = file.size()
    reader = ChunkReader(file, size)
    loc = locate(reader, path, supported)
    loaded = Loaded(file_size=size)
    all_segs = loc.walk.segments
    if all_segs:
        loaded.next_seg_id = max(s.header.seg_id for s in all_segs) + 1
        loaded.max_version = max(s.header.version for s in all_segs)
    chosen = loc.manifest
    if chosen is None:
        return loaded
    committed = [s for s in all_segs if s.offset < chosen.end]
    by_offset = {s.offset: s for s in committed}
    prev = -1
    m: Manifest | None = None
    for seg in committed:
        if seg.seg_type == SegType.MANIFEST:
            payload = loc.manifest_payload if seg is chosen else read_payload(reader, seg)
            if not payload_verifies(seg, payload):
                raise CorruptStore(path, f"manifest at offset {seg.offset} fails its content "
                                         f"hash, but a later one at offset {chosen.offset} "
                                         "verifies")
            m = _replay_manifest(loaded, reader, path, seg, payload, by_offset, prev)
            prev = seg.offset
        elif seg.seg_type not in USED_TYPES:
            loaded.unknown.append(seg)
    assert m is not None
    counts = (len(loaded.table), len(loaded.kv), loaded.dead)
    if counts != (m.vectors, m.keys, m.dead):
        raise CorruptStore(path, f"replay gives {counts[0]} vectors, {counts[1]} keys, "
                                 f"{counts[2]} dead records, the manifest at offset "
                                 f"{chosen.offset} records {m.vectors}, {m.keys}, {m.dead}")
    loaded.manifest = m
    loaded.manifest_seg = chosen
    loaded.manifest_digest = hash256(reader.read(chosen.offset, chosen.header.total_length))
    loaded.committed_end = chosen.end
    loaded.committed_segments = len(committed)
    return loaded
