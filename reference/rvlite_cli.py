"""``crashgate rvf migrate`` and ``crashgate rvf rebuild``: the command-line face of
``rvf_migrate`` (ADR-032's ``rvlite rvf-migrate`` and ``rvlite rvf-rebuild``).

``add_migrate_commands(rvf_subparsers)`` adds both to the ``rvf`` command group's sub-parsers;
``add_parser(sub)`` (the ``COMMAND_MODULES`` hook of ``crashgate.harness.cli``) finds or creates
that group through ``crashgate.reference.rvf.cli.rvf_subparsers`` and adds them.
Exit codes: 0 done (a rerun of a finished migration is a no-op and exits 0), 1 refused or
``--verify`` found a difference, 3 the source cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from crashgate.backends import CrashgateError, os_env
from crashgate.reference.rvf.cli import rvf_subparsers
from crashgate.reference.rvf_migrate import (
    BATCH_SIZE,
    BadSource,
    MigrationReport,
    RebuildReport,
    migrate,
    rebuild,
)
from crashgate.reference.vector_search import METRICS

__all__ = ["add_migrate_commands", "add_parser", "run_migrate", "run_rebuild"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 3


def _report(command: str, make: Callable[[], MigrationReport | RebuildReport]) -> int:
    """Run ``make``, print its report; errors go to stderr as exit 3 (the source or path cannot
    be read) or 1 (refused, locked, damaged)."""
    try:
        report = make()
    except CrashgateError as exc:
        print(f"crashgate rvf {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, BadSource) else EXIT_FAIL
    for line in report.lines():
        print(line)
    ok = report.ok if isinstance(report, MigrationReport) else True
    return EXIT_OK if ok else EXIT_FAIL


def run_migrate(args: argparse.Namespace) -> int:
    return _report("migrate", lambda: migrate(
        args.source, args.dest, os_env(), dry_run=args.dry_run, verify=args.verify,
        batch_size=args.batch_size, metric=args.metric))


def run_rebuild(args: argparse.Namespace) -> int:
    return _report("rebuild", lambda: rebuild(args.path, os_env()))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_migrate_commands(rvf_sub: argparse._SubParsersAction) -> None:
    """Add ``migrate`` and ``rebuild`` to the ``rvf`` group's sub-parsers."""
    p = rvf_sub.add_parser(
        "migrate", help="migrate IndexedDB or JSON vector data into an .rvf file",
        description="Copy vectors from an IndexedDB-model file (a 'vectors' object store of "
        "{id, vector, metadata}) or a JSON array of {\"id\", \"vector\", \"metadata\"} into an "
        ".rvf file. Idempotent and resumable: progress is kept in the .rvf file, so a rerun "
        "(also after a crash) finishes the job or does nothing. The source is never modified.")
    p.add_argument("--from", dest="source", required=True, metavar="SRC",
                   help="the IndexedDB-model file or JSON file to read")
    p.add_argument("--to", dest="dest", required=True, metavar="DEST.rvf",
                   help="the .rvf file to write (created when missing)")
    p.add_argument("--dry-run", action="store_true",
                   help="report what would be done; write nothing")
    p.add_argument("--verify", action="store_true",
                   help="check both directions: every source record in DEST within 1e-6 with "
                   "equal metadata, and nothing in DEST the source lacks")
    p.add_argument("--batch-size", type=_positive, default=BATCH_SIZE, metavar="N",
                   help=f"records per RVF commit (default {BATCH_SIZE})")
    p.add_argument("--metric", choices=METRICS, default="l2",
                   help="distance of a newly created DEST (default l2)")
    p.set_defaults(func=run_migrate)

    r = rvf_sub.add_parser(
        "rebuild", help="rebuild an rvlite metadata cache from its RVF file",
        description="Rewrite PATH.idb, the rvlite metadata cache, from the RVF file PATH (the "
        "source of truth). A damaged cache is moved aside, never deleted.")
    r.add_argument("path", metavar="PATH", help="the rvlite store's RVF file")
    r.set_defaults(func=run_rebuild)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``rvf migrate`` and ``rvf rebuild`` to the ``crashgate`` command."""
    add_migrate_commands(rvf_subparsers(sub))
