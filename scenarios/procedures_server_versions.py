"""Version skew for a server-backed store: a schema version newer than the code's, kept in the
server (e.g. a ``schema_version`` table), not in a file crashgate's simulated disk can compare
byte for byte (ADR-032 row 7's check, ``procedures_versions``, compares files).

The store is written by a newer version of the code (the backend's ``schema_version`` option,
``faults.skew.probe_versioning``), then opened by the current one, as a writer and, when the
backend has ``readonly=true``, as a reader. It must be refused with ``VersionTooNew`` carrying
the upgrade hint, and nothing may change: the newer version reads exactly what it wrote before
and after the refusal, and a second open by the current code is refused again (the version was
not rewritten). A store of the current version is read forward by the newer code
(``procedures_versions.check_forward``), when the backend accepts the newer version.
"""

from __future__ import annotations

import contextlib
from typing import Any

from crashgate.backends import BackendSpec, VersionTooNew
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.faults.skew import Versioning, VersionSkew, probe_versioning
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Upsert
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, combine, first_line
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.procedures_server import needs_server
from crashgate.scenarios.procedures_versions import check_forward, hint_problem
from crashgate.scenarios.table import RowContext

__all__ = ["check_server_too_new", "server_versions"]

DATA_DIR = "/data"
PATH = f"{DATA_DIR}/store"
OPS = 6


def _env() -> Any:
    return sim_env(SimDisk(DiskImage.empty(DATA_DIR)))


def _versioning(spec: BackendSpec) -> tuple[Versioning, Any]:
    store = spec.open(PATH, _env())
    decl = store.declaration
    store.close()
    return probe_versioning(spec, decl, _env, PATH), decl


def _read(spec: BackendSpec, env: Any, ids: set[int], **options: str) -> StoreState | str:
    """The state a store opened with ``options`` shows, or why it could not be read."""
    try:
        store = spec.open(PATH, env, **options)
    except Exception as exc:  # noqa: BLE001 - the caller reports it
        return first_line(exc)
    try:
        return read_state(store, ids)
    finally:
        store.close()


def check_server_too_new(spec: BackendSpec, *, seed: int, readonly: bool = False) -> Evidence:
    """A store written by the next schema version, opened by the current code: refused with
    the upgrade hint, and unchanged as the newer version sees it (see the module docstring)."""
    versioning, decl = _versioning(spec)
    if versioning.kind != "option" or versioning.current is None:
        return Evidence(Verdict.UNKNOWN, "cannot make a store of another schema version: "
                        f"{versioning.why or 'the backend takes no schema_version option'}",
                        {"opens": 0, "seed": seed})
    cur, newer = versioning.current, versioning.current + 1
    skew = VersionSkew(newer, cur, versioning)
    ops = random_workload(decl, OPS, seed, PROFILES["small"])
    ids = {r.id for op in ops if isinstance(op, Upsert) for r in op.records}
    env = _env()
    at_newer = {versioning.option: str(newer)}
    mode = "reader (readonly=true)" if readonly else "writer"
    what = f"a v{newer} store opened by a v{cur} {mode}"
    measured = {"opens": 4, "ops": len(ops), "seed": seed}
    try:
        skew.write(spec, env, PATH, ops)
    except Exception as exc:  # noqa: BLE001 - the backend refused its own newer version
        return Evidence(Verdict.UNKNOWN, f"could not write a v{newer} store: {first_line(exc)}",
                        measured)
    before = _read(spec, env, ids, **at_newer)
    if before != prefix_states(ops)[-1]:
        return Evidence(Verdict.UNKNOWN, f"the v{newer} store does not read back what it "
                        f"wrote, so a change cannot be told: {before}", measured)
    problems: list[str] = []
    extra = {"readonly": "true"} if readonly else {}
    for attempt in ("first", "second"):
        try:
            store = skew.open_reader(spec, env, PATH, **extra)
        except VersionTooNew as exc:
            if (lacking := hint_problem(exc)) is not None and attempt == "first":
                problems.append(lacking)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"the {attempt} open was refused with {first_line(exc)} instead "
                            "of VersionTooNew")
        else:
            with contextlib.suppress(Exception):
                store.close()
            problems.append(f"the {attempt} open succeeded: a newer schema must be refused"
                            + (" (the first refusal rewrote the version)"
                               if attempt == "second" else ""))
    after = _read(spec, env, ids, **at_newer)
    if after != before:
        diff = (after if isinstance(after, str) else "; ".join(after.describe_diff(before)))
        problems.append(f"the refused open changed the store: {diff}")
    if problems:
        return Evidence(Verdict.FAIL, f"{what}: " + "; ".join(problems), measured,
                        conclusive=True)
    return Evidence(Verdict.PASS, f"{what} was refused twice with the upgrade hint; the v{newer} "
                    f"code reads all {len(ops)} ops' data unchanged", measured)


def server_versions(ctx: RowContext) -> Evidence:
    """Too new refused and untouched (as a writer and, if it can, as a reader); forward read
    of the current version by the next, when the backend accepts it."""
    if (reason := needs_server(ctx.declaration)) is not None:
        return Evidence.na(reason)
    parts: list[Evidence] = []
    modes = (False, True) if accepts_readonly(ctx.spec) else (False,)
    for ro in modes:
        kwargs: dict[str, Any] = {"seed": ctx.seed, "readonly": ro}
        ev = check_server_too_new(ctx.spec, **kwargs)
        parts.append(on_failure(ev, workdir=ctx.workdir,
                                name=f"reproduce_server_too_new{'_readonly' if ro else ''}.py",
                                spec=ctx.spec, check=check_server_too_new, kwargs=kwargs))
    versioning, _ = _versioning(ctx.spec)
    if versioning.kind == "option" and versioning.current is not None:
        cur = versioning.current
        kwargs = {"writer": cur, "reader": cur + 1, "seed": ctx.seed}
        try:
            ev = check_forward(ctx.spec, **kwargs)
        except Exception as exc:  # noqa: BLE001 - e.g. the option refuses the newer version
            ev = Evidence(Verdict.UNKNOWN, f"no forward read: {first_line(exc)}", {"opens": 0})
        parts.append(on_failure(ev, workdir=ctx.workdir, name="reproduce_server_forward.py",
                                spec=ctx.spec, check=check_forward, kwargs=kwargs))
    return combine(parts, "a newer schema version is refused with the upgrade hint and left "
                   "unchanged; the current version reads forward")
