"""``crashgate patterns ...``: the pattern migration guide's ``migrate-patterns.ts`` over real
files, through any pattern migrator (``backends.pattern_migrator``).

    crashgate patterns migrate  [--source DB] [--target PATH] [--dry-run] [--batch-size N]
                                [--no-backup] [--dimension N] [--verbose]
    crashgate patterns status   [--source DB] [--target PATH]
    crashgate patterns rollback [--source DB] [--target PATH]

Each takes ``--target-backend SPEC`` (default ``rvf``) and ``--migrator SPEC`` (default
``agentdb-to-rvf``). Exit codes: 0 done (``status``: coverage complete), 1 a person must look
(a failed or refused migration, incomplete coverage, a failed rollback, a damaged, locked or
too new file), 3 usage. The reference never imports the harness, so the codes and the usage
error are this module's own, as in ``arch/cli.py``; unknown backend and migrator names reach
``crashgate``'s own handler (exit 3, one line with close matches).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from crashgate.backends import (
    PatternMigrationError,
    PatternMigrator,
    os_env,
    resolve,
    resolve_pattern_migrator,
)
from crashgate.backends.pattern_migrator import DEFAULT_PATTERN_MIGRATOR, DEFAULT_TARGET_BACKEND
from crashgate.reference.cli_common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    InputError,
    guarded,
    positive_int,
)

__all__ = ["add_parser"]

SOURCE, TARGET = "./data/agentic-qe.db", "./data/patterns.ruvector"
BATCH_SIZE, DIMENSION = 1000, 384




def _migrator(args: argparse.Namespace) -> PatternMigrator:
    resolve(args.target_backend)   # an unknown name: one line, exit 3, before anything runs
    return resolve_pattern_migrator(args.migrator).load()


def _existing_source(args: argparse.Namespace) -> None:
    if not os.path.isfile(args.source):
        raise InputError(f"--source {args.source}: no such file; give the AgentDB pattern "
                         f"database (default {SOURCE})")


def _migrate(args: argparse.Namespace) -> int:
    migrator = _migrator(args)
    _existing_source(args)
    parent = os.path.dirname(os.path.abspath(args.target))
    if not os.path.isdir(parent):
        raise InputError(f"--target {args.target}: its directory {parent} does not exist; "
                         "create it first")
    show = args.verbose or sys.stderr.isatty()

    def progress(line: str) -> None:
        if show:
            print(f"crashgate patterns migrate: {line}", file=sys.stderr, flush=True)

    result = migrator.migrate(
        args.source, args.target, os_env(), target_backend=args.target_backend,
        batch_size=args.batch_size, dry_run=args.dry_run, backup=not args.no_backup,
        dimension=args.dimension, progress=progress)
    if result.dry_run:
        print(f"dry run: {result.total} patterns checked (dimension {args.dimension}); would "
              f"migrate them in {result.batches} batches of {args.batch_size} into "
              f"{args.target} ({args.target_backend}); nothing was written")
        return EXIT_FAIL if result.errors else EXIT_OK
    print(f"migrated {result.migrated} patterns, {result.skipped} already there, of "
          f"{result.total} in {result.batches} batches ({result.duration:.2f} s) into "
          f"{args.target} ({args.target_backend})")
    print(f"backup: {result.backup}" if result.backup else "backup: none (--no-backup)")
    for error in result.errors:
        print(f"error: {error}")
    if result.errors:
        print("migration FAILED: the target is incomplete; run it again to finish, or "
              "'crashgate patterns rollback' to undo it")
        return EXIT_FAIL
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    migrator = _migrator(args)
    _existing_source(args)
    coverage = migrator.status(args.source, args.target, os_env(),
                                      target_backend=args.target_backend)
    for line in coverage.lines():
        print(line)
    return EXIT_OK if coverage.complete else EXIT_FAIL


def _rollback(args: argparse.Namespace) -> int:
    migrator = _migrator(args)
    _existing_source(args)
    result = migrator.rollback(args.source, args.target, os_env(),
                                      target_backend=args.target_backend)
    if result.restored_from:
        print(f"restored {args.source} from {result.restored_from} (the backup is kept)")
    else:
        print(f"{args.source}: no backup to restore (the migration made none, or failed "
              "before it); the migration never writes its source")
    print(f"removed {len(result.removed)} files: {', '.join(result.removed) or '(none)'}")
    for error in result.errors:
        print(f"error: {error}")
    return EXIT_FAIL if result.errors else EXIT_OK


_MIGRATE_HELP = """\
Migrate test patterns from an AgentDB pattern database (SQLite) into a vector store, as the
pattern migration guide's migrate-patterns.ts does, more carefully.

What it does: checks every pattern first (an embedding of another --dimension is an error
naming the pattern, and nothing is written); writes a journal beside the target
(<target>.migration.json); backs the source up with SQLite's backup API (a consistent copy,
commits still in its WAL included) to <source>.backup-<UTC time>.db; then copies the patterns
in batches of --batch-size, each one atomic upsert. Every pattern comes through unchanged: id,
embedding and metadata (the guide's transformations are not applied).

A failed batch fails the migration (exit 1). A rerun, also after a crash, writes only what
is missing or different: no pattern is duplicated or lost. It never writes into a target it
did not create (no journal): give a new --target. --dry-run checks everything and writes
nothing anywhere (no journal, no backup, no target). Exit 0 done; 1 failed or refused; 3
usage."""

_STATUS_HELP = """\
Report, exactly, how the target holds the source's patterns: the counts, the ids missing from
the target, extra in it, or differing (embedding beyond 1e-6, or metadata). Read-only. Exit 0
when coverage is complete, 1 when it is not."""

_ROLLBACK_HELP = """\
Roll back the last migration into --target: restore the source from the migration's backup
(SQLite's backup API, one transaction: the source is the old one or the backup after any
crash; the backup is kept) and remove what the migration wrote (the target and its side files,
then the journal). Refused for a target without the migration's journal. Rerun it after a
crash to finish. Exit 0 done; 1 refused or failed; 3 usage."""


def _prefix(args: argparse.Namespace) -> str:
    return f"crashgate patterns {args.patterns_command}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``patterns`` group (``crashgate.harness.cli``'s ``COMMAND_MODULES`` hook)."""
    p = sub.add_parser("patterns", help="migrate AgentDB test patterns to a vector store, "
                       "check coverage, roll back",
                       description="The pattern migration guide's tools (AgentDB to RuVector): "
                       "migrate, status, rollback.",
                       epilog="Exit codes: 0 ok, 1 a person must look, 3 usage error.")
    cmds = p.add_subparsers(dest="patterns_command", metavar="PATTERNS_COMMAND",
                            parser_class=type(p))

    def show_help(_args: argparse.Namespace) -> int:
        p.print_help()
        return EXIT_USAGE

    p.set_defaults(func=show_help)

    def command(name: str, func: Callable[[argparse.Namespace], int], short: str,
                text: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = cmds.add_parser(
            name, help=short, description=text,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=guarded(func, _prefix, (PatternMigrationError,)))
        c.add_argument("--source", default=SOURCE, metavar="PATH",
                       help=f"the AgentDB pattern database (default {SOURCE})")
        c.add_argument("--target", default=TARGET, metavar="PATH",
                       help=f"the path the target backend opens (default {TARGET})")
        c.add_argument("--target-backend", default=DEFAULT_TARGET_BACKEND, metavar="SPEC",
                       help="the target's backend, options allowed: "
                       "'rvf?index=hnsw' (default rvf)")
        c.add_argument("--migrator", default=DEFAULT_PATTERN_MIGRATOR, metavar="SPEC",
                       help="the pattern migrator: a registered name or "
                       f"'package.module:factory' (default {DEFAULT_PATTERN_MIGRATOR})")
        return c

    c = command("migrate", _migrate, "migrate the patterns (backup first, in batches)",
                _MIGRATE_HELP)
    c.add_argument("--dry-run", action="store_true",
                   help="validate without writing (nothing anywhere)")
    c.add_argument("--batch-size", type=positive_int(), default=BATCH_SIZE, metavar="N",
                   help=f"patterns per batch (default {BATCH_SIZE})")
    c.add_argument("--no-backup", action="store_true", help="skip the backup (not "
                   "recommended: rollback then cannot restore the source)")
    c.add_argument("--dimension", type=positive_int(), default=DIMENSION, metavar="N",
                   help=f"the embeddings' dimension (default {DIMENSION})")
    c.add_argument("--verbose", action="store_true",
                   help="progress on stderr after every batch (without it: only when stderr "
                   "is a terminal)")
    command("status", _status, "exact coverage of the source by the target (read-only)",
            _STATUS_HELP)
    command("rollback", _rollback, "restore the source from the backup, remove the target",
            _ROLLBACK_HELP)
