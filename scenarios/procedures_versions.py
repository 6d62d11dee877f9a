"""ADR-032 row 7 (mixed RVF versions) and the version part of invariant 4 (cross-platform
compatibility rule): files written by one wire/schema version and opened by another.

- forward-compatible read: a file of version N opened by a version N+1 reader succeeds and
  shows exactly what was written (an old file is never called corrupt, nor too new);
- too new: a file of version N+1 (or N opened by N-1) is refused with ``VersionTooNew`` whose
  message says what it ``requires`` and how to upgrade (``Run:``), as a writer and as a reader,
  and the refused open leaves every byte and every directory entry as it found them;
- damaged is not too new: a file of the reader's own version, damaged (header overwritten,
  bytes flipped, truncated), is never refused as too new.

Invariant 4 runs these on the simulated disk for a store doing its I/O through ``env.fs``, and
the gate across implementations (``procedures_version_gate``: a partner sharing the file format
writes the store's version and a newer one on the real file system) for any store, process
driven and server backed included. Row 5 is the full write/read/write/read round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from crashgate.backends import BackendSpec, BadOption, Capability, CorruptStore, VersionTooNew
from crashgate.harness.faults.base import requires
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.faults.skew import (
    DAMAGES,
    Damage,
    Versioning,
    VersionSkew,
    damage,
    main_file,
    probe_versioning,
)
from crashgate.harness.model import prefix_states, read_state
from crashgate.harness.ops import Op, Upsert
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, combine, first_line
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["check_damaged", "check_forward", "check_too_new", "cross_platform_rule", "hint_problem",
           "mixed_versions"]

DATA_DIR = "/data"
PATH = f"{DATA_DIR}/store"
OPS = 6


def _disk() -> SimDisk:
    return SimDisk(DiskImage.empty(DATA_DIR))


def _versioning(spec: BackendSpec) -> tuple[Versioning, Any]:
    disk = _disk()
    store = spec.open(PATH, sim_env(disk))
    decl = store.declaration
    store.close()
    return probe_versioning(spec, decl, lambda: sim_env(_disk()), PATH), decl


def _workload(spec: BackendSpec, seed: int) -> list[Op]:
    store = spec.open(PATH, sim_env(_disk()))
    decl = store.declaration
    store.close()
    return random_workload(decl, OPS, seed, PROFILES["small"])


def _ids(ops: list[Op]) -> set[int]:
    return {r.id for op in ops if isinstance(op, Upsert) for r in op.records}


def hint_problem(exc: VersionTooNew) -> str | None:
    """What a ``VersionTooNew`` refusal lacks of ADR-032's upgrade hint ("requires", the
    command to "Run:"), or None."""
    text = str(exc)
    missing = [w for w in ("requires", "Run:") if w not in text]
    if not missing:
        return None
    return f"the refusal lacks the upgrade hint (no {', '.join(missing)}): {text!r}"


def _accepts(spec: BackendSpec, v: Versioning, version: int) -> bool:
    if v.kind != "option":
        return True
    try:
        spec.open(PATH, sim_env(_disk()), **{v.option: str(version)}).close()
    except BadOption:
        return False
    return True


# -- the checks: each re-runnable alone (replay, reproduction script) ---------------------


def check_forward(spec: BackendSpec, *, writer: int, reader: int, seed: int) -> Evidence:
    """A version ``writer`` file opened by a version ``reader`` (newer) reader."""
    versioning, _ = _versioning(spec)
    skew = VersionSkew(writer, reader, versioning)
    ops = _workload(spec, seed)
    disk = _disk()
    skew.write(spec, sim_env(disk), PATH, ops)
    measured = {"files": 1, "opens": 1, "ops": len(ops), "seed": seed}
    what = f"a v{writer} file opened by a v{reader} reader"
    try:
        store = skew.open_reader(spec, sim_env(disk), PATH)
    except VersionTooNew as exc:
        return Evidence(Verdict.FAIL, f"{what} was refused as too new: {first_line(exc)}",
                        measured)
    except CorruptStore as exc:
        return Evidence(Verdict.FAIL, f"{what} was called corrupt: {first_line(exc)}", measured)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return Evidence(Verdict.FAIL, f"{what} could not be read: {first_line(exc)}", measured)
    try:
        seen = read_state(store, _ids(ops))
    finally:
        store.close()
    want = prefix_states(ops)[-1]
    if seen != want:
        return Evidence(Verdict.FAIL, f"{what} reads differently from what was written: "
                        + "; ".join(seen.describe_diff(want)), measured)
    return Evidence(Verdict.PASS, f"{what} read back all {len(ops)} ops' data", measured)


def check_too_new(spec: BackendSpec, *, writer: int, reader: int, seed: int,
                  readonly: bool = False) -> Evidence:
    """A version ``writer`` file opened by an older version ``reader``: refused with the
    upgrade hint, and left exactly as it was."""
    versioning, _ = _versioning(spec)
    skew = VersionSkew(writer, reader, versioning)
    ops = _workload(spec, seed)
    disk = _disk()
    skew.write(spec, sim_env(disk), PATH, ops)
    before = disk.cache_image()
    mode = "reader (readonly=true)" if readonly else "writer"
    what = f"a v{writer} file opened by a v{reader} {mode}"
    measured = {"files": 1, "opens": 1, "ops": len(ops), "seed": seed}
    extra = {"readonly": "true"} if readonly else {}
    problems: list[str] = []
    try:
        store = skew.open_reader(spec, sim_env(disk), PATH, **extra)
    except VersionTooNew as exc:
        if (lacking := hint_problem(exc)) is not None:
            problems.append(lacking)
    except CorruptStore as exc:
        problems.append(f"was called corrupt instead of too new: {first_line(exc)}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"was refused with {first_line(exc)} instead of VersionTooNew")
    else:
        store.close()
        problems.append("was opened: a newer file must be refused")
    changed = before.diff(disk.cache_image())
    if changed:
        problems.append("the open changed the files: " + "; ".join(changed[:4]))
    if problems:
        return Evidence(Verdict.FAIL, f"{what} " + "; ".join(problems), measured)
    return Evidence(Verdict.PASS, f"{what} was refused with the upgrade hint and left "
                    "unchanged", measured)


def check_damaged(spec: BackendSpec, *, how: Damage, seed: int) -> Evidence:
    """A file of the reader's own version, damaged: never refused as too new."""
    ops = _workload(spec, seed)
    disk = _disk()
    fs = sim_env(disk).fs
    store = spec.open(PATH, sim_env(disk))
    for op in ops:
        op.run(store)
    store.close()
    target = main_file(fs, PATH)
    measured = {"files": 1, "opens": 1, "damaged": 1, "seed": seed}
    if target is None:
        return Evidence(Verdict.UNKNOWN, f"no file to damage at {PATH}", measured)
    did = damage(fs, target, how, seed)
    try:
        opened = spec.open(PATH, sim_env(disk))
    except VersionTooNew as exc:
        return Evidence(Verdict.FAIL, f"a damaged file ({did}) was called too new: "
                        f"{first_line(exc)}", measured)
    except CorruptStore as exc:
        outcome = f"called damaged ({first_line(exc)})"
    except Exception as exc:  # noqa: BLE001 - any other refusal is not this row's concern
        outcome = f"refused with {first_line(exc)}"
    else:
        opened.close()
        outcome = "opened (the damage was in an uncommitted tail or recovered from)"
    return Evidence(Verdict.PASS, f"damaged file ({how}): {outcome}", measured)


# -- the rows ------------------------------------------------------------------------------


def _run(ctx: RowContext, name: str, check: Callable[..., Evidence], **kwargs: Any) -> Evidence:
    ev = check(ctx.spec, **kwargs)
    return on_failure(ev, workdir=ctx.workdir, name=f"reproduce_{name}.py", spec=ctx.spec,
                      check=check, kwargs=kwargs)


def _needs(ctx: RowContext) -> str | None:
    return requires(ctx.declaration, Capability.WIRE_VERSION, Capability.SCHEMA_VERSION,
                    what="file or schema version")


def _plan(ctx: RowContext) -> tuple[Versioning, list[tuple[int, int]], list[tuple[int, int]],
                                    bool, str | None]:
    """(versioning, forward pairs, too-new pairs, readonly supported, why nothing can run)."""
    versioning, _ = _versioning(ctx.spec)
    if versioning.kind == "none" or versioning.current is None:
        return versioning, [], [], False, f"cannot make a file of another version: " \
                                          f"{versioning.why}"
    cur = versioning.current
    forward: list[tuple[int, int]] = []
    too_new: list[tuple[int, int]] = []
    if versioning.kind == "option":
        newer_ok = _accepts(ctx.spec, versioning, cur + 1)
        older_ok = cur >= 1 and _accepts(ctx.spec, versioning, cur - 1)
        if newer_ok:
            forward.append((cur, cur + 1))
            too_new.append((cur + 1, cur))
        if older_ok:
            too_new.append((cur, cur - 1))
            if not newer_ok:
                forward.append((cur - 1, cur))
    else:  # a SQLite schema: the reader is the backend's own code, at its own version
        too_new.append((cur + 1, cur))
        if cur >= 1:
            forward.append((cur - 1, cur))
    return versioning, forward, too_new, accepts_readonly(ctx.spec), None


def _finish(ctx: RowContext, parts: list[Evidence], summary: str, t0: float,
            note: str) -> Evidence:
    ev = combine(parts, summary)
    measured = {**ev.measured, "checks": len(parts), "seed": ctx.seed,
                "seconds": round(time.perf_counter() - t0, 3)}
    return Evidence(ev.verdict, ev.summary, measured, (note, *ev.details), ev.reproduce,
                    ev.replay, ev.attachments)


def mixed_versions(ctx: RowContext) -> Evidence:
    """Row 7: forward-compatible read succeeds; a too-new file fails with the upgrade hint."""
    t0 = time.perf_counter()
    if (na := _needs(ctx)) is not None:
        return Evidence.na(na)
    versioning, forward, too_new, readonly, why = _plan(ctx)
    if why:
        return Evidence(Verdict.UNKNOWN, why, {"checks": 0, "seed": ctx.seed})
    parts = [_run(ctx, f"forward_v{w}_v{r}", check_forward, writer=w, reader=r, seed=ctx.seed)
             for w, r in forward]
    for w, r in too_new:
        parts.append(_run(ctx, f"too_new_v{w}_v{r}", check_too_new, writer=w, reader=r,
                          seed=ctx.seed))
        if readonly:
            parts.append(_run(ctx, f"too_new_v{w}_v{r}_readonly", check_too_new, writer=w,
                              reader=r, seed=ctx.seed, readonly=True))
    if not forward:
        parts.append(Evidence(Verdict.UNKNOWN, "no forward-compatible pair could be made "
                              "(the backend accepts no other version)", {"checks": 0}))
    note = (f"versions made with {versioning.kind}"
            + (f" ({versioning.option})" if versioning.option else "")
            + f"; the backend is at v{versioning.current}")
    return _finish(ctx, parts, f"forward-compatible reads ({len(forward)}) succeeded and "
                   f"too-new files ({len(too_new)} pairs) were refused with the upgrade hint, "
                   "unmodified", t0, note)


LOCAL_WHAT = ("refused and damaged files compared byte for byte on the simulated disk (the "
              "gate across implementations runs on the real file system)")


def _local_gate(ctx: RowContext) -> tuple[list[Evidence], str, str | None]:
    """Invariant 4 within one implementation, on the simulated disk: (checks, summary, why
    nothing ran)."""
    from crashgate.harness.faults.server import disk_rows_reason

    if (na := _needs(ctx) or disk_rows_reason(ctx.declaration, LOCAL_WHAT)) is not None:
        return [], "", na
    versioning, _forward, too_new, readonly, why = _plan(ctx)
    if why:
        return [Evidence(Verdict.UNKNOWN, why, {"checks": 0, "seed": ctx.seed})], why, None
    assert versioning.current is not None
    cur = versioning.current
    parts = [_run(ctx, "same_version", check_forward, writer=cur, reader=cur, seed=ctx.seed)]
    for w, r in too_new:
        for ro in ((False, True) if readonly else (False,)):
            parts.append(_run(ctx, f"gate_v{w}_v{r}{'_readonly' if ro else ''}", check_too_new,
                              writer=w, reader=r, seed=ctx.seed, readonly=ro))
    for how in DAMAGES:
        parts.append(_run(ctx, f"damaged_{how}", check_damaged, how=how, seed=ctx.seed))
    return parts, (f"same-version files read back; {len(too_new)} too-new pairs refused with "
                   f"the upgrade path and untouched; {len(DAMAGES)} kinds of damage never called "
                   "too new"), None


def cross_platform_rule(ctx: RowContext) -> Evidence:
    """Invariant 4: within the implementation (simulated disk: same-version files read back,
    newer ones refused with an upgrade path and untouched, damaged ones never called too new)
    and across implementations (``procedures_version_gate``: a partner sharing the file format
    writes the store's version and a newer one on the real file system)."""
    # imported here: procedures_version_gate imports this module's hint_problem
    from crashgate.scenarios.procedures_version_gate import partner_gates

    t0 = time.perf_counter()
    local, local_summary, local_na = _local_gate(ctx)
    across, across_na = partner_gates(ctx)
    if not local and not across:
        return Evidence.na(f"{local_na}; across implementations: {across_na}")
    summary = "; ".join(
        ([local_summary] if local else [])
        + ([f"{len(across)} partner(s) sharing {ctx.declaration.file_format} wrote the same "
            "and a newer version: the same read back, the newer refused with the upgrade path "
            "and untouched"] if across else []))
    note = "; ".join(
        [f"within the implementation: {'ran' if local else local_na}",
         f"across implementations: {'ran' if across else across_na}"])
    return _finish(ctx, [*local, *across], summary, t0, note)
