"""Finding the committed state of an RVF file: walk forward, choose the newest manifest that
verifies, and tell a torn tail from damage and from a newer wire version.

The rules (FORMAT.md "Opening" says the same in prose):

1. Walk forward from offset 0, header by header, seeking by each header's lengths. The walk stops
   at the first header that is not intact (bad magic or header check), at a segment that runs
   past the end of the file, or at the end. Only headers are read.
2. An intact header whose version is above the reader's is decisive: ``VersionTooNew``, even when
   that segment's payload is torn, because this reader cannot judge what a newer writer
   considers committed. A header that is not intact claims nothing, not even its version.
3. The newest manifest in the walk whose content hash verifies (and whose zero padding is all
   there) is the commit point. Everything
   after it is the tail: never visible, truncated by the next writer.
4. The tail is searched at 64-byte aligned offsets (every header is aligned) for an intact
   manifest that verifies, or an intact newer-version header. A verified manifest behind a
   broken header means the committed region is damaged: ``CorruptStore``. A commit written
   with two fsyncs (``sync=two``) can never leave one, because its manifest is written only
   after its data was fsynced. The one exception is rule 6's torn same-sync commit.
5. A non-empty file with no verified manifest is ``CorruptStore`` (files are created whole, by
   a rename); an empty file is a new store.
6. A manifest flagged SAME_SYNC (``sync=one``: data and manifest written together, one fsync)
   can survive a crash whole while sectors of its data did not. Such a manifest is the commit
   point only if every segment it names (data and witness) is intact and verifies. When it is
   the LAST commit of the file (nothing intact or verifying follows it) and some segment it
   names, all lying between the previous manifest and itself, is missing or fails its hash,
   its commit is torn: the commit point is the manifest it names as ``prev``. Found behind a
   broken header (rule 4), it is torn when it names the walk's commit point as ``prev`` and
   nothing verifying follows it. Anywhere else, such damage is ``CorruptStore`` as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from crashgate.backends import CorruptStore, File, VersionTooNew
from crashgate.reference.rvf.manifest import Manifest
from crashgate.reference.rvf.segments import (
    ALIGN,
    HEADER_SIZE,
    MAGIC_BYTES,
    VERIFIABLE,
    Flag,
    HeaderError,
    SegmentHeader,
    SegType,
    content_hash,
)

__all__ = ["ChunkReader", "Located", "ReadStats", "Seg", "Walk", "last_manifest", "locate",
           "payload_verifies", "read_payload", "resync", "walk", "whole_manifest"]

CHUNK = 1 << 20
_BACK_BLOCK = 1 << 16


@dataclass
class ReadStats:
    """What one open read, counted by kind rather than timed: ``headers`` decoded (walks and
    searches), ``payloads`` read (content hashes, manifests, data replayed), ``bytes`` fetched
    from the file (chunks included)."""

    headers: int = 0
    payloads: int = 0
    bytes: int = 0

    @property
    def segments_read(self) -> int:
        """Headers decoded plus payloads read: the figure the open-cost test bounds."""
        return self.headers + self.payloads


class ChunkReader:
    """Positional reads served from one cached chunk, so walking many small segments costs one
    read per megabyte rather than one per segment. ``chunk`` is smaller for a walk that starts
    near the end of a file, so it does not fetch a megabyte of history it will not look at."""

    def __init__(self, file: File, size: int, chunk: int = CHUNK) -> None:
        self.file = file
        self.size = size
        self._chunk = chunk
        self._buf = b""
        self._start = 0
        self.stats = ReadStats()

    def read(self, offset: int, n: int) -> bytes:
        rel = offset - self._start
        if rel >= 0 and rel + n <= len(self._buf):
            return self._buf[rel:rel + n]
        if n >= self._chunk:
            self.stats.bytes += n
            return self.file.read(offset, n)
        self._buf = self.file.read(offset, max(self._chunk, n))
        self.stats.bytes += len(self._buf)
        self._start = offset
        return self._buf[:n]


@dataclass(frozen=True)
class Seg:
    """An intact segment header and where it is."""

    offset: int
    header: SegmentHeader

    @property
    def end(self) -> int:
        return self.offset + self.header.total_length

    @property
    def seg_type(self) -> int:
        return self.header.seg_type


@dataclass(frozen=True)
class Walk:
    segments: tuple[Seg, ...]
    """Intact headers whose segment fits inside the file, in file order."""
    stop: int
    """Where the walk stopped: the file size when it ended cleanly."""
    stop_reason: str
    newer: Seg | None
    """The first intact header of a version above the reader's (the walk stops there)."""
    size: int


def walk(reader: ChunkReader, supported: int, start: int = 0) -> Walk:
    """Rule 1 from ``start`` (0, or a segment boundary a checkpoint proved: replay.py)."""
    segs: list[Seg] = []
    pos, size = start, reader.size
    while pos < size:
        if size - pos < HEADER_SIZE:
            return Walk(tuple(segs), pos, f"{size - pos} bytes at offset {pos} are shorter "
                        "than a header", None, size)
        reader.stats.headers += 1
        try:
            header = SegmentHeader.decode(reader.read(pos, HEADER_SIZE))
        except HeaderError as exc:
            return Walk(tuple(segs), pos, f"header at offset {pos}: {exc}", None, size)
        seg = Seg(pos, header)
        if header.version > supported:
            return Walk(tuple(segs), pos, "newer version", seg, size)
        if seg.end > size:
            return Walk(tuple(segs), pos, f"segment at offset {pos} needs {header.total_length} "
                        f"bytes, the file ends {size - pos} bytes after it", None, size)
        segs.append(seg)
        pos = seg.end
    return Walk(tuple(segs), pos, "", None, size)


def read_payload(reader: ChunkReader, seg: Seg) -> bytes:
    reader.stats.payloads += 1
    return reader.read(seg.offset + HEADER_SIZE, seg.header.payload_length)


def payload_verifies(seg: Seg, payload: bytes) -> bool:
    h = seg.header
    return (h.checksum_algo in VERIFIABLE and h.compression == 0
            and len(payload) == h.payload_length
            and content_hash(payload, h.checksum_algo) == h.content_hash)


def whole_manifest(reader: ChunkReader, seg: Seg) -> bytes | None:
    """The payload of a manifest that is whole: its content hash verifies and its padding is
    present and zero (so a commit whose last bytes were torn off is never chosen)."""
    h = seg.header
    reader.stats.payloads += 1
    raw = reader.read(seg.offset + HEADER_SIZE, h.payload_length + h.padding)
    payload, pad = raw[:h.payload_length], raw[h.payload_length:]
    if len(pad) == h.padding and not pad.strip(b"\0") and payload_verifies(seg, payload):
        return payload
    return None


def resync(reader: ChunkReader, start: int, supported: int, *,
           inclusive: bool = False) -> tuple[str, Seg] | None:
    """Search ``[start, size)`` at aligned offsets for proof of what lies behind a broken header:
    ``("newer", seg)`` for an intact header of a newer version, ``("manifest", seg)`` for an
    intact manifest whose payload verifies; ``None`` when it holds neither (a torn tail).
    The header at ``start`` itself is searched only when ``inclusive``."""
    pos = start - start % ALIGN + (ALIGN if start % ALIGN else 0)
    if pos == start and not inclusive:
        pos += ALIGN  # the header at ``start`` itself is the broken one
    size = reader.size
    while pos + HEADER_SIZE <= size:
        block = reader.file.read(pos, CHUNK)
        if not block:
            break
        at = block.find(MAGIC_BYTES)
        while at >= 0:
            if at % ALIGN == 0 and at + HEADER_SIZE <= len(block):
                off = pos + at
                try:
                    header = SegmentHeader.decode(block[at:at + HEADER_SIZE])
                except HeaderError:
                    header = None
                if header is not None:
                    seg = Seg(off, header)
                    if header.version > supported:
                        return "newer", seg
                    if header.seg_type == SegType.MANIFEST and seg.end <= size and \
                            whole_manifest(reader, seg) is not None:
                        return "manifest", seg
            at = block.find(MAGIC_BYTES, at + 1)
        pos += len(block)
    return None


@dataclass(frozen=True)
class Located:
    walk: Walk
    manifest: Seg | None
    """The commit point: the newest manifest that verifies (None for an empty file)."""
    manifest_payload: bytes

    @property
    def committed_end(self) -> int:
        return self.manifest.end if self.manifest else 0


def locate(reader: ChunkReader, path: str, supported: int, start: int = 0) -> Located:
    """The commit point of the file (rules 1-6 above); ``VersionTooNew`` or ``CorruptStore``.
    With ``start`` > 0 the rules judge only ``[start, size)`` (a walk from a checkpoint)."""
    w = walk(reader, supported, start)
    if w.newer is not None:
        raise VersionTooNew(path, found=w.newer.header.version, supported=supported)
    chosen: Seg | None = None
    payload = b""
    for seg in reversed(w.segments):
        if seg.seg_type == SegType.MANIFEST:
            data = whole_manifest(reader, seg)
            if data is not None:
                chosen, payload = seg, data
                break
    later_torn = False
    if w.stop < w.size:
        found = resync(reader, w.stop, supported)
        if found is not None and found[0] == "manifest" and \
                _names_as_prev(reader, found[1], chosen):
            # Rule 6: a torn same-sync commit right after the commit point; it must be the last.
            later_torn = True
            found = resync(reader, found[1].end, supported, inclusive=True)
        if found is not None and found[0] == "newer":
            raise VersionTooNew(path, found=found[1].header.version, supported=supported)
        if found is not None:
            raise CorruptStore(path, f"{w.stop_reason}, but a committed manifest follows at "
                                     f"offset {found[1].offset}")
    if chosen is not None and chosen.header.flags & Flag.SAME_SYNC and not later_torn:
        # (With a torn commit after it, ``chosen`` is not the last: replay judges its data.)
        fallback = _torn_same_sync(reader, w, chosen, payload, path)
        if fallback is not None:
            chosen, payload = fallback
    if chosen is None and w.size > 0:
        why = w.stop_reason or "no manifest verifies"
        raise CorruptStore(path, f"no committed manifest in its {w.size} bytes ({why}); it is "
                                 "not an RVF file or its first commit is damaged")
    return Located(w, chosen, payload)


def _decode(payload: bytes) -> Manifest | None:
    try:
        return Manifest.decode(payload)
    except ValueError:
        return None  # replay reports it, if it is ever replayed


def _names_as_prev(reader: ChunkReader, found: Seg, chosen: Seg | None) -> bool:
    """Whether ``found`` (a verified manifest behind a broken header) is a same-sync commit
    whose ``prev`` is the commit point ``chosen``: its own data is what the walk broke on."""
    if chosen is None or not found.header.flags & Flag.SAME_SYNC:
        return False
    data = whole_manifest(reader, found)
    m = _decode(data) if data is not None else None
    return m is not None and m.prev == chosen.offset


def _torn_same_sync(reader: ChunkReader, w: Walk, chosen: Seg, payload: bytes,
                    path: str) -> tuple[Seg, bytes] | None:
    """For a SAME_SYNC commit point: ``None`` when its commit is whole (or is not shaped like a
    torn last commit, so replay judges it), else the previous manifest and its payload."""
    m = _decode(payload)
    if m is None or any(s.offset >= chosen.end for s in w.segments):
        return None  # something follows it: not the last commit
    by_offset = {s.offset: s for s in w.segments}
    prev = by_offset.get(m.prev)
    if prev is None or prev.seg_type != SegType.MANIFEST:
        return None
    whole = True
    for ref in (*m.segments, m.witness):
        if not prev.end <= ref.offset < chosen.offset:
            return None  # names data outside its own commit: damage, not a torn commit
        seg = by_offset.get(ref.offset)
        if seg is None or seg.header.seg_id != ref.seg_id or seg.seg_type != ref.seg_type \
                or seg.end > chosen.offset or not payload_verifies(seg, read_payload(reader, seg)):
            whole = False
    if whole:
        return None
    prev_payload = whole_manifest(reader, prev)
    if prev_payload is None:
        raise CorruptStore(path, f"the same-sync commit at offset {chosen.offset} is torn, but "
                                 f"the manifest before it at offset {prev.offset} does not verify")
    return prev, prev_payload


def last_manifest(reader: ChunkReader, supported: int) -> Seg | None:
    """Search backward from the end of the file, at aligned offsets, for the newest intact
    MANIFEST header whose segment fits in the file and whose payload is whole and verifies.
    ``None`` when there is none, or when an intact header of a newer version comes first (the
    caller then opens by the full walk, which decides). Reads about one block for a file that
    ends at its last commit; at most the torn tail more otherwise.

    What it finds is trusted only because no payload this writer appends holds an intact
    header at an aligned offset (``checkpoint.nested_headers``); replay.py says the rest."""
    end = reader.size - reader.size % ALIGN
    while end > 0:
        start = max(0, end - _BACK_BLOCK)
        block = reader.file.read(start, end - start)
        reader.stats.bytes += len(block)
        at = block.rfind(MAGIC_BYTES)
        while at >= 0:
            pos = start + at
            if pos % ALIGN == 0 and pos + HEADER_SIZE <= reader.size:
                raw = block[at:at + HEADER_SIZE]
                if len(raw) < HEADER_SIZE:
                    raw = reader.file.read(pos, HEADER_SIZE)
                reader.stats.headers += 1
                try:
                    header = SegmentHeader.decode(raw)
                except HeaderError:
                    header = None
                if header is not None:
                    if header.version > supported:
                        return None
                    seg = Seg(pos, header)
                    if header.seg_type == SegType.MANIFEST and seg.end <= reader.size and \
                            whole_manifest(reader, seg) is not None:
                        return seg
            at = block.rfind(MAGIC_BYTES, 0, at + len(MAGIC_BYTES) - 1) if at > 0 else -1
        end = start
    return None
