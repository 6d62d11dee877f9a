"""Writing a whole RVF file: creation, compaction and derive all produce one this way.

The file is written under a temporary name beside its target (``<target>.tmp-rvf``), fsynced,
and only then renamed over the target by the caller, so the target is always either absent, the
old file, or the complete new one. Layout of a fresh file::

    carried segments (types this reader does not use, byte for byte, in their old order)
    META segments (live key-value records, sorted by key, up to ~4 MiB each)
    VEC segments (live vectors, sorted by id, up to 4096 records each)
    WITNESS (the carried chain + one entry for this rewrite)
    MANIFEST (flags CHECKPOINT | HAS_LINEAGE, prev -1, naming every META/VEC segment)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from crashgate.backends import File, FileSystem
from crashgate.reference.rvf.manifest import Lineage, Manifest, SegRef
from crashgate.reference.rvf.payloads import encode_meta, encode_vec
from crashgate.reference.rvf.segments import Flag, SegType, encode_segment
from crashgate.reference.rvf.table import VectorTable
from crashgate.reference.rvf.witness import ZERO_HASH, WitnessEntry, WitnessType

__all__ = ["META_BYTES_PER_SEGMENT", "VEC_PER_SEGMENT", "FreshFile", "meta_chunks", "write_fresh"]

VEC_PER_SEGMENT = 4096
META_BYTES_PER_SEGMENT = 4 << 20


@dataclass(frozen=True)
class FreshFile:
    """What goes into a fresh file."""

    kind: str  # "create" | "compact" | "derive"
    witness_type: WitnessType
    version: int
    epoch: int
    dimension: int
    metric: str
    lineage: Lineage
    kv: dict[str, bytes]
    table: VectorTable
    carried: Sequence[bytes] = ()
    """Whole segments (header, payload, padding) to keep byte for byte."""
    history: Sequence[WitnessEntry] = ()
    first_seg_id: int = 1


def meta_chunks(kv: dict[str, bytes]) -> Iterable[dict[str, bytes]]:
    """Live key-value records sorted by key, cut into chunks of about 4 MiB (one META each)."""
    chunk: dict[str, bytes] = {}
    size = 0
    for key in sorted(kv):
        chunk[key] = kv[key]
        size += len(key) + len(kv[key]) + 8
        if size >= META_BYTES_PER_SEGMENT:
            yield chunk
            chunk, size = {}, 0
    if chunk:
        yield chunk


def write_fresh(fs: FileSystem, tmp_path: str, spec: FreshFile, now_ns: Callable[[], int]
                ) -> None:
    """Write ``spec`` to ``tmp_path`` (replacing it) and fsync it; the caller renames it."""
    f: File = fs.open(tmp_path, "w")
    try:
        at = 0
        seg_id = spec.first_seg_id
        action = hashlib.shake_256()
        refs: list[SegRef] = []

        def put(seg_type: int, payload: bytes, flags: int = 0, hashed: bool = False) -> SegRef:
            nonlocal at, seg_id
            raw = encode_segment(version=spec.version, seg_type=seg_type, seg_id=seg_id,
                                 payload=payload, timestamp_ns=now_ns(), flags=flags)
            f.write(at, raw)
            if hashed:
                action.update(raw)
            ref = SegRef(at, seg_id, seg_type)
            at += len(raw)
            seg_id += 1
            return ref

        for raw in spec.carried:
            f.write(at, raw)
            at += len(raw)
        for chunk in meta_chunks(spec.kv):
            refs.append(put(SegType.META, encode_meta(chunk), hashed=True))
        for ids, vectors, metadata in spec.table.chunks(VEC_PER_SEGMENT):
            refs.append(put(SegType.VEC, encode_vec(ids, vectors, metadata), hashed=True))
        head = spec.history[-1].digest() if spec.history else ZERO_HASH
        entry = WitnessEntry.after(head, action.digest(32), now_ns(), spec.witness_type)
        entries = [*spec.history, entry]
        wref = put(SegType.WITNESS, b"".join(e.encode() for e in entries))
        manifest = Manifest(
            kind=spec.kind, epoch=spec.epoch, dimension=spec.dimension, metric=spec.metric,
            vectors=len(spec.table), keys=len(spec.kv), dead=0, prev=-1, segments=tuple(refs),
            witness=wref, witness_count=len(entries), witness_head=entry.digest(),
            lineage=spec.lineage, committed_ns=now_ns(),
        )
        put(SegType.MANIFEST, manifest.encode(), flags=Flag.CHECKPOINT | Flag.HAS_LINEAGE)
        f.sync()
    finally:
        f.close()
