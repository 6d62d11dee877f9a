"""Read a file the real ``@ruvector/rvf`` runtime wrote, as the runtime reads it, without ever
writing to it (the file is opened ``rb`` once and read whole).

``read(path) -> RealFile``:

- ``scan``: every segment walked from offset 0, the bytes that are not a segment and a last
  segment cut by the end of the file (``scan.py``).
- ``manifest``: the manifest the runtime boots from, the latest in the last 64 KiB that parses
  (``manifest.py``).
- ``state``: the vectors of every VEC segment the manifest's directory names, in directory order
  (a later batch overwrites an id), minus the manifest's deleted ids; ``load_errors`` are what
  would make the runtime's open fail (a VEC segment whose magic or content hash is wrong).
  Metadata is not part of the state: the runtime keeps it in memory only and never writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crashgate.reference.rvf_real.layout import VEC, WITNESS
from crashgate.reference.rvf_real.manifest import Manifest, find_latest_manifest
from crashgate.reference.rvf_real.payloads import WitnessEntry, parse_vec, parse_witness
from crashgate.reference.rvf_real.scan import Scan, Segment, walk

__all__ = ["Problem", "RealFile", "State", "parse", "read", "witness_entries"]


@dataclass(frozen=True)
class Problem:
    """One failed check: which segment (its index in the walk, or None), the byte offset the check
    is about, the check's name and what was found."""

    segment: int | None
    offset: int
    check: str
    detail: str

    def __str__(self) -> str:
        where = f"segment {self.segment} at offset {self.offset}" if self.segment is not None \
            else f"offset {self.offset}"
        return f"{where}: {self.check}: {self.detail}"


@dataclass(frozen=True)
class State:
    """What the runtime loads at open: ``vectors`` id -> float32 values (as Python floats) of
    every id the directory's VEC segments hold, ``deleted`` the manifest's deleted ids, ``live``
    the ids a query can return, sorted."""

    vectors: Mapping[int, tuple[float, ...]]
    deleted: frozenset[int]
    live: tuple[int, ...]
    load_errors: tuple[Problem, ...]


@dataclass(frozen=True)
class RealFile:
    path: str
    data: bytes
    scan: Scan
    manifest: Manifest | None
    state: State

    def segment_at(self, offset: int) -> Segment | None:
        return next((s for s in self.scan.segments if s.offset == offset), None)


def _load(data: bytes, scan: Scan, manifest: Manifest | None) -> State:
    vectors: dict[int, tuple[float, ...]] = {}
    errors: list[Problem] = []
    if manifest is None:
        return State({}, frozenset(), (), ())
    by_offset = {s.offset: s for s in scan.segments}
    for entry in manifest.directory:
        if entry.seg_type != VEC:
            continue
        seg = by_offset.get(entry.offset)
        if seg is None:
            errors.append(Problem(None, entry.offset, "manifest reference",
                                  f"the directory names vec segment id {entry.seg_id} here but "
                                  "no segment header starts at this offset"))
            continue
        if not seg.complete or seg.hash_ok is False:
            errors.append(Problem(seg.index, seg.offset, "payload checksum",
                                  "the runtime refuses to open the file (InvalidChecksum): "
                                  + ("the payload is cut by the end of the file"
                                     if not seg.complete else "the content hash does not match")))
            continue
        parsed = parse_vec(data[seg.payload_start:seg.end])
        if parsed is not None:
            for vid, values in parsed[1]:
                vectors[vid] = values
    deleted = frozenset(manifest.deleted_ids)
    live = tuple(sorted(v for v in vectors if v not in deleted))
    return State(vectors, deleted, live, tuple(errors))


def read(path: str) -> RealFile:
    """Read ``path`` (opened read-only, never written) as the runtime would."""
    with open(path, "rb") as fh:
        data = fh.read()
    return parse(path, data)


def parse(path: str, data: bytes, *, checked: bool = False) -> RealFile:
    """``read`` of bytes already read (``path`` only names them): the reference store reads its
    file through ``env.fs`` and parses it here, with ``checked`` (boot only from a manifest
    whose content hash holds)."""
    manifest = find_latest_manifest(data, checked)
    anchors: frozenset[int] = frozenset()
    if manifest is not None:
        anchors = frozenset({manifest.offset, *(e.offset for e in manifest.directory)})
    scan = walk(data, anchors)
    return RealFile(path, data, scan, manifest, _load(data, scan, manifest))


def witness_entries(rf: RealFile) -> list[tuple[Segment, WitnessEntry | None]]:
    """Every complete WITNESS segment of the walk, in file order, with its parsed entry."""
    return [(s, parse_witness(rf.data[s.payload_start:s.end])) for s in rf.scan.segments
            if s.header.seg_type == WITNESS and s.complete]
