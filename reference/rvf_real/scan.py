"""The walk of a file the real ``@ruvector/rvf`` runtime wrote: its segments from offset 0 as
they lie (64-byte headers back to back, no padding; FORMAT-ruvector.md), the runs of bytes that
are not a segment (``Gap``), and a last segment cut by the end of the file.

``walk(data, anchors) -> Scan``. The walk checks each complete segment's content hash
(``Segment.hash_ok``) and nothing else; ``verify.py`` judges what it finds.
"""

from __future__ import annotations

from dataclasses import dataclass

from crashgate.reference.rvf_real.layout import HEADER_SIZE, MAGIC_BYTES, Header, content_hash

__all__ = ["Gap", "Scan", "Segment", "walk"]


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
    """The walk: every segment and every gap, in file order."""

    segments: tuple[Segment, ...]
    gaps: tuple[Gap, ...]



def walk(data: bytes, anchors: frozenset[int]) -> Scan:
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
