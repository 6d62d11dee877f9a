"""``crashgate arch ...``: ARCH-001's data migration tools over real files.

    crashgate arch import SOURCE... --db missions.db [--dry-run] [--keep] [--batch-size N]
    crashgate arch export --db missions.db --out DIR [--mission ID]...
    crashgate arch export --db missions.db --mission ID --out FILE.json
    crashgate arch status DIR

``import`` is ARCH-001's ``migrate_json_to_sqlite.py``, ``export`` its
``export_sqlite_to_json.py``; ``status`` reads a phase adapter's directory (``phases.py``).
Exit codes: 0 ok, 1 a person must look (a legacy file damaged or differing from the database,
a database damaged or too new; nothing was lost), 3 usage (bad arguments, a path that does not
exist). The reference never imports the harness, so the codes and the usage error are this
module's own, as in ``rvf/cli.py``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from crashgate.backends import (
    os_env,
    write_whole,
)
from crashgate.reference.arch.importer import BATCH, ImportReport, import_files, plan_import
from crashgate.reference.arch.json_state import JsonState, is_backup, legacy_files
from crashgate.reference.arch.missions_db import open_missions_db
from crashgate.reference.arch.status import Unreadable, open_view, read_status
from crashgate.reference.arch.transfer import export_memory, export_missions
from crashgate.reference.cli_common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    InputError,
    guarded,
    positive_int,
)

__all__ = ["InputError", "add_parser"]

_SHOWN = 20
_PROGRESS_EVERY = 1000




def _db_dir(db: str) -> None:
    """``--db``'s directory must exist (opening would create it: a typo would go unseen)."""
    if os.path.isdir(db):
        raise InputError(f"--db {db}: it is a directory; give the mission database's file "
                         "path, e.g. .vibe/state/missions.db")
    parent = os.path.dirname(os.path.abspath(db))
    if not os.path.isdir(parent):
        raise InputError(f"--db {db}: its directory {parent} does not exist; create it first")


def _existing_db(db: str) -> Any:
    """A read-only view of ``--db`` (``status.open_view``: it creates nothing)."""
    if not os.path.isfile(db):
        raise InputError(f"--db {db}: no mission database there; give the path of one "
                         "('crashgate arch import' creates it)")
    view = open_view(db)
    problem = view.problem() or (None if view.sound else f"{db}: {view.older()}; open it "
                                 "once as a writer (crashgate arch import, or an arch-phase "
                                 "adapter) and run this again")
    if problem is not None:
        view.close()
        raise _Refused(problem)
    return view


class _Refused(Exception):
    """A database this command will not read (too new, damaged, older): exit 1."""


# -- import -----------------------------------------------------------------------------------

def _source_files(sources: list[str]) -> tuple[list[str], list[str]]:
    """(the legacy files the SOURCEs name, in order, each once; the backups named explicitly,
    skipped: importing one again would only rename a backup)."""
    fs = os_env().fs
    files: list[str] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for src in sources:
        if os.path.isdir(src):
            found = legacy_files(fs, src)
        elif os.path.isfile(src):
            if is_backup(os.path.basename(src)):
                skipped.append(src)
                continue
            found = [src]
        else:
            raise InputError(f"SOURCE {src}: no such file or directory; give legacy mission "
                             "files (*.json) or the directories holding them")
        for file in found:
            if os.path.realpath(file) not in seen:
                seen.add(os.path.realpath(file))
                files.append(file)
    return files, skipped


def _names(title: str, items: list[str], verbose: bool) -> None:
    if not items:
        return
    shown = items if verbose else items[:_SHOWN]
    rest = f" ... and {len(items) - len(shown)} more (--verbose lists all)" \
        if len(shown) < len(items) else ""
    print(f"  {title}: {', '.join(shown)}{rest}")


def _print_report(report: ImportReport, *, dry_run: bool, keep: bool, verbose: bool,
                  skipped: list[str]) -> None:
    would = "would import" if dry_run else "imported"
    files = len(report.imported) + len(report.already) + len(report.conflicts) + len(
        report.damaged)
    print(f"{would} {len(report.imported)}, already there {len(report.already)}, differing "
          f"{len(report.conflicts)}, damaged {len(report.damaged)} (of {files} legacy files)")
    _names(would, list(report.imported), verbose)
    _names("already there (same document)", list(report.already), verbose)
    for file, mission_id in report.conflicts:
        print(f"  differing: {file}: the database holds another document under mission id "
              f"{mission_id!r}; not imported, the database's is kept")
    for file, why in report.damaged:
        print(f"  damaged: {file}: {why}; left where it is")
    if skipped:
        _names("skipped (backups of files already imported)", skipped, verbose)
    if dry_run:
        print("dry run: nothing was written (no database created, no file renamed)")
    elif keep:
        print("--keep: every legacy file left under its name")
    else:
        print(f"renamed {len(report.renamed)} files to their backups "
              "(<name>_migrated_<UTC time>.json)")
        if verbose:
            for file, backup in report.renamed:
                print(f"  {file} -> {os.path.basename(backup)}")


def _import(args: argparse.Namespace) -> int:
    files, skipped = _source_files(args.sources)
    _db_dir(args.db)
    show = args.verbose or sys.stderr.isatty()
    handled = [0]

    def progress() -> None:
        handled[0] += 1
        if show and handled[0] % _PROGRESS_EVERY == 0:
            print(f"crashgate arch import: {handled[0]}/{len(files)} files", file=sys.stderr,
                  flush=True)

    env = os_env()
    if args.dry_run:
        view = _existing_db(args.db) if os.path.exists(args.db) else None
        try:
            report = plan_import(view, env.fs, files, progress)
            if view is not None and view.maybe_torn():
                raise _Refused(f"{args.db} changed while the dry run read it (a writer ran); "
                               "run the dry run again")
        finally:
            if view is not None:
                view.close()
    else:
        db = open_missions_db(args.db, env)
        try:
            report = import_files(db, env.fs, files, env.clock, progress,
                                  batch=args.batch_size, rename=not args.keep)
        finally:
            db.close()
    _print_report(report, dry_run=args.dry_run, keep=args.keep, verbose=args.verbose,
                  skipped=skipped)
    return EXIT_FAIL if report.conflicts or report.damaged else EXIT_OK


# -- export -----------------------------------------------------------------------------------

def _close_match(view: Any, mission_id: str) -> str:
    near = difflib.get_close_matches(mission_id, view.mission_ids(), n=3)
    return f" (did you mean {', '.join(map(repr, near))}?)" if near else ""


def _export_file(view: Any, mission_id: str, out: str) -> str:
    doc = view.mission_get(mission_id)
    if doc is None:
        raise InputError(f"--mission {mission_id!r}: no such mission in "
                         f"{view.path}{_close_match(view, mission_id)}")
    data = (json.dumps(doc, ensure_ascii=False, indent=2, allow_nan=False) + "\n").encode()
    write_whole(os_env().fs, out, data)
    return f"exported mission {mission_id!r} to {out} ({len(data)} bytes)"


def _export_dir(view: Any, ids: list[str], out: str) -> str:
    missing = [m for m in ids if view.mission_get(m) is None]
    if missing:
        raise InputError(f"--mission {missing[0]!r}: no such mission in "
                         f"{view.path}{_close_match(view, missing[0])}")
    state = JsonState(out, os_env())
    try:
        changed = export_missions(view, state, _nothing, ids or None)
        keys = 0 if ids else export_memory(view, state, _nothing)
    finally:
        state.close()
    what = f"{len(ids)} missions" if ids else \
        f"{len(view.mission_ids())} missions and {len(view.scan(''))} agent_memory keys"
    return (f"exported {what} to {out} ({changed} mission documents and {keys} keys written "
            "or deleted; the rest were already equal)")


def _export(args: argparse.Namespace) -> int:
    ids: list[str] = args.missions or []
    one_file = args.out.endswith(".json")
    if one_file and len(ids) != 1:
        raise InputError(f"--out {args.out}: a .json file holds one mission; give exactly one "
                         "--mission ID, or give --out a directory for the JSON state")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise InputError(f"--out {args.out}: its directory {parent} does not exist; create it "
                         "first")
    if one_file and os.path.isdir(args.out):
        raise InputError(f"--out {args.out}: it is a directory; give a file path")
    view = _existing_db(args.db)
    try:
        line = _export_file(view, ids[0], args.out) if one_file else \
            _export_dir(view, ids, args.out)
        if view.maybe_torn():
            raise _Refused(f"{args.db} changed while it was exported (a writer ran): what was "
                           f"written to {args.out} may mix two commits; run the export again")
    finally:
        view.close()
    print(line)
    return EXIT_OK


def _nothing() -> None:
    return None


# -- status -----------------------------------------------------------------------------------

def _status(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.dir):
        raise InputError(f"{args.dir}: no such directory; give an ARCH-001 phase adapter's "
                         "directory (the one holding control.db and missions.db)")
    st = read_status(args.dir)
    if st.phase is None and st.control_problem is None:
        print("phase: none (no control.db: no arch-phaseN adapter has opened this directory)")
    elif st.phase is not None:
        moving = f", moving to phase {st.moving_to}" if st.moving_to is not None else ""
        print(f"phase: {st.phase}{moving}")
        print("last writer: " + {True: "closed cleanly", None: "not recorded",
                                 False: "open now, or died (its next open reconciles)"}[
                                     st.clean_shutdown])
    if st.control_problem:
        print(f"control.db: {st.control_problem}")
    print(f"divergences queued: {len(st.divergences)}")
    for d in st.divergences[:_SHOWN]:
        print(f"  #{d.seq} {d.op} behind={d.behind} phase {d.stage}: {d.error}")
    print(f"legacy files waiting: {len(st.legacy)}")
    _names("waiting", [os.path.basename(f) for f in st.legacy], False)
    print(f"backups: {len(st.backups)}")
    print(f"archive: {len(st.archive)} files")
    db = st.missions_db
    if not db.present:
        print("missions.db: none yet")
    else:
        if db.schema_version is not None:
            print(f"missions.db schema version: {db.schema_version}")
            print(f"missions.db integrity_check: {'; '.join(db.integrity[:5])}")
        if db.missions is not None:
            print(f"missions: {db.missions}")
        for text in (db.note, db.problem):
            if text:
                print(f"missions.db: {' '.join(text.split())}")
    return EXIT_OK if st.sound else EXIT_FAIL


# -- the group --------------------------------------------------------------------------------

_IMPORT_HELP = """\
Import legacy mission files (the raw JSON documents old sessions wrote, as
.vibe/state/active_mission.json) into an ARCH-001 mission database, by mission id.

What it does: reads every SOURCE (a file, or a directory's top-level *.json files; backups
named <name>_migrated_<time>.json are skipped), checks each is a mission document, and
imports them in transactions of --batch-size files. A mission the database already holds
with the same document is skipped (reruns are safe); one it holds with ANOTHER document is
reported and never overwritten. Each file is renamed to <name>_migrated_<UTC time>.json
only after the transaction that imported it committed, so after a crash every mission is in
the database, or still in its file under the old name, or both.

What it never does: overwrite a mission in the database, delete a legacy file, touch a
damaged file (it is reported and left where it is), or write anything with --dry-run (no
database is created). Exit 0 done; 1 a file was damaged or differed (nothing was lost: a
person must look); 3 usage error."""

_EXPORT_HELP = """\
Export an ARCH-001 mission database back to JSON (ARCH-001's rollback).

With --out DIR: makes DIR a JSON state directory (DIR/missions/, DIR/state/: the layout of an
arch-phaseN adapter's json/) holding exactly what the database holds: every mission and the
agent_memory keys, or only the --mission IDs given. With --mission ID --out FILE.json: writes
that one mission as a raw document, the format 'crashgate arch import' reads.

Every file is written atomically (a temporary file, fsync, rename, fsync of the directory):
after a crash each is the old file or the new one, never a mix. It never changes the
database (it is read without creating any file beside it) and never writes outside --out.
Exit 0 done; 1 the database is damaged, too new or older than this code reads; 3 usage."""

_STATUS_HELP = """\
Show an ARCH-001 phase adapter's directory: its phase (and a promotion in progress), how its
last writer ended, the divergences queued, legacy files waiting for the importer, backups of
imported ones, what archive/ holds, and missions.db's schema version, PRAGMA integrity_check
result and mission count. Read-only: it opens both databases without creating or changing
any file in DIR. Exit 0 sound; 1 a database is damaged, too new or unreadable; 3 usage."""


def _prefix(args: argparse.Namespace) -> str:
    return f"crashgate arch {args.arch_command}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``arch`` group (``crashgate.harness.cli``'s ``COMMAND_MODULES`` hook)."""
    p = sub.add_parser("arch", help="import, export and inspect ARCH-001 mission state "
                       "(JSON <-> SQLite)",
                       description="ARCH-001's data migration tools: legacy JSON mission "
                       "files into SQLite, SQLite back to JSON, and a phase adapter's status.",
                       epilog="Exit codes: 0 ok, 1 a person must look, 3 usage error.")
    cmds = p.add_subparsers(dest="arch_command", metavar="ARCH_COMMAND", parser_class=type(p))

    def show_help(_args: argparse.Namespace) -> int:
        p.print_help()
        return EXIT_USAGE

    p.set_defaults(func=show_help)

    def command(name: str, func: Callable[[argparse.Namespace], int], short: str,
                text: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = cmds.add_parser(
            name, help=short, description=text,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=guarded(func, _prefix, (Unreadable, _Refused)))
        return c

    c = command("import", _import, "import legacy JSON mission files into missions.db",
                _IMPORT_HELP)
    c.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a legacy mission file, or a directory of them (top level only)")
    c.add_argument("--db", required=True, help="the mission database (created if missing)")
    c.add_argument("--dry-run", action="store_true",
                   help="read and check everything, report what would be imported; write "
                   "nothing")
    c.add_argument("--keep", action="store_true", help="do not rename imported files")
    c.add_argument("--batch-size", type=positive_int('files'), default=BATCH, metavar="N",
                   help=f"files per transaction (default {BATCH})")
    c.add_argument("--verbose", action="store_true",
                   help="progress on stderr every 1000 files (without it: only when stderr "
                   "is a terminal), and every name in the summary")
    c = command("export", _export, "export missions.db to JSON state or one mission file",
                _EXPORT_HELP)
    c.add_argument("--db", required=True, help="the mission database to read")
    c.add_argument("--out", required=True, metavar="DIR|FILE.json",
                   help="a directory (JSON state), or a .json file with one --mission")
    c.add_argument("--mission", dest="missions", action="append", metavar="ID",
                   help="export only this mission (repeat for several)")
    c = command("status", _status, "show a phase adapter directory's state (read-only)",
                _STATUS_HELP)
    c.add_argument("dir", metavar="DIR", help="the adapter's directory")
