"""What an ``rvf-ruvector`` file boots to in the reference store: the read path of its open.

``boot(path, rf, version, dimension) -> Booted`` takes a file parsed as the store boots it
(``reader.parse(..., checked=True)``: the latest manifest whose content hash holds, looking back
through the whole file) and loads the segments its directory names. It checks more than the
runtime: every directory entry's header and content hash and each segment's version byte, so
damage in the committed region is ``CorruptStore``; damage that hides the last manifest shows
the commit before it (a rollback, ``DamagePromise.ROLLBACK``). Witness and manifest entries are
never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crashgate.backends import BadOption, CorruptStore
from crashgate.reference.rvf.table import VectorTable
from crashgate.reference.rvf_real.declaration import NAME
from crashgate.reference.rvf_real.layout import MANIFEST, VEC, WITNESS
from crashgate.reference.rvf_real.manifest import DirEntry, FileIdentity
from crashgate.reference.rvf_real.payloads import parse_vec
from crashgate.reference.rvf_real.reader import RealFile
from crashgate.reference.rvf_real.scan import Segment
from crashgate.reference.rvf_real.writer import META, parse_meta

__all__ = ["Booted", "boot"]


@dataclass(frozen=True)
class Booted:
    """The state a file boots to: the boot manifest's ``epoch``, ``directory``, ``deleted`` ids
    and ``identity`` (None: the manifest has no lineage trailer); ``loaded`` the ids of every
    directory VEC, deleted ones included; ``next_id`` the segment id after the directory's
    highest; ``end`` the committed end (where the boot manifest's segment ends); ``table`` the
    live records (None when the manifest's dimension is 0: no dimension fixed yet)."""

    epoch: int
    directory: tuple[DirEntry, ...]
    deleted: frozenset[int]
    identity: FileIdentity | None
    loaded: frozenset[int]
    next_id: int
    end: int
    table: VectorTable | None


def boot(path: str, rf: RealFile, version: int, dimension: int | None) -> Booted:
    """The state ``rf`` boots to for a store at segment version ``version`` opened with
    ``dimension`` (None: from the file), or raise ``CorruptStore`` naming the first problem
    (``BadOption`` when the file's dimension is not ``dimension``)."""
    m = rf.manifest
    if m is None:
        raise CorruptStore(path, "no manifest the runtime can boot from in the last "
                                 "64 KiB (damaged, or not an rvf-ruvector/1 file)")
    own = rf.segment_at(m.offset)
    assert own is not None   # a complete manifest whose hash holds (checked=True)
    _check_segment_version(path, own, version)
    if dimension is not None and m.dimension not in (0, dimension):
        raise BadOption(NAME, "dimension", dimension, [str(m.dimension), "0"])
    vectors: dict[int, tuple[float, ...]] = {}
    meta: dict[int, dict[str, Any]] = {}
    for e in m.directory:
        if e.seg_type in (WITNESS, MANIFEST):
            # never read; and a witness is written with its manifest, no fsync between, so
            # a crash may keep the manifest and tear the witness: not damage to the data
            continue
        seg = rf.segment_at(e.offset)
        if seg is None or (seg.header.seg_id, seg.header.seg_type,
                           seg.header.payload_length) != (e.seg_id, e.seg_type,
                                                          e.payload_length):
            raise CorruptStore(path, f"the manifest at offset {m.offset} names segment "
                                     f"id {e.seg_id} (type {e.seg_type}, "
                                     f"{e.payload_length} bytes) at offset {e.offset}, "
                                     "and no such header is there")
        if not seg.complete or seg.hash_ok is False:
            raise CorruptStore(path, f"segment {seg.label()} at offset {seg.offset} "
                                     "fails its content hash")
        _check_segment_version(path, seg, version)
        payload = rf.data[seg.payload_start:seg.end]
        if e.seg_type == VEC:
            parsed = parse_vec(payload)
            if parsed is None or parsed[0] != m.dimension:
                raise CorruptStore(path, f"vec segment at offset {e.offset} does not "
                                         f"parse as dimension {m.dimension}")
            for vid, values in parsed[1]:
                vectors[vid] = values
                meta[vid] = {}    # a record written again without metadata has {}
        elif e.seg_type == META:
            got = parse_meta(payload)
            if got is None:
                raise CorruptStore(path, f"meta segment at offset {e.offset} does not "
                                         "parse")
            meta.update(got)
    deleted = frozenset(m.deleted_ids)
    table = None
    if m.dimension:
        table = VectorTable(m.dimension)
        live = [v for v in vectors if v not in deleted]
        if live:
            table.upsert(live, np.array([vectors[v] for v in live], dtype=np.float64),
                         [meta[v] for v in live], owned=True)
    return Booted(epoch=m.epoch, directory=m.directory, deleted=deleted, identity=m.identity,
                  loaded=frozenset(vectors),
                  next_id=max((e.seg_id for e in m.directory), default=0) + 1, end=own.end,
                  table=table)


def _check_segment_version(path: str, seg: Segment, version: int) -> None:
    """A segment this open reads whose version is above the reader's, when the file as a
    whole is not newer (``check_version`` passed): its version byte is damaged."""
    if seg.header.version > version:
        raise CorruptStore(path, f"segment {seg.label()} at offset {seg.offset} has "
                                 f"version byte {seg.header.version}, above this "
                                 f"reader's {version}, and no other header "
                                 "declares a newer version: a damaged header")
