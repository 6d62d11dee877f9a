"""Every check of a real-runtime RVF file, each finding naming its segment, offset and check.

``verify(rf, supported=1) -> Report`` sorts findings three ways (a file a newer writer wrote,
``versions.py``, gives one ``version`` problem, "version 2: newer than this reader (1)", and
nothing else: this reader cannot judge what a newer writer wrote):

- ``problems``: damage at or before the last commit (the end of the manifest the runtime boots
  from): a wrong magic or version, a header field the runtime always writes as zero that is not,
  a payload whose content hash fails, a directory entry naming no such segment, a payload that
  does not parse, a witness whose previous-hash field links to nothing, no bootable manifest.
- ``tail``: bytes past the last commit: a segment or header cut by the end of the file (a torn
  append), or complete VEC/JOURNAL/MANIFEST segments no manifest commits (the runtime boots from
  the manifest before them and never reads them).
- ``notes``: what the runtime leaves behind in normal operation and ignores: a segment no
  manifest names before the last commit (a commit that did not finish, then a later write
  appended after it), bytes that are not a segment before it, a witness appended without a
  manifest after it (``compact`` does that), the witness chain restarting at zero (every open
  and every compaction restart it).

Check names: ``magic``, ``version``, ``header fields``, ``payload checksum``, ``torn tail``,
``uncommitted``, ``manifest``, ``manifest reference``, ``vec payload``, ``journal payload``,
``witness payload``, ``witness chain``, ``not referenced``.
"""

from __future__ import annotations

from dataclasses import dataclass

from crashgate.reference.rvf_real.layout import (
    HEADER_SIZE,
    JOURNAL,
    MANIFEST,
    SEG_TYPES,
    TAIL_SCAN,
    VEC,
    VERSION,
    WITNESS,
    content_hash,
    type_name,
    witness_hash,
)
from crashgate.reference.rvf_real.manifest import parse_manifest
from crashgate.reference.rvf_real.payloads import parse_journal, parse_vec
from crashgate.reference.rvf_real.reader import Problem, RealFile, witness_entries
from crashgate.reference.rvf_real.scan import Segment
from crashgate.reference.rvf_real.versions import claims, upgrade_hint

__all__ = ["Report", "verify"]

_ZERO_FIELDS = ("flags", "timestamp_ns", "checksum_algo", "compression", "reserved_0",
                "reserved_1", "uncompressed_len", "alignment_pad")


@dataclass(frozen=True)
class Report:
    """``committed_end``: the byte after the manifest the runtime boots from (0 without one)."""

    problems: tuple[Problem, ...]
    tail: tuple[Problem, ...]
    notes: tuple[Problem, ...]
    committed_end: int
    witness_entries: int
    chain_restarts: int


def _header_problems(s: Segment, supported: int) -> list[Problem]:
    h, out = s.header, []
    if h.version > supported:   # the file is not newer (verify checked): one damaged byte
        out.append(Problem(s.index, s.offset, "version",
                           f"version byte {h.version}, above this reader's {supported}, and no "
                           "other header declares a newer version: a damaged header"))
    if h.seg_type not in SEG_TYPES:
        out.append(Problem(s.index, s.offset, "header fields",
                           f"segment type 0x{h.seg_type:02x} is not one the runtime defines"))
    for name in _ZERO_FIELDS:
        value = getattr(h, name)
        if value:
            out.append(Problem(s.index, s.offset, "header fields",
                               f"{name} is {value:#x}; the runtime always writes 0 there"))
    return out


def _segment_problems(rf: RealFile, s: Segment, supported: int) -> list[Problem]:
    out = _header_problems(s, supported)
    if s.cut_at is not None:
        return out  # a torn append the runtime wrote after: a note (verify), not damage
    if not s.complete:
        have = len(rf.data) - s.payload_start
        out.append(Problem(s.index, s.offset, "torn tail",
                           f"{s.label()}: the payload is cut by the end of the file ({have} of "
                           f"{s.header.payload_length} bytes)"))
        return out
    payload = rf.data[s.payload_start:s.end]
    if s.hash_ok is False:
        out.append(Problem(s.index, s.offset, "payload checksum",
                           f"{s.label()}: content hash {s.header.content_hash.hex()} stored, "
                           f"{content_hash(payload).hex()} computed over bytes "
                           f"{s.payload_start}..{s.end}"))
    kind = s.header.seg_type
    if kind == JOURNAL and parse_journal(payload) is None:
        out.append(Problem(s.index, s.offset, "journal payload",
                           f"{s.label()}: {len(payload)} bytes are not a journal header of 16 "
                           "bytes plus 12-byte delete entries"))
    if kind == MANIFEST and parse_manifest(payload, s.offset) is None:
        out.append(Problem(s.index, s.offset, "manifest",
                           f"{s.label()}: the payload does not parse as a manifest (the runtime "
                           "skips it and boots from an earlier one)"))
    return out


def _manifest_problems(rf: RealFile) -> tuple[list[Problem], set[int]]:
    """Problems of the manifest the runtime boots from, and the offsets its directory names."""
    m = rf.manifest
    if m is None:
        return [Problem(None, 0, "manifest", "no manifest the runtime can boot from in the last "
                        f"{TAIL_SCAN} bytes (its open fails: ManifestNotFound)")], set()
    own = rf.segment_at(m.offset)
    assert own is not None  # the runtime's scan found a complete header there
    out: list[Problem] = []
    named = {e.offset for e in m.directory}
    for e in m.directory:
        s = rf.segment_at(e.offset)
        if s is None:
            out.append(Problem(None, e.offset, "manifest reference",
                               f"the manifest at offset {m.offset} names {type_name(e.seg_type)} "
                               f"segment id {e.seg_id} here; no segment header starts here"))
            continue
        h = s.header
        found = (h.seg_id, h.payload_length, h.seg_type)
        if found != (e.seg_id, e.payload_length, e.seg_type):
            out.append(Problem(s.index, s.offset, "manifest reference",
                               f"the manifest at offset {m.offset} names (id {e.seg_id}, length "
                               f"{e.payload_length}, {type_name(e.seg_type)}); the header says "
                               f"(id {h.seg_id}, length {h.payload_length}, {h.type_name})"))
        if e.seg_type == VEC and s.complete:
            parsed = parse_vec(rf.data[s.payload_start:s.end])
            if parsed is None or parsed[0] != m.dimension:
                what = "does not parse" if parsed is None else f"has dimension {parsed[0]}"
                out.append(Problem(s.index, s.offset, "vec payload",
                                   f"{s.label()}: {what}; the manifest's dimension is "
                                   f"{m.dimension}"))
    vectors = rf.state.vectors
    if not rf.state.load_errors and m.total_vectors != len(vectors):
        out.append(Problem(own.index, own.offset, "manifest",
                           f"total_vectors is {m.total_vectors}; its vec segments hold "
                           f"{len(vectors)} distinct ids"))
    missing = sorted(set(m.deleted_ids) - set(vectors))
    if missing and not rf.state.load_errors:
        out.append(Problem(own.index, own.offset, "manifest",
                           f"deleted ids {missing[:5]} are in no vec segment it names"))
    if len(rf.data) - m.offset > TAIL_SCAN:
        out.append(Problem(own.index, own.offset, "manifest",
                           f"the last bootable manifest is more than {TAIL_SCAN} bytes from the "
                           "end; the runtime looks no further and fails to open"))
    if own.hash_ok is False:
        out.append(Problem(own.index, own.offset, "payload checksum",
                           "this is the manifest the runtime boots from: it does not check the "
                           "hash, so it would trust a damaged directory"))
    return out, named


def _witness_chain(rf: RealFile) -> tuple[list[Problem], list[Problem], int, int]:
    problems: list[Problem] = []
    notes: list[Problem] = []
    prev: tuple[Segment, bytes] | None = None
    restarts = 0
    entries = witness_entries(rf)
    for s, w in entries:
        payload = rf.data[s.payload_start:s.end]
        if w is None:
            problems.append(Problem(s.index, s.offset, "witness payload",
                                    f"{s.label()}: {len(payload)} bytes are not type, timestamp, "
                                    "action length, action and a 32-byte previous hash"))
            prev = None
            continue
        if w.prev_hash == bytes(32):
            if prev is not None:
                restarts += 1
                notes.append(Problem(s.index, s.offset, "witness chain",
                                     "the chain restarts here (previous hash zero: the runtime "
                                     "starts a new chain at every open and compaction)"))
        elif prev is None or w.prev_hash != witness_hash(prev[1]):
            after = f"the witness at segment {prev[0].index}" if prev else "no earlier witness"
            problems.append(Problem(s.index, s.offset, "witness chain",
                                    f"previous hash {w.prev_hash.hex()[:16]}... matches neither "
                                    f"zero nor the hash of {after}"))
        prev = (s, payload)
    return problems, notes, len(entries), restarts


def verify(rf: RealFile, supported: int = VERSION) -> Report:
    """Run every check on ``rf`` as a reader at segment version ``supported`` (nothing is
    written)."""
    committed_end = 0
    if rf.manifest is not None:
        own = rf.segment_at(rf.manifest.offset)
        committed_end = own.end if own is not None else 0
    vc = claims(rf, supported)
    if vc.found is not None:
        first = vc.newer[0]
        return Report((Problem(first.index, first.offset, "version",
                               f"{vc.describe()}; upgrade: {upgrade_hint(vc.found)}"),),
                      (), (), committed_end, 0, 0)
    found: list[Problem] = []
    notes: list[Problem] = []
    manifest_found, named = _manifest_problems(rf)
    found += manifest_found
    for s in rf.scan.segments:
        found += _segment_problems(rf, s, supported)
        unnamed = s.offset not in named and s.offset != (rf.manifest.offset if rf.manifest else -1)
        if unnamed and s.cut_at is not None:
            notes.append(Problem(s.index, s.offset, "not referenced",
                                 f"{s.label()}: cut short at offset {s.cut_at} (of "
                                 f"{s.header.payload_length} payload bytes, "
                                 f"{s.cut_at - s.payload_start} were written) and a later "
                                 "write appended after it; no manifest names it"))
        elif unnamed and s.complete and s.hash_ok is not False:
            past = s.offset >= committed_end
            if past and s.header.seg_type != WITNESS:
                found.append(Problem(s.index, s.offset, "uncommitted",
                                     f"{s.label()}: written after the last manifest the runtime "
                                     "boots from; no manifest commits it"))
            else:
                notes.append(Problem(s.index, s.offset, "not referenced",
                                     f"{s.label()}: no manifest names it; the runtime never reads "
                                     "it" + (" (a witness written without a manifest after it)"
                                             if s.header.seg_type == WITNESS else "")))
    for g in rf.scan.gaps:
        if g.partial_header:
            found.append(Problem(None, g.offset, "torn tail",
                                 f"a segment header cut by the end of the file ({g.end - g.offset}"
                                 f" of {HEADER_SIZE} bytes)"))
        elif g.offset in named:
            continue  # reported above as a manifest reference: the named header is not there
        elif g.offset < committed_end:
            notes.append(Problem(None, g.offset, "not referenced",
                                 f"bytes {g.offset}..{g.end} are not a segment and no manifest "
                                 "names them (a torn write the runtime later appended after)"))
        else:
            found.append(Problem(None, g.offset, "magic",
                                 f"bytes {g.offset}..{g.end} past the last commit are not a "
                                 "segment"))
    chain_problems, chain_notes, entries, restarts = _witness_chain(rf)
    found += chain_problems
    notes += chain_notes
    found += [p for p in rf.state.load_errors if p not in found]
    problems = tuple(p for p in found if p.offset < committed_end and p.check != "torn tail")
    tail = tuple(p for p in found if p not in problems)
    return Report(problems, tail, tuple(notes), committed_end, entries, restarts)
