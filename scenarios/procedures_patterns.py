"""The pattern migration guide's promises about its migrator, for any pattern migrator
(``backends.pattern_migrator``) into the backend under certification (the target):

- ``dry_run``: "Dry-run (validate without writing)": nothing anywhere changes, and a pattern
  of another dimension is reported;
- ``rerun``: "Re-run migration (idempotent)": a rerun ends with exactly the source's patterns,
  also after patterns went missing from the target, and ``status`` reports coverage exactly;
- ``rollback``: "Rollback last migration" with the "Automatic Backup": the backup holds the
  commits still in the source's WAL, the rollback restores the source as it was (after the
  application changed it) and removes what the migration wrote, also when crashed and rerun.

The crash row is in ``procedures_patterns_crash``. Shared pieces: ``procedures_patterns_common``.
"""

from __future__ import annotations

from typing import Any

from crashgate.backends import BackendSpec, resolve, resolve_pattern_migrator
from crashgate.harness.certify import probe_declaration
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.crashstates import CrashModel, CrashState
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.procedures_patterns_common import (
    DIM,
    SOURCE,
    migrator_label,
    run_step,
    source_image,
    source_problems,
    target_files,
    target_path,
    target_problems,
)
from crashgate.scenarios.table import RowContext

__all__ = ["check_dry_run", "check_rerun", "check_rollback", "dry_run", "rerun", "rollback"]

RECORDS, BATCH = 120, 16


def _fail(summary: str, measured: dict[str, Any], *details: str) -> Evidence:
    return Evidence(Verdict.FAIL, summary, measured, tuple(details), conclusive=True)


def check_dry_run(spec: BackendSpec, *, migrator: str, seed: int, records: int = RECORDS
                  ) -> Evidence:
    """A dry run of a sound source and one of a source with a pattern of another dimension:
    neither may change a file or a directory; the first must succeed, the second must fail
    (the validation the guide promises)."""
    named = resolve_pattern_migrator(migrator)
    target = target_path(probe_declaration(spec))
    base, patterns = source_image(seed, records)
    measured: dict[str, Any] = {"migrator": named.label, "records": records, "seed": seed}
    for dimension, sound in ((DIM, True), (DIM + 1, False)):
        disk = SimDisk(base)
        out = run_step(named, "migrate", sim_env(disk, VirtualClock()), target, spec.label,
                       batch_size=BATCH, dry_run=True, dimension=dimension)
        after = disk.cache_image()
        # the trace too: a file created and removed again leaves the image as it was
        changed = sorted({p for p in (*base.files, *after.files)
                          if base.files.get(p) != after.files.get(p)} | (base.dirs ^ after.dirs)
                         | {op.path for op in disk.trace})
        what = "a dry run" if sound else f"a dry run with --dimension {dimension}"
        if changed:
            return _fail(f"migrator {named.label}: {what} changed {len(changed)} paths on disk "
                         f"(first {changed[0]}): a dry run must write nothing", measured,
                         *(f"changed: {p}" for p in changed[:10]),
                         *(f"disk op: {op.describe()}" for op in disk.trace[:10]))
        if sound and not out.ok:
            return _fail(f"migrator {named.label}: the dry run of a sound source failed: "
                         f"{out.why()}", measured)
        if sound and getattr(out.result, "total", records) != records:
            return _fail(f"migrator {named.label}: the dry run counted "
                         f"{out.result.total} patterns, the source holds {records}", measured)
        if not sound and out.ok:
            return _fail(f"migrator {named.label}: a dry run with --dimension {dimension} "
                         f"passed a source whose {records} embeddings have dimension {DIM}: "
                         "it validated nothing", measured)
    measured["dry_runs"] = 2
    return Evidence(Verdict.PASS, f"migrator {named.label}: a dry run of {records} patterns "
                    "changed no file or directory; one with the wrong --dimension failed and "
                    "changed nothing either", measured)


def check_rerun(spec: BackendSpec, *, migrator: str, seed: int, records: int = RECORDS
                ) -> Evidence:
    """Migrate; remove a few patterns from the target (as a partial migration leaves it);
    ``status`` must name exactly those; a rerun must succeed and restore exactly the source's
    patterns; ``status`` must then say complete; a further rerun must succeed."""
    named = resolve_pattern_migrator(migrator)
    target = target_path(probe_declaration(spec))
    base, patterns = source_image(seed, records)
    disk = SimDisk(base)
    env = sim_env(disk, VirtualClock())
    measured: dict[str, Any] = {"migrator": named.label, "records": records, "seed": seed}
    kw: dict[str, Any] = {"batch_size": BATCH, "dimension": DIM}
    first = run_step(named, "migrate", env, target, spec.label, **kw)
    if first.unsupported is not None:
        return Evidence(Verdict.UNKNOWN, f"migrator {named.label}: the first migration: "
                        f"{first.unsupported}", measured)
    if not first.ok:
        return _fail(f"migrator {named.label}: the first migration failed: {first.why()}",
                     measured)
    gone = sorted(r.id for r in patterns[::max(records // 3, 1)])[:3]
    store = spec.open(target, sim_env(disk, VirtualClock()))
    try:
        store.remove(gone)
    finally:
        store.close()
    status = run_step(named, "status", env, target, spec.label)
    if status.raised or tuple(getattr(status.result, "missing", ())) != tuple(gone) \
            or getattr(status.result, "complete", True):
        return _fail(f"migrator {named.label}: status after removing patterns {gone} from the "
                     f"target reported {status.raised or status.result}, not exactly those "
                     "ids missing", measured)
    for n in (1, 2):
        again = run_step(named, "migrate", env, target, spec.label, **kw)
        if not again.ok:
            return _fail(f"migrator {named.label}: rerun {n} failed: {again.why()}", measured)
        problems = target_problems(spec, disk.cache_image(), target, patterns)
        if problems:
            return _fail(f"migrator {named.label}: after rerun {n}: {problems[0]}", measured,
                         *problems[1:])
    status = run_step(named, "status", env, target, spec.label)
    if not getattr(status.result, "complete", False):
        return _fail(f"migrator {named.label}: status after the reruns: "
                     f"{status.raised or status.result}, not complete", measured)
    measured["reruns"] = 2
    return Evidence(Verdict.PASS, f"migrator {named.label}: {records} patterns; status named "
                    f"exactly the {len(gone)} removed from the target; two reruns each left "
                    f"exactly the source's patterns and status complete", measured)


def _changed_source(image: DiskImage, patterns: list[Any]) -> DiskImage:
    """The application writes to the source after the migration: one pattern changed, one
    removed (what a rollback must undo)."""
    disk = SimDisk(image)
    store = resolve("agentdb").open(SOURCE, sim_env(disk, VirtualClock()))
    try:
        first = patterns[0]
        store.upsert([type(first)(first.id, first.vector, {**first.metadata, "name": "edited"})])
        store.remove([patterns[-1].id])
    finally:
        store.close()
    return disk.cache_image()


def check_rollback(spec: BackendSpec, *, migrator: str, seed: int, records: int = RECORDS,
                   state: str | None = None) -> Evidence:
    """Migrate (with the backup); the backup must hold the source's patterns, the last ones
    included (they were in its WAL); change the source; roll back, crashed after each of its
    disk operations (process crash and power loss) and rerun: the source must then hold
    exactly its original patterns and no file of the target or its journal may remain."""
    named = resolve_pattern_migrator(migrator)
    target = target_path(probe_declaration(spec))
    base, patterns = source_image(seed, records)
    disk = SimDisk(base)
    env = sim_env(disk, VirtualClock())
    measured: dict[str, Any] = {"migrator": named.label, "records": records, "seed": seed}
    done = run_step(named, "migrate", env, target, spec.label, batch_size=BATCH, dimension=DIM)
    if not done.ok:
        return _fail(f"migrator {named.label}: the migration failed: {done.why()}", measured)
    migrated = disk.cache_image()
    backup = getattr(done.result, "backup", None)
    if not backup or backup not in migrated.files:
        return _fail(f"migrator {named.label}: the migration made no backup (result.backup "
                     f"{backup!r}): the guide's Automatic Backup", measured)
    problems = source_problems(migrated, backup, patterns)
    if problems:
        return _fail(f"migrator {named.label}: the backup {backup} is not the source: "
                     f"{problems[0]} (commits still in the source's WAL must be in it)",
                     measured, *problems[1:])
    changed = _changed_source(migrated, patterns)
    rec = SimDisk(changed)
    first = run_step(named, "rollback", sim_env(rec, VirtualClock()), target, spec.label)
    trace = tuple(rec.trace)

    def judge(_crash: CrashState | None, image: DiskImage) -> str | None:
        again = SimDisk(image)
        out = run_step(named, "rollback", sim_env(again, VirtualClock()), target, spec.label)
        after = again.cache_image()
        left = target_files(after, target)
        if left:
            rerun = "" if out.ok else f"; rerunning it failed: {out.why()}"
            return f"the rollback left {left[0]} (of {len(left)} target files){rerun}"
        bad = source_problems(after, SOURCE, patterns)
        return f"after the rollback the source is not as it was: {bad[0]}" if bad else None

    if state is None:
        if not first.ok:
            return _fail(f"migrator {named.label}: the rollback failed: {first.why()}",
                         measured)
        why = judge(None, rec.cache_image())
        if why:
            return _fail(f"migrator {named.label}: {why}", measured)
    ev = crash_throughout(changed, trace, (0, len(trace)), judge,
                          what=f"migrator {named.label}: rollback", state=state,
                          models=(CrashModel.PROCESS, CrashModel.PREFIX), seed=seed,
                          budget=48, upto_end=True,
                          passed="rerun to the source as it was, the target gone")
    return Evidence(ev.verdict, ev.summary, {**measured, **ev.measured}, ev.details,
                    conclusive=ev.conclusive)


def _row(ctx: RowContext, check: Any, name: str) -> Evidence:
    kwargs = {"migrator": migrator_label(ctx), "seed": ctx.seed}
    ev: Evidence = check(ctx.spec, **kwargs)
    if ev.verdict is Verdict.FAIL:
        ev = on_failure(ev, workdir=ctx.workdir, name=name, spec=ctx.spec, check=check,
                        kwargs=kwargs)
    return ev


def dry_run(ctx: RowContext) -> Evidence:
    return _row(ctx, check_dry_run, "reproduce_pattern_dry_run.py")


def rerun(ctx: RowContext) -> Evidence:
    return _row(ctx, check_rerun, "reproduce_pattern_rerun.py")


def rollback(ctx: RowContext) -> Evidence:
    return _row(ctx, check_rollback, "reproduce_pattern_rollback.py")
