"""``crashgate certify BACKEND...``: every row of ADR-032's tables against each backend, a
certificate per backend under ``reports/``, and the verdict table at the end."""

from __future__ import annotations

import argparse
import functools
import random
import sys
import tempfile
import time
from pathlib import Path

from crashgate.backends import (
    close_matches_for,
    resolve,
    resolve_migrator,
    resolve_pattern_migrator,
)
from crashgate.harness.certify import certify, probe_declaration
from crashgate.harness.cli import JOBS_HELP, OutputClosed, UsageError, jobs_option
from crashgate.harness.crashpool import available_cores
from crashgate.harness.report import verdict_table, write_certificate
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.adr032 import all_rows
from crashgate.scenarios.table import BUDGETS, Row, RowContext

__all__ = ["add_parser", "select_rows", "writable_dir"]

EXIT = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.UNKNOWN: 2}


class ScenarioNotFound(UsageError):
    """A ``--scenario`` that names no row (exit 3)."""


def select_rows(wanted: list[str] | None) -> list[Row]:
    """Rows by key (``adr032-3``, ``inv-1``, ``model``), or all of them."""
    rows = all_rows()
    if not wanted:
        return rows
    by_key = {r.key: r for r in rows}
    out = []
    for w in wanted:
        if w not in by_key:
            hints = close_matches_for(w, by_key)
            hint = f" Did you mean {hints[0]!r}?" if hints else ""
            raise ScenarioNotFound(
                f"--scenario {w!r} is not a row.{hint}\n  Rows: {', '.join(by_key)}")
        out.append(by_key[w])
    return out


def writable_dir(option: str, path: Path) -> Path:
    """``path`` as a directory crashgate can write into, created if missing; ``UsageError``
    (before any work) when it is a file, sits under a file, or cannot be written."""
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"{option} {path} is a file; give a directory (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror}); give a "
                         "directory you can write to") from None
    return path


def run(args: argparse.Namespace) -> int:
    rows = select_rows(args.scenario)
    budget = BUDGETS[args.budget]
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    specs = [resolve(name) for name in args.backends]
    decls = [probe_declaration(s) for s in specs]   # bad names and options fail here, exit 3
    migrator = None
    if args.migrator is not None:
        named = resolve_migrator(args.migrator)
        named.load()   # a bad name or a module that does not import: exit 3 now, not per row
        migrator = named.label
    pattern_migrator = None
    if args.pattern_migrator is not None:
        named_p = resolve_pattern_migrator(args.pattern_migrator)
        named_p.load()   # as --migrator: a bad name is exit 3 now, not a failure per row
        pattern_migrator = named_p.label
    out = writable_dir("--out", Path(args.out))
    worst = Verdict.PASS
    quiet = args.quiet
    err = sys.stderr   # bound now: a row's own output is captured into its details

    def progress(message: str) -> None:
        if not quiet:
            print(message, file=err, flush=True)

    progress(f"crashgate certify: {len(specs)} backend(s), {len(rows)} rows, budget "
             f"{budget.name}, seed {seed}")
    summaries = []
    for spec, decl in zip(specs, decls, strict=True):
        progress(f"== {spec.label} ==")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"crashgate-{spec.slug[:40]}-") as tmp:
            cert = certify(spec, rows, budget=budget, seed=seed, workdir=Path(tmp),
                           context_factory=functools.partial(
                               RowContext, migrator=migrator, jobs=args.jobs,
                               pattern_migrator=pattern_migrator),
                           progress=progress, declaration=decl,
                           scenarios=args.scenario or ())
            folder = write_certificate(cert, out, spec.slug)
        summaries.append((verdict_table(cert), folder, time.perf_counter() - t0))
        if cert.verdict is Verdict.FAIL or (cert.verdict is Verdict.UNKNOWN
                                            and worst is Verdict.PASS):
            worst = cert.verdict
    if not quiet:
        print(file=err)   # a gap between the progress lines and the summary on a terminal
    try:
        for table, folder, seconds in summaries:
            print(table)
            print(f"  certificate: {folder / 'certificate.md'}  ({seconds:.1f} s)\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed(f"standard output was closed before the summary was printed (broken "
                         f"pipe); the run's verdict is {worst.value}, certificates under "
                         f"{out}") from None
    return EXIT[worst]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "certify", help="certify backends against ADR-032's failure-mode tables",
        description="Run every row of the design documents' tables (ADR-032's failure modes "
        "and key invariants, ADR-072's stages, ARCH-001's phases, the pattern migration "
        "guide's, ADR-0003's acceptance criteria) and crashgate's own (the stateful model, I/O "
        "errors, damage at rest, a server-backed store's crashes, clients and versions) "
        "against each BACKEND and write reports/<backend>/<run-id>/certificate.{json,md}. A "
        "row a backend cannot be held to is n/a with the reason. Exit 0 certified, 1 a "
        "verdict failed, 2 unknown, 3 usage error.")
    p.add_argument("backends", nargs="+", metavar="BACKEND",
                   help="backend names with options (crashgate backends lists them): memory "
                   "json sqlite rvf rvlite agentdb pgvector, stage0 .. stage4, arch-phase1 .. "
                   "arch-phase4, pg-stage1 .. pg-stage3, 'sqlite?synchronous=OFF', "
                   "'pgvector?synchronous_commit=off', 'mypkg.mod:factory', or a store in "
                   "another language as a child process speaking backends/PROTOCOL.md: "
                   "'proc:node my/driver.js?dimension=8'")
    p.add_argument("--scenario", action="append", metavar="KEY",
                   help="run only this row (repeatable): " + ", ".join(
                       row.key for row in all_rows()))
    p.add_argument("--migrator", metavar="SPEC", default=None,
                   help="the migration tool ADR-032 row 4 certifies: 'mypkg.mod:migrate' (a "
                   "callable migrate(source, dest, env, *, batch_size) -> MigrationResult) or a "
                   "registered name; default crashgate's own 'rvf' migrator, for backends that "
                   "store RVF")
    p.add_argument("--pattern-migrator", metavar="SPEC", default=None,
                   help="the pattern migrator the pattern migration guide's rows certify, "
                   "migrating into BACKEND: 'mypkg.mod:factory' (factory(**options) returns an "
                   "object with migrate, status and rollback: crashgate.backends."
                   "pattern_migrator) or a registered name; default crashgate's own "
                   "'agentdb-to-rvf'")
    p.add_argument("--budget", choices=list(BUDGETS), default="standard",
                   help="how hard to look (default standard)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default random, printed)")
    p.add_argument("--out", default="reports", help="where certificates go (default reports/)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr (the seed is in every certificate)")
    p.add_argument("--jobs", type=jobs_option, default=None, metavar="N",
                   help=JOBS_HELP.format(cores=available_cores()) + " for the rows that check "
                   "crash states of a recorded run; verdicts do not depend on it")
    p.set_defaults(func=run)
