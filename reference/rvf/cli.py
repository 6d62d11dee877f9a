"""``crashgate rvf ...``: ADR-032's RVF command group over real files.

    crashgate rvf create PATH --dimension N [--metric l2|cosine]
    crashgate rvf ingest PATH --input FILE        (JSON array of {id, vector, metadata}, or CSV)
    crashgate rvf query PATH --vector "0.1,0.2,..." [--k 10] [--where JSON] [--json]
    crashgate rvf status PATH [--json]      crashgate rvf segments PATH [--json]
    crashgate rvf verify PATH               crashgate rvf compact PATH
    crashgate rvf derive PATH CHILD         crashgate rvf export PATH --output FILE.json

Exit codes: 0 ok, 1 failed (LockHeld, VersionTooNew, CorruptStore, verify found problems),
2 ``verify`` found bytes past the last good commit and nothing else (a torn last commit or
damage to it: the bytes cannot always tell which; the store opens at the commit before),
3 usage (bad arguments or input, a missing store). Other modules add commands to the group with
``rvf_subparsers(sub)``, which returns the group's sub-command parsers (creating the group if it
is not there yet).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from crashgate.backends import (
    BadOption,
    CorruptStore,
    LockHeld,
    VectorRecord,
    VersionTooNew,
    os_env,
)
from crashgate.reference.cli_common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, InputError
from crashgate.reference.rvf.store import RvfStore, open_rvf
from crashgate.reference.rvf_real import export as real_layout
from crashgate.reference.rvf_real.layout import is_real_file
from crashgate.reference.vector_search import METRICS

__all__ = ["InputError", "add_parser", "main", "parse_records", "rvf_subparsers"]

EXIT_TAIL = 2
U64 = 2**64




def _open(path: str, *, write: bool, **options: str) -> RvfStore:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such RVF store; create it first with "
                         f"'crashgate rvf create {path} --dimension N'")
    return open_rvf(path, os_env(), readonly="false" if write else "true", **options)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {value!r} is not a number")
    x = float(value)
    if not math.isfinite(x):
        raise InputError(f"{where}: {value!r} is not a finite number")
    return x


def _vid(value: object, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < U64:
        raise InputError(f"{where}: id {value!r} is not an integer from 0 to 2**64-1")
    return value


def _json_records(text: str, name: str) -> list[tuple[str, VectorRecord]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, list):
        raise InputError(f"{name}: expected a JSON array of {{\"id\", \"vector\", \"metadata\"}} "
                         f"objects, found a {type(doc).__name__}")
    out = []
    for i, item in enumerate(doc):
        where = f"{name}: item {i}"
        if not isinstance(item, dict) or "id" not in item or "vector" not in item:
            raise InputError(f"{where}: expected an object with 'id' and 'vector'")
        vid = _vid(item["id"], where)
        vec = item["vector"]
        if not isinstance(vec, list) or not vec:
            raise InputError(f"{where} (id {vid}): 'vector' must be a non-empty list of numbers")
        vector = [_number(x, f"{where} (id {vid}) vector[{j}]") for j, x in enumerate(vec)]
        meta = item.get("metadata", {})
        if not isinstance(meta, dict):
            raise InputError(f"{where} (id {vid}): 'metadata' must be an object")
        out.append((f"{where} (id {vid})", VectorRecord.of(vid, vector, meta)))
    return out


def _csv_records(text: str, name: str) -> list[tuple[str, VectorRecord]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or "id" not in [h.strip() for h in header]:
        raise InputError(f"{name}: line 1: a CSV needs a header with an 'id' column and one "
                         "column per dimension")
    cols = [h.strip() for h in header]
    id_col = cols.index("id")
    out = []
    for row in reader:
        where = f"{name}: line {reader.line_num}"
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(cols):
            raise InputError(f"{where}: {len(row)} fields, the header has {len(cols)}")
        vid = _vid(row[id_col], where)
        vector = []
        for j, cell in enumerate(row):
            if j == id_col:
                continue
            try:
                vector.append(_number(float(cell), f"{where} column {cols[j]!r}"))
            except ValueError:
                raise InputError(f"{where} column {cols[j]!r}: {cell!r} is not a number") from None
        out.append((f"{where} (id {vid})", VectorRecord.of(vid, vector)))
    return out


def parse_records(path: str, dimension: int | None) -> list[VectorRecord]:
    """The records of a JSON or CSV input file, checked; ``InputError`` names the item/line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    is_json = path.lower().endswith(".json") or (
        not path.lower().endswith(".csv") and text.lstrip()[:1] == "[")
    items = _json_records(text, path) if is_json else _csv_records(text, path)
    seen: dict[int, str] = {}
    dim = dimension
    for where, rec in items:
        if rec.id in seen:
            raise InputError(f"{where}: id {rec.id} already appears at {seen[rec.id]}")
        seen[rec.id] = where
        if dim is None:
            dim = len(rec.vector)
        if len(rec.vector) != dim:
            raise InputError(f"{where}: the vector has {len(rec.vector)} numbers, the store's "
                             f"dimension is {dim}")
    return [rec for _, rec in items]


def _parse_vector(text: str) -> list[float]:
    parts = [p for p in text.strip().strip("[]").split(",")]
    out = []
    for i, part in enumerate(parts):
        try:
            out.append(_number(float(part), f"--vector item {i}"))
        except ValueError:
            raise InputError(f"--vector item {i}: {part.strip()!r} is not a number") from None
    return out


# -- commands ---------------------------------------------------------------------------------

def _create(args: argparse.Namespace) -> int:
    if args.dimension < 1:
        raise InputError(f"--dimension {args.dimension}: a dimension must be at least 1")
    if os.path.exists(args.path) and os.path.getsize(args.path) > 0:
        raise InputError(f"{args.path} already exists; ingest into it, or remove it first")
    with open_rvf(args.path, os_env(), dimension=str(args.dimension), metric=args.metric) as s:
        print(f"created {s.path} (dimension {s.dimension}, metric {s.metric}, "
              f"file id {s.file_id.hex()})")
    return EXIT_OK


def _ingest(args: argparse.Namespace) -> int:
    with _open(args.path, write=True) as s:
        records = parse_records(args.input, s.dimension)
        s.upsert(records)
        print(f"ingested {len(records)} vectors into {s.path} (epoch {s.epoch}, "
              f"{s.count()} live)")
    return EXIT_OK


def _query(args: argparse.Namespace) -> int:
    vector = _parse_vector(args.vector)
    if args.k < 0:
        raise InputError(f"--k {args.k}: k must be >= 0")
    where = None
    if args.where:
        try:
            where = json.loads(args.where)
        except json.JSONDecodeError as exc:
            raise InputError(f"--where: {exc.msg} at column {exc.colno}") from None
        if not isinstance(where, dict):
            raise InputError("--where must be a JSON object of metadata equalities")
    with _open(args.path, write=False) as s:
        if s.dimension is not None and len(vector) != s.dimension:
            raise InputError(f"--vector has {len(vector)} numbers, {s.path} holds dimension "
                             f"{s.dimension}")
        hits = s.query(vector, args.k, where)
    if args.json:
        print(json.dumps([{"id": h.id, "distance": h.distance, "metadata": dict(h.metadata)}
                          for h in hits]))
    else:
        for h in hits:
            print(f"{h.id}\t{h.distance!r}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    if is_real_file(args.path):  # the real runtime's layout: rvf_real/FORMAT-ruvector.md
        return real_layout.run_status(args)
    with _open(args.path, write=False) as s:
        st = s.status()
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        for key, value in st.items():
            if isinstance(value, dict):
                for k2, v2 in value.items():
                    print(f"{key}.{k2}: {v2}")
            else:
                print(f"{key}: {value}")
    return EXIT_OK


def _segments(args: argparse.Namespace) -> int:
    if is_real_file(args.path):  # the real runtime's layout: rvf_real/FORMAT-ruvector.md
        return real_layout.run_segments(args)
    with _open(args.path, write=False) as s:
        segs = s.segments()
    if args.json:
        print(json.dumps([dataclasses.asdict(x) for x in segs]))
        return EXIT_OK
    print(f"{'offset':>10}  {'type':<14} {'seg_id':>7} {'length':>10}  ver  flags   valid")
    for x in segs:
        print(f"{x.offset:>10}  {x.type_name:<14} {x.seg_id:>7} {x.length:>10}  {x.version:>3}  "
              f"0x{x.flags:04X}  {'yes' if x.valid else 'NO'}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    if is_real_file(args.path):  # the real runtime's layout: rvf_real/FORMAT-ruvector.md
        return real_layout.run_verify(args)
    with _open(args.path, write=False) as s:   # a reader: the tail is left as it is
        problems = s.verify()
        tail = s.tail()
        st = s.status()
    for p in problems:
        print(f"FAIL {p}")
    if tail is not None:
        print(f"FAIL {tail}. A torn last commit or damage: the last good commit is epoch "
              f"{st['epoch']} ({st['committed_bytes']} bytes); the next writer truncates the "
              "rest. Keep a copy of the file before writing to it if that commit mattered.")
    if problems:
        return EXIT_FAIL
    if tail is not None:
        return EXIT_TAIL
    print(f"ok: {st['witness_entries']} witness entries and {st['segments']} segments verify "
          f"(epoch {st['epoch']})")
    return EXIT_OK


def _compact(args: argparse.Namespace) -> int:
    with _open(args.path, write=True) as s:
        before = os.path.getsize(s.path)
        s.compact()
        after = os.path.getsize(s.path)
    print(f"compacted {args.path}: {before} -> {after} bytes")
    return EXIT_OK


def _derive(args: argparse.Namespace) -> int:
    if os.path.exists(args.child):
        raise InputError(f"{args.child} already exists; give derive a new path")
    with _open(args.path, write=False) as parent, parent.derive(args.child) as child:
        print(f"derived {child.path} from {parent.path}: file id {child.file_id.hex()}, "
              f"parent id {child.parent_id.hex()}, depth {child.lineage_depth}, "
              f"{child.count()} vectors")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    if is_real_file(args.path):  # the real runtime's layout: rvf_real/FORMAT-ruvector.md
        return real_layout.run_export(args)
    with _open(args.path, write=False) as s:
        records = s.fetch(s.ids())
    doc = [{"id": r.id, "vector": list(r.vector), "metadata": dict(r.metadata)} for r in records]
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    os.replace(tmp, args.output)
    print(f"exported {len(doc)} vectors from {args.path} to {args.output}")
    return EXIT_OK


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (LockHeld, VersionTooNew, CorruptStore) as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_FAIL
        except (InputError, BadOption) as exc:
            print(f"crashgate rvf: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return run


def rvf_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``rvf`` group's sub-command parsers, creating the group on first use, so that another
    module can add commands to it: ``rvf_subparsers(sub).add_parser("migrate", ...)``."""
    existing = sub.choices.get("rvf")
    if existing is not None:
        cmds: argparse._SubParsersAction = getattr(existing, "_rvf_commands")  # noqa: B009
        return cmds
    p = sub.add_parser("rvf", help="create, ingest, query and inspect RVF files (ADR-032)",
                       description="RVF files: vectors, key-value records and a witness chain in "
                       "one append-only file of segments.",
                       epilog="Exit codes: 0 ok, 1 failed, 3 usage error.")
    cmds = p.add_subparsers(dest="rvf_command", metavar="RVF_COMMAND", parser_class=type(p))

    def show_help(_args: argparse.Namespace) -> int:
        p.print_help()
        return EXIT_USAGE

    p.set_defaults(func=show_help)
    setattr(p, "_rvf_commands", cmds)  # noqa: B010
    return cmds


def add_parser(sub: argparse._SubParsersAction) -> None:
    cmds = rvf_subparsers(sub)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str
                ) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = cmds.add_parser(name, help=help, description=help)
        c.set_defaults(func=_guard(func))
        return c

    c = command("create", _create, "create a new, empty .rvf store")
    c.add_argument("path")
    c.add_argument("--dimension", type=int, required=True, help="vector dimension")
    c.add_argument("--metric", choices=METRICS, default="l2")
    c = command("ingest", _ingest, "add vectors from a JSON array or a CSV file (one commit)")
    c.add_argument("path")
    c.add_argument("--input", required=True, help="JSON [{\"id\", \"vector\", \"metadata\"}] or "
                   "CSV with an 'id' column and one column per dimension")
    c = command("query", _query, "the k nearest vectors (exact search)")
    # A vector such as "-0.3,0.1" must be taken as --vector's value, not as an option:
    # argparse does so for what its negative-number pattern matches.
    c._negative_number_matcher = re.compile(r"^-\.?\d")
    c.add_argument("path")
    c.add_argument("--vector", required=True, help="comma-separated numbers")
    c.add_argument("--k", type=int, default=10)
    c.add_argument("--where", help="JSON object: keep hits whose metadata equals these values")
    c.add_argument("--json", action="store_true", help="print JSON instead of 'id<TAB>distance'")
    for name, func, text in (("status", _status, "epoch, counts, lineage and sizes"),
                             ("segments", _segments, "every segment of the file")):
        c = command(name, func, text)
        c.add_argument("path")
        c.add_argument("--json", action="store_true")
    c = command("verify", _verify, "recompute the witness chain and every hash (exit 1 on "
                "a problem; exit 2 when the only finding is bytes past the last good commit: "
                "a torn last commit or damage)")
    c.add_argument("path")
    c = command("compact", _compact, "rewrite the file with only live data")
    c.add_argument("path")
    c = command("derive", _derive, "create a child store with lineage that sees this one's data")
    c.add_argument("path")
    c.add_argument("child")
    c = command("export", _export, "write the vectors as JSON (the ingest format)")
    c.add_argument("path")
    c.add_argument("--output", required=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Run ``crashgate rvf`` alone (``main(["rvf", "status", "x.rvf"])``), for tests and scripts."""
    parser = _Parser(prog="crashgate")
    add_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    code: int = func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
