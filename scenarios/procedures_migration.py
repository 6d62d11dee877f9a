"""ADR-032 row 4, "Migration rerun on already-migrated store" ("No-op. No duplication. Exit code
0."), for any migration tool (``backends.migrator``): crashed half-way and rerun, rerun when
done, rerun after its source changed with the same size; and, for crashgate's own, the real
``crashgate rvf migrate`` run twice."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crashgate.backends import (
    BATCH_DONE,
    DEFAULT_MIGRATOR,
    BackendSpec,
    Declaration,
    Env,
    LockHeld,
    MigrationResult,
    MigratorSpec,
    VectorRecord,
    os_env,
    resolve_migrator,
)
from crashgate.harness.certify import probe_declaration
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel, CrashState, sync_positions
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.ops import metadata_rows_reason
from crashgate.harness.recovery import let_lease_go_stale
from crashgate.harness.simdisk import DiskImage, DiskOp, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.scenarios.procedures_format import TOLERANCE, random_records
from crashgate.scenarios.table import RowContext

__all__ = ["check_migration", "migration_rerun"]


# -- ADR-032 row 4: the migration tool, rerun ---------------------------------------------------

DATA = "/data"
SOURCE = f"{DATA}/vectors.json"
POWER_MODELS = tuple(m for m in CrashModel if m is not CrashModel.PROCESS)
MIGRATION_RECORDS, MIGRATION_DIM, MIGRATION_BATCH = 120, 8, 32


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crashgate.harness.cli", *args],
                          capture_output=True, text=True, timeout=300)


def _ids(ids: Sequence[int]) -> str:
    return f"{list(ids[:8])}{f' and {len(ids) - 8} more' if len(ids) > 8 else ''}"


def _differences(store: Any, want: Sequence[VectorRecord], label: str) -> list[str]:
    """How ``store`` differs from holding exactly ``want``: records lost, records extra or
    duplicated (its count), contents beyond the tolerance. Empty when it holds exactly them."""
    count = store.count()
    got = {r.id: r for r in store.fetch([r.id for r in want])}
    problems = []
    if count != len(want):
        problems.append(f"{label} holds {count} records, the source {len(want)} ("
                        + ("duplicates or records the source lacks)" if count > len(want)
                           else "records lost)"))
    missing = [r.id for r in want if r.id not in got]
    if missing:
        problems.append(f"{len(missing)} source records missing: ids {_ids(missing)}")
    differ = [r.id for r in want if r.id in got and (
        len(got[r.id].vector) != len(r.vector)
        or not np.allclose(got[r.id].vector, r.vector, rtol=0, atol=TOLERANCE)
        or dict(got[r.id].metadata) != dict(r.metadata))]
    if differ:
        problems.append(f"{len(differ)} records differ from the source beyond {TOLERANCE} or in "
                        f"metadata: ids {_ids(differ)}")
    return problems


def _cli_rerun(ctx: RowContext) -> Evidence:
    """crashgate's own migrator, as its user runs it: migrate a JSON vector file with the real
    CLI, rerun it, then open the result with the backend under test."""
    rng = np.random.default_rng(ctx.seed)
    n, dim = 300, 16
    records = random_records(rng, range(n), dim)
    src = ctx.workdir / "vectors.json"
    src.write_text(json.dumps([{"id": r.id, "vector": list(r.vector),
                                "metadata": dict(r.metadata)} for r in records]))
    dest = ctx.workdir / "migrated.rvf"
    source_bytes = src.read_bytes()
    args = ("rvf", "migrate", "--from", str(src), "--to", str(dest), "--verify",
            "--batch-size", "64")
    first = _cli(*args)
    problems: list[str] = []
    if first.returncode != 0:
        problems.append(f"first migration exited {first.returncode}: {first.stderr.strip()}")
    after_first = dest.read_bytes() if dest.exists() else b""
    second = _cli(*args)
    if second.returncode != 0:
        problems.append(f"rerun exited {second.returncode} (expected 0): "
                        f"{(second.stderr or second.stdout).strip()}")
    if dest.exists() and dest.read_bytes() != after_first:
        problems.append("the rerun changed the destination file: not a no-op")
    if src.read_bytes() != source_bytes:
        problems.append("the migration modified its source")
    if dest.exists():
        try:
            store = ctx.spec.open(str(dest), os_env())
        except Exception as exc:  # noqa: BLE001 - an unopenable destination is the finding
            problems.append(f"{ctx.spec.label} cannot open the migrated file: "
                            f"{type(exc).__name__}: {exc}")
        else:
            try:
                problems += _differences(store, records, ctx.spec.label)
            finally:
                store.close()
    measured = {"cli_records": n, "cli_runs": 2, "seed": ctx.seed}
    if problems:
        return Evidence(Verdict.FAIL, problems[0], measured, tuple(problems),
                        reproduce=f"crashgate {' '.join(args)}  # run twice",
                        replay=lambda: _cli_rerun(ctx), conclusive=True)
    return Evidence(
        Verdict.PASS, f"crashgate rvf migrate: {n} records; the rerun exited 0, wrote nothing "
        f"({second.stdout.strip().splitlines()[-1] if second.stdout.strip() else 'no output'}); "
        f"{ctx.spec.label} reads all {n} back within {TOLERANCE}, source untouched", measured)


def _source(seed: int, n: int, dim: int, salt: int) -> tuple[bytes, tuple[VectorRecord, ...]]:
    """A JSON ingest file and its records. Numbers are fixed-width (`` 1.234567e-01``), so the
    file of another ``salt`` has the same size and record count, and different values."""
    rng = np.random.default_rng([seed, salt])
    lines = []
    for i in range(n):
        vec = ",".join(f"{x: .6e}" for x in rng.uniform(-1.0, 1.0, dim))
        meta = json.dumps({"i": i, "tag": "xyz"[(i + salt) % 3]})
        lines.append(f'{{"id": {i}, "vector": [{vec}], "metadata": {meta}}}')
    raw = ("[" + ",\n".join(lines) + "]\n").encode()
    return raw, tuple(VectorRecord.of(d["id"], d["vector"], d["metadata"])
                      for d in json.loads(raw))


def _dest_path(decl: Declaration) -> str:
    return f"{DATA}/migrated.rvf" if decl.file_format == "rvf" else f"{DATA}/migrated"


def _dest_bytes(image: DiskImage, dest: str) -> dict[str, bytes]:
    """The destination's files (the file, or a directory's files) in ``image``."""
    return {p: b for p, b in image.files.items() if p == dest or p.startswith(dest + "/")}


def _run(named: MigratorSpec, dest: str, env: Env, batch_size: int) -> MigrationResult:
    """One run, as its user runs it: a ``LockHeld`` (the dead run's lock or lease still fresh)
    is waited out once on the virtual clock; an exception is a non-zero exit."""
    try:
        try:
            return named.run(SOURCE, dest, env, batch_size=batch_size)
        except LockHeld:
            if not let_lease_go_stale(env):
                raise
            return named.run(SOURCE, dest, env, batch_size=batch_size)
    except Exception as exc:  # noqa: BLE001 - a tool that raises exits non-zero
        return MigrationResult(0, 0, 0, 1, f"raised {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Recorded:
    """The first run on a simulated disk: its trace, and the positions where a batch was done
    (the ``BATCH_DONE`` hits, else the positions after each fsync)."""

    base: DiskImage
    trace: tuple[DiskOp, ...]
    boundaries: tuple[int, ...]
    marked: bool
    end: DiskImage
    result: MigrationResult


def _record(named: MigratorSpec, source: bytes, dest: str, batch_size: int) -> _Recorded:
    disk = SimDisk(DiskImage({SOURCE: source}, frozenset({DATA})))
    marks: list[int] = []
    fps = ArmedFailpoints()
    fps.arm(BATCH_DONE, action=lambda _name: marks.append(disk.position), times=None)
    result = _run(named, dest, sim_env(disk, VirtualClock(), fps), batch_size)
    trace = tuple(disk.trace)
    bounds = marks or [p + 1 for p in sync_positions(trace)]
    return _Recorded(disk.base, trace, tuple(dict.fromkeys(bounds)), bool(marks),
                     disk.cache_image(), result)


def _where(rec: _Recorded, position: int) -> str:
    """Where ``position`` falls among the batches, and the op before it."""
    k = sum(1 for b in rec.boundaries if b <= position)
    unit = "batch" if rec.marked else "fsync window"
    place = (f"at the end of {unit} {k}" if position in rec.boundaries
             else f"inside {unit} {k + 1} of {len(rec.boundaries)}")
    last = f", after {rec.trace[position - 1].describe()}" if position > 0 else ""
    return f"{place}{last}"


def _judge(spec: BackendSpec, named: MigratorSpec, image: DiskImage, dest: str,
           want: Sequence[VectorRecord], batch_size: int) -> list[str]:
    """Rerun on ``image`` to completion, then once more: the rerun must succeed and leave the
    destination holding exactly ``want`` (read with the backend under test), the further rerun
    must succeed and leave its bytes as they were."""
    disk = SimDisk(image)
    env = sim_env(disk, VirtualClock())
    rerun = _run(named, dest, env, batch_size)
    if not rerun.ok:
        return [f"the rerun exited {rerun.status}: {rerun.message}"]
    done = disk.cache_image()
    problems = _read_back(spec, done, dest, want)
    if problems:
        return [f"after a rerun that exited 0 ({rerun.written} written, {rerun.skipped} "
                f"skipped): {problems[0]}", *problems[1:]]
    again = _run(named, dest, env, batch_size)
    if not again.ok:
        return [f"a further rerun exited {again.status}: {again.message}"]
    if _dest_bytes(disk.cache_image(), dest) != _dest_bytes(done, dest):
        return [f"a further rerun changed the destination ({again.written} written): "
                "not a no-op"]
    return []


def _read_back(spec: BackendSpec, image: DiskImage, dest: str,
               want: Sequence[VectorRecord], what: str = "destination") -> list[str]:
    """How ``dest`` in ``image``, opened by the backend under test, differs from holding
    exactly ``want`` (``what`` names it in the message)."""
    # on a copy: what the backend does on open must not change what the migrator sees next
    env = sim_env(SimDisk(image), VirtualClock())
    try:
        store = spec.open(dest, env)
    except Exception as exc:  # noqa: BLE001 - an unopenable destination is the finding
        return [f"{spec.label} cannot open the {what}: {type(exc).__name__}: {exc}"]
    try:
        return _differences(store, want, spec.label)
    finally:
        with contextlib.suppress(Exception):
            store.close()


def _changed_source(spec: BackendSpec, named: MigratorSpec, rec: _Recorded, dest: str,
                    new: bytes, before: Sequence[VectorRecord], after: Sequence[VectorRecord],
                    batch_size: int) -> tuple[list[str], str]:
    """The source is replaced by one of the same size and record count. A rerun must bring the
    destination to the new source, or refuse (non-zero, with a message) and leave it as it was;
    exiting 0 with the old values is the defect ("already migrated" judged stale). The problems,
    and what the migrator did."""
    image = DiskImage({**rec.end.files, SOURCE: new}, rec.end.dirs)
    if len(new) != len(rec.end.files[SOURCE]):
        raise AssertionError("the changed source must keep the size of the first")
    disk = SimDisk(image)
    rerun = _run(named, dest, sim_env(disk, VirtualClock()), batch_size)
    if rerun.ok:
        return _judge(spec, named, image, dest, after, batch_size), "migrated it"
    did = f"refused it (exit {rerun.status}: {rerun.message.splitlines()[0][:160]})" \
        if rerun.message.strip() else f"exit {rerun.status}"
    if not rerun.message.strip():
        return [f"the rerun exited {rerun.status} and said nothing: a refusal must say why"], did
    if _dest_bytes(disk.cache_image(), dest) != _dest_bytes(rec.end, dest):
        problems = _read_back(spec, disk.cache_image(), dest, before)
        if problems:
            return [f"the rerun exited {rerun.status} and left the destination changed: "
                    f"{problems[0]}", *problems[1:]], did
    return [], did


def _state_literal(state: CrashState) -> dict[str, Any]:
    return {"kind": "crash", "position": state.position, "model": state.model.value,
            "kept": state.kept, "torn": state.torn, "garbage_seed": state.garbage_seed}


def _states(rec: _Recorded, seed: int, process_states: int, power_states: int
            ) -> list[tuple[CrashState, DiskImage]]:
    """Process crashes at every batch boundary and inside batches (all op boundaries when they
    fit, else an even sample), then power loss at the fsync windows and batch boundaries."""
    end = len(rec.trace)
    always = {*rec.boundaries, end}   # the end: a finished run, rerun
    inside = [p for p in range(end) if p not in always]
    room = max(process_states - len(always), 0)
    if len(inside) > room:
        inside = sorted(random.Random(f"{seed}:inside").sample(inside, room))
    out = list(enumerate_crash_states(rec.base, rec.trace, [*always, *inside],
                                      (CrashModel.PROCESS,), process_states, seed))
    windows = [*sync_positions(rec.trace), *rec.boundaries, end]
    out += enumerate_crash_states(rec.base, rec.trace, windows, POWER_MODELS, power_states, seed)
    return out


def _describe(rec: _Recorded, state: CrashState) -> str:
    return f"{state.describe(rec.trace)} ({_where(rec, state.position)})"


def check_migration(spec: BackendSpec, *, migrator: str, seed: int, records: int,
                    batch_size: int, process_states: int, power_states: int,
                    only: dict[str, Any] | None = None) -> Evidence:
    """ADR-032 row 4 on a simulated disk: record one migration of a ``records``-record JSON
    source; crash it (process crash and power loss) at every batch boundary and inside batches,
    rerun each to completion and check exactly-once and a no-op further rerun; then change the
    source with the same size and rerun. ``only`` replays one case: ``{"kind": "first-run"}``,
    ``{"kind": "changed-source"}`` or a crash state (``{"kind": "crash", "position", "model",
    "kept", "torn", "garbage_seed"}``). The evidence's ``measured["failing"]`` is that case."""
    t0 = time.perf_counter()
    named = resolve_migrator(migrator)
    decl = probe_declaration(spec)
    dest = _dest_path(decl)
    source, want = _source(seed, records, MIGRATION_DIM, 0)
    new, want_new = _source(seed, records, MIGRATION_DIM, 1)
    rec = _record(named, source, dest, batch_size)
    measured: dict[str, Any] = {"migrator": named.label, "records": records,
                                "batches": len(rec.boundaries), "trace_ops": len(rec.trace),
                                "seed": seed}
    failures: list[tuple[dict[str, Any], str, list[str]]] = []
    did = "not tried"
    kind = (only or {}).get("kind")
    if kind in (None, "first-run"):
        problems = ([f"exited {rec.result.status}: {rec.result.message}"] if not rec.result.ok
                    else _read_back(spec, rec.end, dest, want))
        if problems:
            failures.append(({"kind": "first-run"}, "the first migration", problems))
    if kind in (None, "crash") and not failures:
        if only:
            state = CrashState(only["position"], CrashModel(only["model"]), tuple(only["kept"]),
                               tuple(only["torn"]), only["garbage_seed"])
            cases = [(state, state.image(rec.base, rec.trace))]
        else:
            cases = _states(rec, seed, process_states, power_states)
        by_model: Counter[str] = Counter()
        for state, image in cases:
            by_model[state.model.value] += 1
            problems = _judge(spec, named, image, dest, want, batch_size)
            if problems:
                failures.append((_state_literal(state), _describe(rec, state), problems))
                break
        measured.update({f"crash_states_{m}": c for m, c in sorted(by_model.items())})
        measured["crash_states"] = sum(by_model.values())
    if kind in (None, "changed-source") and not failures:
        problems, did = _changed_source(spec, named, rec, dest, new, want, want_new,
                                        batch_size)
        measured["source_changes"] = 1
        if problems:
            failures.append(({"kind": "changed-source"}, "the source changed with the same size "
                             f"({len(source)} bytes, {records} records)", problems))
    measured["seconds"] = round(time.perf_counter() - t0, 2)
    if failures:
        case, where, problems = failures[0]
        measured["failing"] = case
        return Evidence(Verdict.FAIL, f"migrator {named.label}: {where}: {problems[0]}",
                        measured, tuple(problems[1:]), conclusive=True)
    if not measured.get("crash_states") and not only:
        return Evidence(Verdict.UNKNOWN, f"migrator {named.label}: no crash state was checked",
                        measured)
    return Evidence(
        Verdict.PASS, f"migrator {named.label}: {measured.get('crash_states', 0)} crashes "
        f"(process and power loss, {len(rec.boundaries)} batch boundaries and inside batches) "
        f"each rerun to exactly the {records} source records, a further rerun a no-op; a "
        f"same-size changed source: {did}", measured)


def migration_rerun(ctx: RowContext) -> Evidence:
    """Row 4: the migration tool (``--migrator``, else crashgate's own for a backend that stores
    RVF) crashed half-way and rerun, rerun when done, rerun after its source changed; and, for
    crashgate's own, the real ``crashgate rvf migrate`` run twice."""
    if ctx.migrator is None and ctx.declaration.file_format != "rvf":
        return Evidence.na("does not store its data in the RVF file format that crashgate's own "
                           "migrator writes; name your migration tool with --migrator")
    # the migrated source's records carry metadata, and the row checks it arrived
    lossy = metadata_rows_reason(ctx.declaration, "a migration of records with their metadata")
    if lossy is not None:
        return Evidence.na(lossy)
    named = resolve_migrator(ctx.migrator or DEFAULT_MIGRATOR)
    share = max(ctx.budget.crash_states // 8, 8)
    kwargs: dict[str, Any] = {
        "migrator": named.label, "seed": ctx.seed, "records": MIGRATION_RECORDS,
        "batch_size": MIGRATION_BATCH, "process_states": share, "power_states": share}
    ev = check_migration(ctx.spec, **kwargs)
    if ev.verdict is Verdict.FAIL:
        ev = on_failure(ev, workdir=ctx.workdir, name="reproduce_migration.py", spec=ctx.spec,
                        check=check_migration, kwargs={**kwargs, "only": ev.measured["failing"]})
    if not named.is_default:
        return ev
    return combine([_cli_rerun(ctx), ev], ev.summary + "; crashgate rvf migrate rerun by its "
                   "CLI: exit 0, nothing written")


