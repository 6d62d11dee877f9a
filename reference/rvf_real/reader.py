"""Read a file the real ``@ruvector/rvf`` runtime wrote, as the runtime reads it, without ever
writing to it (the file is opened ``rb`` once and read whole).

``read(path) -> RealFile``:

- ``scan``: every segment walked from offset 0 (headers back to back, no padding), the runs of
  bytes that are not a segment (``Gap``), and a last segment cut by the end of the file.
- ``manifest``: the manifest the runtime boots from (``find_latest_manifest`` in
  rvf-runtime/src/read_path.rs): scanning the last 64 KiB backwards byte by byte, the first
  magic + type 0x05 whose payload is complete and parses. Its content hash is *not* checked by
  the runtime (``verify`` does check it).
- ``state``: the vectors of every VEC segment the manifest's directory names, in directory order
  (a later batch overwrites an id), minus the manifest's deleted ids; ``load_errors`` are what
  would make the runtime's open fail (a VEC segment whose magic or content hash is wrong).
  Metadata is not part of the state: the runtime keeps it in memory only and never writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from crashgate.reference.rvf_real.layout import (
    FIDI_MARKER,
    HEADER_SIZE,
    MAGIC_BYTES,
    MANIFEST,
    MAX_READ_PAYLOAD,
    TAIL_SCAN,
    VEC,
    WITNESS,
    Header,
    content_hash,
)

__all__ = ["DirEntry", "FileIdentity", "Gap", "Manifest", "Problem", "RealFile", "Scan",
           "Segment", "State", "WitnessEntry", "parse", "parse_journal", "parse_manifest",
           "parse_vec", "parse_witness", "read", "witness_entries"]


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
class Segment:
    """One segment of the walk. ``complete`` is False for a last segment whose payload the end of
    the file cuts; ``hash_ok`` is None when the stored hash is zero ("not set", which the runtime
    accepts) or the payload is incomplete. An incomplete segment is either the last one (the end of
    the file cuts it) or one with ``cut_at`` (a later segment starts inside its payload)."""

    index: int
    offset: int
    header: Header
    complete: bool
    hash_ok: bool | None
    cut_at: int | None = None  # where a later segment the manifest names starts inside it

    @property
    def payload_start(self) -> int:
        return self.offset + HEADER_SIZE

    @property
    def end(self) -> int:
        return self.payload_start + self.header.payload_length

    def label(self) -> str:
        return f"{self.header.type_name}, id {self.header.seg_id}"


@dataclass(frozen=True)
class Gap:
    """Bytes ``[offset, end)`` that are not a segment: no magic there, or a header cut by the end
    of the file (``partial_header``)."""

    offset: int
    end: int
    partial_header: bool


@dataclass(frozen=True)
class Scan:
    segments: tuple[Segment, ...]
    gaps: tuple[Gap, ...]


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


@dataclass(frozen=True)
class WitnessEntry:
    """One WITNESS segment's payload: type, ns timestamp, action text, the previous entry's hash."""

    witness_type: int
    timestamp_ns: int
    action: str
    prev_hash: bytes


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


def _walk(data: bytes, anchors: frozenset[int]) -> Scan:
    """Walk the segments from offset 0. ``anchors`` are offsets where the bootable manifest says a
    segment starts: a segment whose stated payload runs over one was cut short there (a torn
    append the runtime later appended after, since it never truncates), and the walk goes on
    from the anchor."""
    segments: list[Segment] = []
    gaps: list[Gap] = []
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < HEADER_SIZE:
            # A header cut by the end of the file starts with the magic (or a piece of it).
            head = data[pos:pos + 4]
            gaps.append(Gap(pos, size, partial_header=MAGIC_BYTES.startswith(head)))
            break
        if data[pos:pos + 4] != MAGIC_BYTES:
            nxt = data.find(MAGIC_BYTES, pos + 1)
            end = size if nxt < 0 else nxt
            gaps.append(Gap(pos, end, partial_header=False))
            pos = end
            continue
        header = Header.parse(data[pos:pos + HEADER_SIZE])
        end = pos + HEADER_SIZE + header.payload_length
        cut = min((a for a in anchors if pos < a < end), default=None)
        complete = cut is None and end <= size
        hash_ok: bool | None = None
        if complete and header.content_hash != b"\0" * 16:
            hash_ok = content_hash(data[pos + HEADER_SIZE:end]) == header.content_hash
        segments.append(Segment(len(segments), pos, header, complete, hash_ok, cut))
        if cut is not None:
            pos = cut
        elif not complete:
            break
        else:
            pos = end
    return Scan(tuple(segments), tuple(gaps))


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


def _find_latest_manifest(data: bytes, checked: bool = False) -> Manifest | None:
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


def parse_vec(payload: bytes) -> tuple[int, list[tuple[int, tuple[float, ...]]]] | None:
    """(dimension, [(id, vector)]) of a VEC payload: u16 dimension, u32 count, then per vector a
    u64 id and ``dimension`` f32; None when the payload is shorter than that (the runtime then
    skips the segment silently)."""
    if len(payload) < 6:
        return None
    dim, count = struct.unpack_from("<HI", payload)
    if len(payload) < 6 + count * (8 + 4 * dim):
        return None
    vec = struct.Struct(f"<Q{dim}f")
    out = []
    for k in range(count):
        vid, *values = vec.unpack_from(payload, 6 + k * vec.size)
        out.append((vid, tuple(values)))
    return dim, out


def parse_journal(payload: bytes) -> tuple[int, list[int]] | None:
    """(epoch, deleted ids) of a JOURNAL payload: u32 entry count, u32 epoch, u64 previous journal
    segment id (0), then per entry u8 type (1 = delete), u8 0, u16 length 8, u64 id."""
    if len(payload) < 16:
        return None
    count, epoch = struct.unpack_from("<II", payload)
    if len(payload) != 16 + 12 * count:
        return None
    ids = []
    for k in range(count):
        etype, _pad, elen, vid = struct.unpack_from("<BBHQ", payload, 16 + 12 * k)
        if etype != 1 or elen != 8:
            return None
        ids.append(vid)
    return epoch, ids


def parse_witness(payload: bytes) -> WitnessEntry | None:
    """A WITNESS payload: u8 type, u64 timestamp_ns, u32 action length, the action, 32-byte
    previous hash; None when the lengths do not add up."""
    if len(payload) < 13 + 32:
        return None
    wtype, ts, alen = struct.unpack_from("<BQI", payload)
    if len(payload) != 13 + alen + 32:
        return None
    return WitnessEntry(wtype, ts, payload[13:13 + alen].decode("utf-8", "replace"),
                        payload[13 + alen:])


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
    manifest = _find_latest_manifest(data, checked)
    anchors: frozenset[int] = frozenset()
    if manifest is not None:
        anchors = frozenset({manifest.offset, *(e.offset for e in manifest.directory)})
    scan = _walk(data, anchors)
    return RealFile(path, data, scan, manifest, _load(data, scan, manifest))


def witness_entries(rf: RealFile) -> list[tuple[Segment, WitnessEntry | None]]:
    """Every complete WITNESS segment of the walk, in file order, with its parsed entry."""
    return [(s, parse_witness(rf.data[s.payload_start:s.end])) for s in rf.scan.segments
            if s.header.seg_type == WITNESS and s.complete]
