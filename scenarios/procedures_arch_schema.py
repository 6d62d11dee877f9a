"""ARCH-001's schema-versioning rows (``scenarios/arch001.py``): a newer ``PRAGMA user_version``
refused and never modified, and a migration from an older version atomic with its version bump
under a crash anywhere in it (``PRAGMA integrity_check`` on open is
``procedures_arch_integrity.py``).

They need ``MissionSchema`` (``schema_file``, ``schema_version``, ``old_schema_versions``,
``write_schema_fixture``), else ``n/a``. The newer-schema check sets the version with SQLite
itself (apsw), so it runs on real files in a directory under the row's ``workdir``; the
migration is crashed on a simulated disk, where the store's SQLite does its I/O through the
env. The directory convention is ``procedures_arch_common``'s.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from crashgate.backends import BackendSpec, CorruptStore, Declaration, VersionTooNew, os_env
from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.missions import generate_missions
from crashgate.harness.powerloss import DATA_DIR, POWER_MODELS
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.scenarios.procedures_arch_common import (
    PATH,
    close_into,
    filled_store,
    first_line,
    lacks,
    read_missions,
)
from crashgate.scenarios.procedures_versions import hint_problem
from crashgate.scenarios.table import RowContext

__all__ = ["check_schema_migration", "check_schema_newer", "schema_migration",
           "schema_newer"]

_MODELS = [CrashModel.PROCESS, *POWER_MODELS]
_SIDE_FILES = ("-wal", "-journal", "-shm")


# -- arch001-schema-newer -------------------------------------------------------------------


def _snapshot(root: str) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, but SQLite's ``-shm`` (its shared-memory
    index, rebuilt from the WAL by any connection, not the database) and an empty ``-wal``
    (SQLite creates one to read a WAL database; holding no frame, it holds nothing: the
    database file alone is the database)."""
    out = {}
    for parent, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(parent, name)
            data = Path(full).read_bytes()
            if not name.endswith("-shm") and (data or not name.endswith("-wal")):
                out[os.path.relpath(full, root)] = data
    return out


def _changes(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> list[str]:
    return ([f"{p} changed" for p in sorted(before) if p in after and after[p] != before[p]]
            + [f"{p} removed" for p in sorted(set(before) - set(after))]
            + [f"{p} created" for p in sorted(set(after) - set(before))])


def _set_user_version(path: str, version: int, *, in_wal: bool) -> bool:
    """Set ``PRAGMA user_version``; ``in_wal``: leave the commit in the WAL (no checkpoint
    when the connection closes), as a newer release that stopped before checkpointing would.
    Whether the file is a WAL database."""
    db = apsw.Connection(path)
    try:
        wal = str(db.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() == "wal"
        if in_wal:
            db.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        db.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        db.close()
    return wal


def check_schema_newer(spec: BackendSpec, *, seed: int, root: str, in_wal: bool) -> Evidence:
    """A store whose schema file says ``PRAGMA user_version`` one newer than the code's (with
    ``in_wal``, in a commit still in its WAL): its open raises ``VersionTooNew`` with the
    upgrade hint, and no file changes."""
    filled = filled_store(spec, root, "schema-newer-", seed=seed, count=3)
    if isinstance(filled, Evidence):
        return filled
    problems: list[str] = []
    path, schema, newer = filled.path, filled.schema_file, filled.schema_version + 1
    wal = _set_user_version(schema, newer, in_wal=in_wal)
    if in_wal and not wal:
        return Evidence.na(f"{os.path.basename(schema)} is not a WAL database: no commit waits "
                           "in a WAL")
    before = _snapshot(path)
    what = (f"{os.path.basename(schema)} at PRAGMA user_version {newer} (the code's is "
            f"{newer - 1}{'; the commit still in its WAL' if in_wal else ''})")
    measured = {"files": len(before), "opens": 1, "seed": seed}
    try:
        opened = spec.open(path, os_env())
    except VersionTooNew as exc:
        if (lacking := hint_problem(exc)) is not None:
            problems.append(lacking)
    except CorruptStore as exc:
        problems.append(f"was called damaged instead of too new: {first_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - any other answer is the finding
        problems.append(f"was refused with {first_line(exc)} instead of VersionTooNew")
    else:
        close_into(opened, problems)
        problems.insert(0, "was opened: a newer schema must be refused")
    changed = _changes(before, _snapshot(path))
    if changed:
        problems.append("the open changed the files: " + "; ".join(changed[:6]))
    if problems:
        return Evidence(Verdict.FAIL, f"{what} " + "; ".join(problems), measured,
                        conclusive=True)
    return Evidence(Verdict.PASS, f"{what} was refused with VersionTooNew and the upgrade "
                    f"hint; none of the {len(before)} files changed", measured)


def schema_newer(ctx: RowContext) -> Evidence:
    parts = []
    for in_wal in (False, True):
        kwargs: dict[str, Any] = {"seed": ctx.seed, "root": str(ctx.workdir / "schema-newer"),
                                  "in_wal": in_wal}
        parts.append(on_failure(check_schema_newer(ctx.spec, **kwargs), workdir=ctx.workdir,
                                name=f"reproduce_schema_newer{'_wal' if in_wal else ''}.py",
                                spec=ctx.spec, check=check_schema_newer, kwargs=kwargs))
    return combine(parts, "a newer schema, checkpointed or still in the WAL, was refused with "
                          "the upgrade hint and left unchanged")


# -- arch001-schema-migration ---------------------------------------------------------------


@dataclass(frozen=True)
class _Migrating:
    """A simulated disk whose schema file is an old version's, and the trace of the open that
    migrated it: its span, the documents, the schema file and the version it must reach."""

    disk: SimDisk
    span: tuple[int, int]
    docs: list[dict[str, Any]]
    schema_file: str
    version: int
    declaration: Declaration


def _user_version(image: DiskImage, schema_file: str) -> int:
    """``PRAGMA user_version`` of ``schema_file`` in ``image``, read by SQLite from a copy (its
    WAL too, so a committed version not yet checkpointed counts)."""
    with tempfile.TemporaryDirectory(prefix="arch-schema-") as tmp:
        copy = os.path.join(tmp, "db")
        files = image.files
        for suffix in ("", "-wal", "-journal"):
            if schema_file + suffix in files:
                Path(copy + suffix).write_bytes(files[schema_file + suffix])
        db = apsw.Connection(copy)
        try:
            return int(db.execute("PRAGMA user_version").fetchall()[0][0])  # type: ignore[arg-type]
        finally:
            db.close()


def _to_sqlite_phase(store: Any) -> str | None:
    """Promote to phase 3 (SQLite read) when below it; why it cannot be, or None."""
    first, last = store.stage_range
    if last < 3:
        return f"no SQLite-primary phase to read the migrated file in (phases {first}-{last})"
    while store.stage < 3:
        store.promote()
    return None


def _migrating(spec: BackendSpec, seed: int, version: int, n: int) -> _Migrating | Evidence:
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = spec.open(PATH, sim_env(disk))
    docs = generate_missions(n, seed)
    problems: list[str] = []
    try:
        lacking = lacks(store, schema=True) or _to_sqlite_phase(store)
        if lacking:
            return Evidence.na(lacking)
        if version not in store.old_schema_versions:
            return Evidence.na(f"version {version} is not one of the store's old schema "
                               f"versions {store.old_schema_versions}")
        schema = posixpath.normpath(store.schema_file)
        fixture = f"{DATA_DIR}/fixture-v{version}.db"
        store.write_schema_fixture(fixture, version, docs)
        current, decl = store.schema_version, store.declaration
    finally:
        close_into(store, problems)
    if problems:
        return Evidence(Verdict.UNKNOWN, f"the store did not close before the swap: "
                        f"{problems[0]}", {"seed": seed})
    fs = disk.fs()
    for suffix in _SIDE_FILES:
        if fs.exists(schema + suffix):
            fs.remove(schema + suffix)
    for suffix in ("", "-wal", "-journal"):
        if fs.exists(fixture + suffix):
            fs.rename(fixture + suffix, schema + suffix)
    # the swapped-in old file is the starting point, durable: only the migration is crashed
    disk = SimDisk(disk.cache_image())
    start = disk.position
    try:
        store = spec.open(PATH, sim_env(disk))
    except Exception as exc:  # noqa: BLE001 - not migrating is the finding
        return Evidence(Verdict.FAIL, f"a version-{version} {posixpath.basename(schema)} did "
                        f"not open: {first_line(exc)}", {"seed": seed}, conclusive=True)
    end = disk.position
    why = read_missions(store, docs)
    close_into(store, problems)
    found = _user_version(disk.cache_image(), schema)
    if why is None and found != current:
        why = f"PRAGMA user_version is {found} after the migration, not {current}"
    if why or problems:
        return Evidence(Verdict.FAIL, f"a version-{version} file opened without a crash: "
                        f"{why or problems[0]}", {"seed": seed}, conclusive=True)
    return _Migrating(disk, (start, end), docs, schema, current, decl)


def _judge_migration(spec: BackendSpec, m: _Migrating, image: DiskImage) -> str | None:
    """Why the store reopened from ``image`` (a crash inside the migrating open) is wrong."""
    disk = SimDisk(image)
    try:
        store = reopen_after_crash(spec.open, PATH, sim_env(disk), m.declaration).store
    except Exception as exc:  # noqa: BLE001 - not reopening is the finding
        return f"did not reopen: {first_line(exc)}"
    why = read_missions(store, m.docs)
    problems: list[str] = []
    close_into(store, problems)
    if why or problems:
        return why or problems[0]
    found = _user_version(disk.cache_image(), m.schema_file)
    if found != m.version:
        return f"reopened, and PRAGMA user_version is {found}, not {m.version}"
    return None


def check_schema_migration(spec: BackendSpec, *, seed: int, version: int, docs: int,
                           budget: int, state: str | None = None) -> Evidence:
    """A schema file at old ``version`` holding ``docs`` seeded missions, opened by the
    current code with a crash after each disk operation of that open (``budget`` crash
    states; only the one ``state`` names, when given): every reopen shows every mission and
    the current version."""
    m = _migrating(spec, seed, version, docs)
    if isinstance(m, Evidence):
        return m
    return crash_throughout(
        m.disk.base, m.disk.trace, m.span, lambda _crash, image: _judge_migration(spec, m, image),
        what=f"migrating version {version} to {m.version} ({len(m.docs)} missions)",
        models=_MODELS, budget=budget, seed=seed, state=state, upto_end=True,
        passed=f"reopened with every mission at version {m.version}")


def schema_migration(ctx: RowContext) -> Evidence:
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = ctx.spec.open(PATH, sim_env(disk))
    try:
        lacking = lacks(store, schema=True)
        versions = () if lacking else tuple(store.old_schema_versions)
    finally:
        store.close()
    if lacking:
        return Evidence.na(lacking)
    if not versions:
        return Evidence.na("the schema has no older version to migrate from "
                           "(old_schema_versions is empty)")
    budget = max(24, ctx.budget.crash_states // (6 * len(versions)))
    parts = []
    for version in versions:
        kwargs: dict[str, Any] = {"seed": ctx.seed, "version": version, "docs": 4,
                                  "budget": budget}
        ev = check_schema_migration(ctx.spec, **kwargs)
        token = next((d.removeprefix("state ") for d in ev.details if d.startswith("state ")),
                     None)
        parts.append(on_failure(ev, workdir=ctx.workdir,
                                name=f"reproduce_schema_migration_v{version}.py", spec=ctx.spec,
                                check=check_schema_migration, kwargs={**kwargs, "state": token}))
    return combine(parts, f"every migration from versions {list(versions)} crashed throughout "
                          "reopened with every mission at the current version")
