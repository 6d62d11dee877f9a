"""The pattern migration guide's batch migration under crashes: "Migration incomplete: X
patterns remaining" is answered with "Re-run migration (idempotent)". A pattern migrator
(``backends.pattern_migrator``) migrating into the backend under certification is crashed at
every batch boundary (its ``BATCH_READ`` and ``BATCH_DONE`` failpoints, else its fsyncs) and
inside batches (process crashes after disk operations, power loss at fsync windows), and each
crash rerun: the rerun must succeed and leave exactly the source's patterns in the target,
none lost, none duplicated, the source unchanged. Then persistent I/O errors (EIO) are
injected from a few points of the run on: a run that met one must not report success unless
the target is complete, and a rerun once the disk heals must complete it.

The crash states are chosen as ADR-032 row 4 chooses them for the ingest migrator
(``procedures_migration``: the same recording, the same stratified choice).
"""

from __future__ import annotations

from typing import Any

from crashgate.backends import (
    BATCH_DONE,
    BATCH_READ,
    BackendSpec,
    MigrationResult,
    resolve_pattern_migrator,
)
from crashgate.harness.certify import probe_declaration
from crashgate.harness.cli_powerloss import state_from_token, state_token
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashstates import sync_positions
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.ioerrors import IOErrors, count_mutating_ops
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.procedures_migration import _describe, _Recorded, _states
from crashgate.scenarios.procedures_patterns_common import (
    DIM,
    SOURCE,
    migrator_label,
    run_step,
    source_image,
    source_problems,
    target_path,
    target_problems,
)
from crashgate.scenarios.table import RowContext

__all__ = ["check_crashes", "crashes"]

RECORDS, BATCH = 200, 16


def check_crashes(spec: BackendSpec, *, migrator: str, seed: int, records: int = RECORDS,
                  batch_size: int = BATCH, process_states: int = 40, power_states: int = 24,
                  io_errors: int = 6, state: str | None = None) -> Evidence:
    """Record one migration, crash it (module docstring), rerun each crash to completion and
    judge; ``state`` (a crash-state token) replays one crash."""
    named = resolve_pattern_migrator(migrator)
    target = target_path(probe_declaration(spec))
    base, patterns = source_image(seed, records)
    disk = SimDisk(base)
    marks: list[int] = []
    fps = ArmedFailpoints()
    for name in (BATCH_READ, BATCH_DONE):
        fps.arm(name, action=lambda _n: marks.append(disk.position), times=None)
    kw: dict[str, Any] = {"batch_size": batch_size, "dimension": DIM}
    first = run_step(named, "migrate", sim_env(disk, VirtualClock(), fps), target, spec.label,
                     **kw)
    trace = tuple(disk.trace)
    bounds = tuple(dict.fromkeys(marks or [p + 1 for p in sync_positions(trace)]))
    rec = _Recorded(base, trace, bounds, bool(marks), disk.cache_image(),
                    MigrationResult(records, 0, 0, 0 if first.ok else 1))
    measured: dict[str, Any] = {"migrator": named.label, "records": records,
                                "batch_size": batch_size, "trace_ops": len(trace),
                                "boundaries": len(bounds), "seed": seed}
    if first.unsupported is not None:
        return Evidence(Verdict.UNKNOWN, f"migrator {named.label}: the first migration: "
                        f"{first.unsupported}", measured)
    if not first.ok:
        return Evidence(Verdict.FAIL, f"migrator {named.label}: the first migration failed: "
                        f"{first.why()}", measured, conclusive=True)

    def judge(image: DiskImage) -> list[str]:
        again = SimDisk(image)
        out = run_step(named, "migrate", sim_env(again, VirtualClock()), target, spec.label,
                       **kw)
        if not out.ok:
            return [f"the rerun failed: {out.why()}"]
        after = again.cache_image()
        return target_problems(spec, after, target, patterns) or [
            f"the source changed: {p}" for p in source_problems(after, SOURCE, patterns)]

    if state is not None:
        crash = state_from_token(state)
        cases = [(crash, crash.image(base, trace))]
    else:
        cases = _states(rec, seed, process_states, power_states)
    for n, (crash, image) in enumerate(cases, 1):
        problems = judge(image)
        if problems:
            return Evidence(Verdict.FAIL, f"migrator {named.label}: crash "
                            f"{_describe(rec, crash)}: {problems[0]}",
                            {**measured, "crashes": n},
                            (f"state {state_token(crash)}", *problems[1:]), conclusive=True)
    if not cases:
        return Evidence(Verdict.UNKNOWN, f"migrator {named.label}: no crash state could be "
                        "built", measured)
    measured["crashes"] = len(cases)
    if state is None:
        why = _io_errors(named, spec, base, target, patterns, kw, io_errors)
        if why:
            return Evidence(Verdict.FAIL, f"migrator {named.label}: {why}", measured,
                            conclusive=True)
        measured["io_error_runs"] = io_errors
    return Evidence(Verdict.PASS, f"migrator {named.label}: {len(cases)} crashes ("
                    f"{len(bounds)} batch boundaries and inside batches, process and power "
                    f"loss) each rerun to exactly the {records} source patterns, none lost or "
                    f"duplicated, the source unchanged; {io_errors} runs hit by an I/O error "
                    "reported failure or completed, and a rerun completed each", measured)


def _io_errors(named: Any, spec: BackendSpec, base: DiskImage, target: str, patterns: Any,
               kw: dict[str, Any], runs: int) -> str | None:
    """EIO at one of ``runs`` points spread over the run's mutating operations: a run that
    reports success must have completed the target; the rerun must."""
    counting, counter = count_mutating_ops(sim_env(SimDisk(base), VirtualClock()))
    run_step(named, "migrate", counting, target, spec.label, **kw)
    total = counter.count
    points = sorted({1 + (total - 1) * k // max(runs - 1, 1) for k in range(runs)}) \
        if total else []
    for at in points:
        disk = SimDisk(base)
        fault = IOErrors("EIO", at=at)
        out = run_step(named, "migrate", fault.install(sim_env(disk, VirtualClock())), target,
                       spec.label, **kw)
        if out.ok and fault.fired:
            problems = target_problems(spec, disk.cache_image(), target, patterns)
            if problems:
                return (f"with EIO at mutating op {at} ({fault.fired[0]}), the migration "
                        f"reported success but: {problems[0]}")
        fault.heal()
        again = run_step(named, "migrate", sim_env(disk, VirtualClock()), target, spec.label,
                         **kw)
        problems = ([f"failed: {again.why()}"] if not again.ok
                    else target_problems(spec, disk.cache_image(), target, patterns))
        if problems:
            return f"the rerun after EIO at mutating op {at}: {problems[0]}"
    return None


def crashes(ctx: RowContext) -> Evidence:
    share = max(min(ctx.budget.crash_states // 6, 200), 16)
    kwargs: dict[str, Any] = {"migrator": migrator_label(ctx), "seed": ctx.seed,
                              "process_states": share, "power_states": share // 2}
    ev = check_crashes(ctx.spec, **kwargs)
    if ev.verdict is Verdict.FAIL:
        if ev.details and ev.details[0].startswith("state "):   # replay that one crash
            kwargs["state"] = ev.details[0].removeprefix("state ")
        ev = on_failure(ev, workdir=ctx.workdir, name="reproduce_pattern_crash.py",
                        spec=ctx.spec, check=check_crashes, kwargs=kwargs)
    return ev
