"""Export and describe a real-runtime RVF file, and the ``crashgate rvf status|segments|verify|
export`` commands for it (``reference/rvf/cli.py`` dispatches here when ``is_real_file``).

``records(rf)`` gives the live vectors as ``{"id", "vector", "metadata"}`` dicts sorted by id:
the ingest format of ``crashgate rvf ingest``, so a real file can be re-ingested into the
reference store. ``metadata`` is always ``{}``: the runtime never writes metadata to the file
(rvf-runtime/src/store.rs keeps it in memory only), so none survives a reopen.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from crashgate.backends import CorruptStore
from crashgate.reference.rvf_real.layout import FILE_FORMAT, VERSION
from crashgate.reference.rvf_real.reader import RealFile, read
from crashgate.reference.rvf_real.verify import verify
from crashgate.reference.rvf_real.versions import check_version, claims

__all__ = ["records", "run_export", "run_segments", "run_status", "run_verify", "status",
           "write_export"]

EXIT_OK, EXIT_FAIL, EXIT_TAIL = 0, 1, 2


def records(rf: RealFile) -> list[dict[str, Any]]:
    """The live vectors, sorted by id; CorruptStore when the runtime could not open the file
    (its loaded state would not be what was committed); VersionTooNew when a newer writer wrote
    it (versions.py)."""
    check_version(rf, VERSION)
    if rf.manifest is None or rf.state.load_errors:
        first = rf.state.load_errors[0] if rf.state.load_errors else "no bootable manifest"
        raise CorruptStore(rf.path, f"the real runtime cannot open it ({first}); run "
                           f"'crashgate rvf verify {rf.path}' for every finding")
    return [{"id": vid, "vector": list(rf.state.vectors[vid]), "metadata": {}}
            for vid in rf.state.live]


def write_export(path: str, recs: list[dict[str, Any]]) -> None:
    """Write ``recs`` atomically: JSON lines when ``path`` ends with ``.jsonl``, else one JSON
    array (what ``crashgate rvf ingest --input`` reads)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        if path.endswith(".jsonl"):
            for r in recs:
                fh.write(json.dumps(r) + "\n")
        else:
            json.dump(recs, fh)
    os.replace(tmp, path)


def status(rf: RealFile) -> dict[str, Any]:
    """The file's committed state, as the runtime would load it."""
    m, report = rf.manifest, verify(rf)
    ident = m.identity if m else None
    return {
        "file_format": FILE_FORMAT,
        "path": rf.path,
        "file_bytes": len(rf.data),
        "committed_bytes": report.committed_end,
        "epoch": m.epoch if m else None,
        "dimension": m.dimension if m else None,
        "metric": "not stored in the file (the runtime reopens every file as l2)",
        "profile_id": m.profile_id if m else None,
        "vectors": len(rf.state.live),
        "deleted": len(rf.state.deleted),
        "manifest_total_vectors": m.total_vectors if m else None,
        "segments": len(rf.scan.segments),
        "segment_versions": sorted({s.header.version for s in rf.scan.segments}),
        "reader_version": VERSION,
        "newer_than_reader": claims(rf, VERSION).found is not None,
        "witness_entries": report.witness_entries,
        "file_id": ident.file_id.hex() if ident else None,
        "parent_id": ident.parent_id.hex() if ident else None,
        "lineage_depth": ident.lineage_depth if ident else None,
        "problems": len(report.problems),
        "tail_findings": len(report.tail),
    }


def run_status(args: argparse.Namespace) -> int:
    st = status(read(args.path))
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        for key, value in st.items():
            print(f"{key}: {value}")
    return EXIT_OK


def run_segments(args: argparse.Namespace) -> int:
    rf = read(args.path)
    named: set[int] = set()
    if rf.manifest is not None:
        named = {e.offset for e in rf.manifest.directory} | {rf.manifest.offset}
    rows = [{"index": s.index, "offset": s.offset, "type": s.header.type_name,
             "seg_id": s.header.seg_id, "length": s.header.payload_length,
             "version": s.header.version, "flags": s.header.flags, "complete": s.complete,
             "hash_ok": s.hash_ok, "committed": s.offset in named} for s in rf.scan.segments]
    gaps = [{"offset": g.offset, "end": g.end, "partial_header": g.partial_header}
            for g in rf.scan.gaps]
    if args.json:
        print(json.dumps({"file_format": FILE_FORMAT, "segments": rows, "gaps": gaps}))
        return EXIT_OK
    print(f"{'offset':>10}  {'type':<10} {'seg_id':>7} {'length':>10}  ver  flags   hash  "
          "committed")
    for s, r in zip(rf.scan.segments, rows, strict=True):
        ok = {True: "ok", False: "BAD", None: "-"}[s.hash_ok] if s.complete else "TORN"
        committed = "yes" if r["committed"] else "no"
        print(f"{r['offset']:>10}  {r['type']:<10} {r['seg_id']:>7} {r['length']:>10}  "
              f"{r['version']:>3}  0x{r['flags']:04X}  {ok:<4}  {committed}")
    for g in gaps:
        what = "a header cut by the end of the file" if g["partial_header"] else "not a segment"
        print(f"{g['offset']:>10}  bytes {g['offset']}..{g['end']}: {what}")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    rf = read(args.path)
    report = verify(rf)
    for p in report.problems:
        print(f"FAIL {p}")
    for p in report.tail:
        print(f"FAIL {p}")
    for p in report.notes:
        print(f"note {p}")
    m = rf.manifest
    if report.tail and m is not None:
        print(f"The last good commit is epoch {m.epoch} ({report.committed_end} bytes): the real "
              "runtime opens at it and appends after the rest (it does not truncate). Keep a copy "
              "of the file before writing to it if the torn commit mattered.")
    if report.problems:
        return EXIT_FAIL
    if report.tail:
        return EXIT_TAIL
    print(f"ok ({FILE_FORMAT}): {len(rf.scan.segments)} segments, {report.witness_entries} "
          f"witness entries verify (epoch {m.epoch if m else '-'})")
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    recs = records(read(args.path))
    write_export(args.output, recs)
    print(f"exported {len(recs)} vectors from {args.path} ({FILE_FORMAT}) to {args.output} "
          "(metadata: the real runtime does not store any)")
    return EXIT_OK
