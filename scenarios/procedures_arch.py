"""ARCH-001's phase rows (``scenarios/arch001.py``): "If SQLite fails, system continues with
JSON-only" in the dual-write phase 1, and "Fallback to JSON ... Log discrepancies" in the
hybrid-read phase 2. The rows' procedures are all importable from here (``arch001.py`` names
them so); the schema rows are in ``procedures_arch_schema.py`` and
``procedures_arch_integrity.py``, the round trip in ``procedures_arch_roundtrip.py``, the crash
rows in ``procedures_arch_crash.py``.

The faults are I/O errors (``EIO``) on every write to the store's ``schema_file``
(``MissionSchema``) and anything its name prefixes, its journal and WAL: a ``FaultyFS`` on a
simulated disk, through which the store's SQLite does its I/O. The JSON side and the stage
record never see them. Everything goes through ``spec.open`` and the protocols of
``backends``: ``MissionStore``, ``Staged`` (``divergences()`` and ``repair()`` where the store
has them), ``MissionSchema``, ``Discrepant``; a store without what a row needs is ``n/a``. The
directory convention the rows rely on (ARCH-001's ``.vibe/state/``, legacy mission files at its
top level) is ``procedures_arch_common``'s.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from crashgate.backends import BackendSpec
from crashgate.backends.missions import Discrepant
from crashgate.harness.faults.faultyfs import FaultyFS, FsOp
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.missions import generate_missions
from crashgate.harness.powerloss import DATA_DIR
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.procedures_arch_common import (
    PATH,
    close_into,
    differs,
    first_line,
    lacks,
    same_doc,
)
from crashgate.scenarios.procedures_arch_integrity import check_integrity, integrity_check
from crashgate.scenarios.procedures_arch_roundtrip import check_roundtrip, roundtrip
from crashgate.scenarios.procedures_arch_schema import (
    check_schema_migration,
    check_schema_newer,
    schema_migration,
    schema_newer,
)
from crashgate.scenarios.table import RowContext

__all__ = ["check_discrepancies", "check_integrity", "check_roundtrip", "check_schema_migration",
           "check_schema_newer", "check_sqlite_fails", "discrepancies", "integrity_check",
           "roundtrip", "schema_migration", "schema_newer", "sqlite_fails"]


class _SchemaWriteErrors:
    """A ``FaultyFS`` trigger: while ``armed``, ``EIO`` instead of every mutating operation on
    a path that starts with ``prefix`` (the schema file, its journal and its WAL)."""

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.armed = False
        self.fired: list[FsOp] = []

    def __call__(self, op: FsOp) -> OSError | None:
        if not self.armed or self.prefix is None or not posixpath.normpath(
                op.path).startswith(self.prefix):
            return None
        self.fired.append(op)
        return OSError(errno.EIO, f"{os.strerror(errno.EIO)} (injected by crashgate: every "
                       f"write to {self.prefix}* fails; {op.describe()})", op.path)

    @contextmanager
    def failing(self) -> Iterator[None]:
        self.armed = True
        try:
            yield
        finally:
            self.armed = False


def _faulty_open(spec: BackendSpec) -> tuple[SimDisk, _SchemaWriteErrors, Any]:
    """A new store on a simulated disk whose file system fails SQLite's writes on demand."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    trigger = _SchemaWriteErrors()
    env = sim_env(disk)
    env = dataclasses.replace(env, fs=FaultyFS(env.fs, trigger))
    return disk, trigger, spec.open(PATH, env)


def _kv(seed: int, n: int) -> dict[str, bytes]:
    return {f"arch/{seed}/k{i}": f"value {i} of seed {seed}: état ✓".encode() for i in range(n)}


# -- arch001-sqlite-fails (phase 1) ---------------------------------------------------------


def _read_back(store: Any, docs: list[dict[str, Any]], kv: Mapping[str, bytes], when: str,
               problems: list[str]) -> None:
    """Each of ``docs`` and ``kv`` read back; what differs or raised goes to ``problems``."""
    for doc in docs:
        try:
            got = store.mission_get(doc["mission_id"])
        except Exception as exc:  # noqa: BLE001 - a failed read is the finding
            problems.append(f"{when}: mission_get({doc['mission_id']!r}) raised "
                            f"{first_line(exc)}")
            continue
        if not same_doc(got, doc):
            problems.append(f"{when}: " + differs(f"mission {doc['mission_id']!r}", got,
                                                   "its document"))
    for key, value in kv.items():
        try:
            got_value = store.get(key)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{when}: get({key!r}) raised {first_line(exc)}")
            continue
        if got_value != value:
            problems.append(f"{when}: " + differs(f"key {key!r}", got_value, value))


def check_sqlite_fails(spec: BackendSpec, *, seed: int, missions: int, keys: int) -> Evidence:
    """Phase 1 with every write to the schema file failing: mission and key puts succeed and
    read back, the divergence is recorded; healed and repaired, a reopen in phase 2 reads every
    record from SQLite with no fallback and no mismatch."""
    disk, trigger, store = _faulty_open(spec)
    docs = generate_missions(missions, seed)
    kv = _kv(seed, keys)
    problems: list[str] = []
    notes: list[str] = []
    try:
        lacking = lacks(store, stage=1, schema=True)
        if lacking:
            return Evidence.na(lacking)
        trigger.prefix = posixpath.normpath(store.schema_file)
        with trigger.failing():
            for doc in docs:
                try:
                    store.mission_put(doc)
                except Exception as exc:  # noqa: BLE001 - a failed call is the finding
                    problems.append(f"mission_put({doc['mission_id']!r}) failed while SQLite "
                                    f"failed: {first_line(exc)}")
            for key, value in kv.items():
                try:
                    store.put(key, value)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"put({key!r}) failed while SQLite failed: "
                                    f"{first_line(exc)}")
            _read_back(store, docs, kv, "while SQLite failed", problems)
        fired = len(trigger.fired)
        queued = store.divergences() if callable(getattr(store, "divergences", None)) else None
        if queued is None:
            notes.append("the store has no divergences(): the recording was not checked")
        elif fired and not queued:
            problems.append(f"{fired} I/O errors on {trigger.prefix} and no divergence recorded")
        repair = getattr(store, "repair", None)
        if callable(repair) and not problems:
            try:
                repair()
                left = store.divergences() if queued is not None else []
            except Exception as exc:  # noqa: BLE001 - a repair that fails healed is the finding
                problems.append(f"repair() after healing raised {first_line(exc)}")
            else:
                if left:
                    problems.append(f"repair() after healing left {len(left)} divergences "
                                    "queued")
    finally:
        close_into(store, problems)
    measured = {"missions": len(docs), "keys": len(kv), "io_errors": fired, "seed": seed}
    if not problems and fired == 0:
        return Evidence(Verdict.UNKNOWN, f"no write reached {trigger.prefix}: no I/O error was "
                        "injected, nothing was tested", measured)
    if not problems:
        _caught_up(spec, disk, docs, kv, problems, notes)
    what = (f"phase 1 with {fired} I/O errors on SQLite ({len(docs)} missions, {len(kv)} keys "
            f"put)")
    if problems:
        return Evidence(Verdict.FAIL, f"{what}: " + "; ".join(problems[:3]), measured,
                        (*problems[3:10], *notes), conclusive=True)
    return Evidence(Verdict.PASS, f"{what}: every call succeeded and read back, the divergence "
                    "was recorded, and after healing SQLite caught up", measured, tuple(notes))


def _caught_up(spec: BackendSpec, disk: SimDisk, docs: list[dict[str, Any]],
               kv: Mapping[str, bytes], problems: list[str], notes: list[str]) -> None:
    """Reopen the healed store, then read every record in phase 2 (from SQLite, checked
    against JSON): none may be a fallback or a mismatch."""
    try:
        store = spec.open(PATH, sim_env(disk))
    except Exception as exc:  # noqa: BLE001 - not reopening is the finding
        problems.append(f"the healed store did not reopen: {first_line(exc)}")
        return
    try:
        _read_back(store, docs, kv, "reopened in phase 1", problems)
        if store.stage_range[1] < 2:
            notes.append("no phase 2 to promote to: SQLite's copy was not read")
            return
        store.promote()
        counts = _counts(store)
        _read_back(store, docs, kv, "promoted to phase 2", problems)
        if counts is not None and _counts(store) != counts:
            problems.append("promoted to phase 2, SQLite answered otherwise than JSON: "
                            + "; ".join(f"{d.kind} {d.what} {d.key}" for d in
                                        list(store.discrepancies)[-3:]))
        elif counts is None:
            notes.append("phase 2 records no discrepancies: only the answers were compared")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"after healing, reading raised {first_line(exc)}")
    finally:
        close_into(store, problems)


def _counts(store: Any) -> tuple[int, int, int] | None:
    if not isinstance(store, Discrepant):
        return None
    return (sum(store.fallbacks.values()), sum(store.mismatches.values()),
            len(store.discrepancies))


def sqlite_fails(ctx: RowContext) -> Evidence:
    kwargs = {"seed": ctx.seed, "missions": 3, "keys": 4}
    return on_failure(check_sqlite_fails(ctx.spec, **kwargs), workdir=ctx.workdir,
                      name="reproduce_sqlite_fails.py", spec=ctx.spec, check=check_sqlite_fails,
                      kwargs=kwargs)


# -- arch001-discrepancies (phase 2) --------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    """One read of the phase-2 check: what it reads, the acknowledged answer, and the
    discrepancy it must record (``fallback`` or ``mismatch``; None for a consistent one)."""

    what: str
    key: str
    read: Callable[[Any], Any]
    want: Any
    kind: str | None


def check_discrepancies(spec: BackendSpec, *, seed: int) -> Evidence:
    """Phase 2 with SQLite missing a mission and a key (its writes failed) and holding an older
    version of another mission and key (their update failed): each read answers JSON's
    (acknowledged) version and records the fallback or mismatch with its key."""
    _disk, trigger, store = _faulty_open(spec)
    problems: list[str] = []
    try:
        lacking = lacks(store, stage=2, schema=True, discrepant=True)
        if lacking:
            return Evidence.na(lacking)
        trigger.prefix = posixpath.normpath(store.schema_file)
        kept, updated, missing = generate_missions(3, seed)
        newer = {**updated, "status": f"updated by seed {seed}", "arch_row": [1, 2.5, None]}
        kv = _kv(seed, 3)
        k_kept, k_updated, k_missing = kv
        store.mission_put(kept)
        store.mission_put(updated)
        store.put(k_kept, kv[k_kept])
        store.put(k_updated, kv[k_updated])
        with trigger.failing():   # SQLite misses these writes; JSON, the truth, takes them
            store.mission_put(missing)
            store.mission_put(newer)
            store.put(k_missing, kv[k_missing])
            store.put(k_updated, b"newer " + kv[k_updated])
        fired = len(trigger.fired)
        reads = [
            _Read("mission_get", kept["mission_id"], lambda s: s.mission_get(kept["mission_id"]),
                  kept, None),
            _Read("mission_get", missing["mission_id"],
                  lambda s: s.mission_get(missing["mission_id"]), missing, "fallback"),
            _Read("mission_get", updated["mission_id"],
                  lambda s: s.mission_get(updated["mission_id"]), newer, "mismatch"),
            _Read("get", k_kept, lambda s: s.get(k_kept), kv[k_kept], None),
            _Read("get", k_missing, lambda s: s.get(k_missing), kv[k_missing], "fallback"),
            _Read("get", k_updated, lambda s: s.get(k_updated), b"newer " + kv[k_updated],
                  "mismatch"),
        ]
        if fired:
            for r in reads:
                _judge_read(store, r, problems)
    finally:
        close_into(store, problems)
    measured = {"reads": len(reads), "io_errors": fired, "seed": seed}
    if fired == 0:
        return Evidence(Verdict.UNKNOWN, f"no write reached {trigger.prefix}: SQLite never "
                        "missed a record, nothing was tested", measured)
    what = (f"phase 2 with SQLite missing a mission and a key and holding an older version of "
            f"another of each ({fired} I/O errors)")
    if problems:
        return Evidence(Verdict.FAIL, f"{what}: " + "; ".join(problems[:3]), measured,
                        tuple(problems[3:10]), conclusive=True)
    return Evidence(Verdict.PASS, f"{what}: every read answered JSON's version, and each "
                    "fallback and mismatch was counted and logged with its key", measured)


def _judge_read(store: Any, r: _Read, problems: list[str]) -> None:
    before = _counts(store)
    assert before is not None   # Discrepant, checked by the caller
    try:
        got = r.read(store)
    except Exception as exc:  # noqa: BLE001 - a failed read is the finding
        problems.append(f"{r.what}({r.key!r}) raised {first_line(exc)} (JSON holds it)")
        return
    ok = same_doc(got, r.want) if isinstance(r.want, Mapping) else got == r.want
    if not ok:
        problems.append(differs(f"{r.what}({r.key!r})", got, r.want))
    after = _counts(store)
    assert after is not None
    new = list(store.discrepancies)[before[2]:]
    if r.kind is None:
        return
    grew = after[0] > before[0] if r.kind == "fallback" else after[1] > before[1]
    counter = "fallbacks" if r.kind == "fallback" else "mismatches"
    if not grew:
        problems.append(f"{r.what}({r.key!r}), which SQLite "
                        f"{'misses' if r.kind == 'fallback' else 'holds in an older version'}, "
                        f"was served without counting it in {counter}")
    if not any(getattr(d, "kind", None) == r.kind and r.key in str(getattr(d, "key", ""))
               for d in new):
        logged = [(getattr(d, "kind", d), getattr(d, "key", "")) for d in new]
        problems.append(f"{r.what}({r.key!r}) logged no {r.kind} discrepancy naming it "
                        f"(logged: {logged})")


def discrepancies(ctx: RowContext) -> Evidence:
    kwargs = {"seed": ctx.seed}
    return on_failure(check_discrepancies(ctx.spec, **kwargs), workdir=ctx.workdir,
                      name="reproduce_discrepancies.py", spec=ctx.spec,
                      check=check_discrepancies, kwargs=kwargs)
