"""Rebuilding a store's live state from its file: locate the commit point, then replay.

Replay goes through the manifests of the committed region in file order. Each must verify, must
name the manifest before it (``prev``), and the data segments it names must exist before it with
the named id and type and a content hash that verifies; their records are applied in order
(within a segment as written; within a commit JOURNAL, then META, then VEC). Data segments no
manifest names (a writer's leftovers) are ignored; segment types this reader does not use are
skipped by length and remembered for compaction. The final counts must equal the manifest's.
Anything else is ``CorruptStore``: a committed region that does not add up is never guessed at.

**From a checkpoint** (checkpoint.py). ``load`` first searches backward from the end for the
newest manifest that verifies (``scan.last_manifest``) and reads the checkpoint it records: the
checkpoint manifest (or, for a whole ``sync=two`` checkpoint found first, that one). The rules
above then run on ``[start, size)`` alone, where ``start`` is the checkpoint's first snapshot
segment: the walk, the commit point, the tail search, the same-sync rules, then a replay that
starts from the snapshot (with the checkpoint's ``dead``) instead of an empty state.

Why the found manifest can be trusted: a manifest inside a data payload would be taken for the
commit point only if it were the newest verifying one, i.e. in the torn tail of the last commit
attempt, and this writer never appends a payload that holds an intact header at an aligned
offset (``checkpoint.nested_headers``). So every such header after the newest commit point is a
real segment, the manifest found is real, and so are the checkpoint offset it records and the
walk from there, which reads exactly what the walk from 0 would read from there on. Any doubt
(no checkpoint recorded, a checkpoint that does not verify or does not lead to the commit point,
a newer version, any ``CorruptStore`` or ``VersionTooNew`` from the region) opens by the walk
from offset 0 instead, which decides as before. What is not read: the history before the
checkpoint. Damage there is found by ``verify``, not by open; open's answer is still the
committed state (FORMAT.md, "Opening").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from crashgate.backends import CorruptStore, File, VersionTooNew
from crashgate.reference.rvf.checkpoint import Cost
from crashgate.reference.rvf.manifest import Manifest, SegRef
from crashgate.reference.rvf.payloads import decode_journal, decode_meta, decode_vec
from crashgate.reference.rvf.scan import (
    ChunkReader,
    ReadStats,
    Seg,
    last_manifest,
    locate,
    payload_verifies,
    read_payload,
    whole_manifest,
)
from crashgate.reference.rvf.segments import (
    HEADER_SIZE,
    Flag,
    SegmentHeader,
    SegType,
    hash256,
    type_name,
)
from crashgate.reference.rvf.table import VectorTable

__all__ = ["DATA_TYPES", "Loaded", "checkpoint_of", "load", "load_full", "snapshot_of"]

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
    whole: bool = True
    """Whether the walk began at offset 0. When not (opened from a checkpoint), the four fields
    above cover only ``[start, committed_end)``; ``load_full`` gives the whole file's."""
    checkpoint: int = -1
    """Offset of the newest checkpoint manifest (a fresh file's first manifest is one)."""
    snapshot_cost: Cost = field(default_factory=Cost)
    """Replay cost of that checkpoint: its snapshot, witness and manifest."""
    since_cost: Cost = field(default_factory=Cost)
    """Replay cost of the committed segments after it."""
    stats: ReadStats = field(default_factory=ReadStats)
    """What this open read (``RvfStore.open_stats``)."""
    newest: int = -1
    """Offset of the newest verifying manifest the backward search found (-1: not searched)."""


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
        loaded.dead += loaded.table.upsert(block.ids, block.vectors, block.metadata, owned=True)


def snapshot_of(m: Manifest) -> tuple[SegRef, ...] | None:
    """The segments a checkpoint manifest's snapshot names; ``None`` for any other manifest."""
    refs = m.extra.get("snapshot")
    if not isinstance(refs, list):
        return None
    try:
        return tuple(SegRef(int(o), int(i), int(t)) for o, i, t in refs)
    except (TypeError, ValueError, OverflowError):
        return None


def checkpoint_of(m: Manifest) -> int | None:
    """The newest checkpoint a manifest records (``None`` if it records none)."""
    at = m.extra.get("checkpoint")
    return at if isinstance(at, int) and not isinstance(at, bool) and at >= 0 else None


def _replay_manifest(loaded: Loaded, reader: ChunkReader, path: str, seg: Seg, payload: bytes,
                     by_offset: dict[int, Seg], prev: int | None,
                     from_snapshot: bool = False) -> Manifest:
    """Check and apply one manifest. ``prev`` None: the first manifest of a walk from a
    checkpoint (its ``prev`` lies before the walk). ``from_snapshot``: apply its snapshot to
    the empty state, and take ``dead`` from it (the records it replaced are not in the walk)."""
    where = f"manifest at offset {seg.offset}"
    try:
        m = Manifest.decode(payload)
    except ValueError as exc:
        raise CorruptStore(path, f"{where} does not parse: {exc}") from None
    snapshot = snapshot_of(m) if from_snapshot else None
    if from_snapshot and snapshot is None:
        raise CorruptStore(path, f"{where} is no checkpoint (it names no snapshot)")
    if snapshot is not None:
        m = dataclasses.replace(m, segments=snapshot)
        loaded.dead = m.dead
    if prev is not None and m.prev != prev:
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


def _cost(segs: list[Seg]) -> Cost:
    return Cost(len(segs), sum(s.header.total_length for s in segs))


def load(file: File, path: str, supported: int) -> Loaded:
    """The live state of ``file``, from its newest checkpoint when one can be trusted, else by
    the full replay; ``VersionTooNew`` or ``CorruptStore`` (see scan.py)."""
    size = file.size()
    reader = ChunkReader(file, size, chunk=_BACK_CHUNK)
    fast = _from_checkpoint(reader, path, supported)
    if fast is not None:
        return fast
    full = load_full(file, path, supported)
    full.stats.headers += reader.stats.headers
    full.stats.payloads += reader.stats.payloads
    full.stats.bytes += reader.stats.bytes
    return full


_BACK_CHUNK = 64 << 10


def _from_checkpoint(reader: ChunkReader, path: str, supported: int) -> Loaded | None:
    """The state replayed from the checkpoint the newest manifest records; ``None`` when that
    cannot be done or is no cheaper than the full replay (the caller then does it)."""
    newest = last_manifest(reader, supported)
    if newest is None:
        return None
    loaded = _from_newest(reader, path, supported, newest)
    if loaded is not None:
        loaded.newest = newest.offset
    return loaded


def _from_newest(reader: ChunkReader, path: str, supported: int, newest: Seg) -> Loaded | None:
    payload = whole_manifest(reader, newest)
    m = _decode(payload) if payload is not None else None
    if m is None:
        return None
    at = checkpoint_of(m)
    if snapshot_of(m) is not None and not newest.header.flags & Flag.SAME_SYNC:
        at = newest.offset  # a whole sync=two checkpoint: its snapshot was fsynced before it
    if at is None or at > newest.offset:
        return None
    ck = _manifest_at(reader, at, supported)
    if ck is None:
        return None
    seg, k = ck
    snapshot = snapshot_of(k)
    if snapshot is None:
        return None  # a fresh file's first manifest: the walk from 0 is the walk from it
    start = min(r.offset for r in (*snapshot, k.witness))
    if not 0 < start < seg.offset:
        return None
    try:
        loaded = _replay(reader, path, supported, start, seg.offset)
    except (CorruptStore, VersionTooNew):
        return None  # the walk from offset 0 decides, with its own words
    return loaded


def _decode(payload: bytes) -> Manifest | None:
    try:
        return Manifest.decode(payload)
    except ValueError:
        return None


def _manifest_at(reader: ChunkReader, at: int, supported: int) -> tuple[Seg, Manifest] | None:
    if at % 64 or at + HEADER_SIZE > reader.size:
        return None
    reader.stats.headers += 1
    try:
        header = SegmentHeader.decode(reader.read(at, HEADER_SIZE))
    except ValueError:
        return None
    seg = Seg(at, header)
    if header.seg_type != SegType.MANIFEST or header.version > supported or seg.end > reader.size:
        return None
    payload = whole_manifest(reader, seg)
    m = _decode(payload) if payload is not None else None
    return (seg, m) if m is not None else None


def load_full(file: File, path: str, supported: int) -> Loaded:
    """The live state of ``file`` replayed from offset 0 (what ``load`` did before checkpoints,
    and what it still does when it cannot start from one)."""
    return _replay(ChunkReader(file, file.size()), path, supported, 0, None)


def _replay(reader: ChunkReader, path: str, supported: int, start: int,
            first: int | None) -> Loaded:
    """Locate and replay ``[start, size)``. ``first``: the checkpoint manifest the walk must
    meet first (``None`` for the walk from offset 0)."""
    loc = locate(reader, path, supported, start)
    loaded = Loaded(file_size=reader.size, whole=start == 0, stats=reader.stats)
    all_segs = loc.walk.segments
    if all_segs:
        loaded.next_seg_id = max(s.header.seg_id for s in all_segs) + 1
        loaded.max_version = max(s.header.version for s in all_segs)
    chosen = loc.manifest
    if chosen is None:
        return loaded
    committed = [s for s in all_segs if s.offset < chosen.end]
    manifests = [s for s in committed if s.seg_type == SegType.MANIFEST]
    if first is not None and (not manifests or manifests[0].offset != first):
        raise CorruptStore(path, f"the walk from offset {start} does not meet the checkpoint "
                                 f"at offset {first} first")
    by_offset = {s.offset: s for s in committed}
    prev: int | None = -1 if first is None else None
    m: Manifest | None = None
    newest_ck, ck_index = (first if first is not None else -1), 0
    for i, seg in enumerate(committed):
        if seg.seg_type == SegType.MANIFEST:
            payload = loc.manifest_payload if seg is chosen else read_payload(reader, seg)
            if not payload_verifies(seg, payload):
                raise CorruptStore(path, f"manifest at offset {seg.offset} fails its content "
                                         f"hash, but a later one at offset {chosen.offset} "
                                         "verifies")
            m = _replay_manifest(loaded, reader, path, seg, payload, by_offset, prev,
                                 from_snapshot=seg.offset == first)
            if seg.header.flags & Flag.CHECKPOINT:
                newest_ck, ck_index = seg.offset, i + 1
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
    loaded.checkpoint = newest_ck
    before = committed[:ck_index]
    if newest_ck >= 0 and before:
        # the newest checkpoint's own segments: from the one after the manifest before it
        ck_manifests = [j for j, s in enumerate(before[:-1]) if s.seg_type == SegType.MANIFEST]
        loaded.snapshot_cost = _cost(before[(ck_manifests[-1] + 1) if ck_manifests else 0:])
    loaded.since_cost = _cost(committed[ck_index:])
    return loaded

