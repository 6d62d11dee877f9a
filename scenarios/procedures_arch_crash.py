"""ARCH-001's crash rows: "Never lose mission state or audit trail" (``integrity``), "Backward
Compatible" (``legacy_import``) and "Reversible - Can rollback to JSON" (``reversible``).

Each row records a seeded run on a simulated disk, crashes the part under test after every disk
operation it did (a process crash and each power-loss model, within the budget), reopens the
store as a user would and judges what it holds against a plain model: mission documents
compared as ``canonical_mission`` (so a document that is neither the old nor the new one is
seen), key-value state as bytes. The store is driven only through ``MissionStore``, the
key-value contract and ``Staged`` (``stage``, ``stage_range``, ``promote``, ``rollback``);
phases are ARCH-001's numbers (1 dual-write ... 3 SQLite primary, 4 JSON removed).

The legacy-file convention ``legacy_import`` relies on is ARCH-001's ``.vibe/state/
active_mission.json``: the store's directory plays ``.vibe/state/``; an old session's mission
document is a plain JSON file at its top level (``active_mission.json`` and the like), which
the store imports when phase 3 opens and may then keep under its backup name
``<stem>_migrated_<timestamp>.json`` ("Rename JSON (keep as backup)").
"""

from __future__ import annotations

import fnmatch
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Declaration,
    Durability,
    Env,
    FileSystem,
    canonical_mission,
    read_all,
)
from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.crashstates import CrashModel, CrashState
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.missions import generate_missions
from crashgate.harness.model import prefix_states, read_state
from crashgate.harness.ops import Delete, MissionDelete, MissionPut, Op, Put
from crashgate.harness.powerloss import DATA_DIR, POWER_MODELS
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence
from crashgate.scenarios.procedures_arch_common import PATH, first_line, lacks
from crashgate.scenarios.table import RowContext

__all__ = ["check_legacy_import", "check_reversible", "integrity", "legacy_import",
           "reversible"]

_MODELS = [CrashModel.PROCESS, *POWER_MODELS]


# -- shared: probing, moving, reading, crashing --------------------------------------------------


def _unfit(store: Any, phases: Sequence[int]) -> str | None:
    """Why ``store`` cannot run a row that needs ``phases``, or None."""
    if (why := lacks(store)) is not None:
        return why
    first, last = store.stage_range
    if not all(first <= p <= last for p in phases):
        return f"needs phases {min(phases)}-{max(phases)}; this adapter has {first}-{last}"
    return None


def _go(store: Any, phase: int) -> None:
    """Promote or roll ``store`` back, one phase at a time, until it is in ``phase``."""
    while store.stage != phase:
        moved = store.promote() if store.stage < phase else store.rollback()
        if moved != store.stage:
            raise AssertionError(f"a move returned phase {moved}, the store says {store.stage}")


@dataclass(frozen=True)
class _Recorded:
    """A recorded run: its disk, the span of the part a crash lands in, the stages allowed
    after a crash, and the declaration the store made."""

    disk: SimDisk
    span: tuple[int, int]
    stages: tuple[int, ...]
    declaration: Declaration


Judge = Callable[[CrashState, SimDisk], str | None]


def _reopen(spec: BackendSpec, run: _Recorded, env: Env) -> Any:
    """The store reopened with ``env``, in one of ``run.stages`` (else ``AssertionError``)."""
    store = reopen_after_crash(spec.open, PATH, env, run.declaration).store
    if store.stage not in run.stages:
        stage = store.stage
        store.close()
        raise AssertionError(f"reopened in phase {stage}, not "
                             f"{' or '.join(map(str, run.stages))}")
    return store


def _crash_each(run: _Recorded, what: str, judge: Judge, *, budget: int, seed: int,
                state: str | None, upto_end: bool = False, held: bool = True) -> Evidence:
    """``crash_throughout`` of ``run``'s span. ``held``: the judge holds the store to every
    acknowledged write, so power loss is used only when the store declares power-loss
    durability (else the judge allows for it)."""
    durability = run.declaration.durability
    power = not held or durability.covers(Durability.POWER_LOSS)
    notes = () if power else (f"process crashes only: the store declares durability "
                              f"{durability.value}, so power loss may take acknowledged writes",)
    return crash_throughout(run.disk.base, run.disk.trace, run.span,
                            lambda crash, image: judge(crash, SimDisk(image)), what=what,
                            models=_MODELS if power else [CrashModel.PROCESS], budget=budget,
                            seed=seed, state=state, upto_end=upto_end, notes=notes)


def _row(ctx: RowContext, name: str, check: Callable[..., Evidence],
         kwargs: dict[str, Any]) -> Evidence:
    """Run ``check`` for the row, with a reproduction of the crash state that failed."""
    ev = check(ctx.spec, **kwargs)
    token = next((d.removeprefix("state ") for d in ev.details if d.startswith("state ")), None)
    return on_failure(ev, workdir=ctx.workdir, name=f"reproduce_{name}.py", spec=ctx.spec,
                      check=check, kwargs={**kwargs, "state": token})


# -- integrity: "Never lose mission state or audit trail" -----------------------------------------


def integrity(ctx: RowContext) -> Evidence:
    """The power-loss run of ADR-032's row 1 (``procedures_crash.power_loss_run``: the
    seeded workload, crash states at every disk operation, each recovery judged against the
    model of the acknowledged ops) with the ``missions`` profile: mission documents put,
    replaced with their audit trail grown, and deleted, among key-value writes, in the phase
    the store opens in."""
    from crashgate.scenarios.procedures_crash import power_loss_run
    return power_loss_run(ctx, "missions")


# -- legacy import: "Backward Compatible" ---------------------------------------------------------

_HELD = 3
"""Missions the store holds before the import (the first of them also in a legacy file)."""
_DAMAGED = b'{"mission_id": "mission-cut-short", "status": "in_progr'


@dataclass(frozen=True)
class _Legacy:
    """A recorded import: ``own`` the missions the store held, ``new`` the legacy files with a
    mission it did not hold (name -> document), ``files`` every legacy file's bytes (one with
    ``own[0]``'s id and another document, one ``damaged``)."""

    run: _Recorded
    own: tuple[dict[str, Any], ...]
    new: Mapping[str, dict[str, Any]]
    files: Mapping[str, bytes]
    damaged: str


def _write_file(fs: FileSystem, path: str, data: bytes) -> None:
    f = fs.open(path, "x")
    try:
        f.write(0, data)
        f.sync()
    finally:
        f.close()


def _legacy_run(spec: BackendSpec, seed: int, count: int) -> _Legacy | str:
    """Open the store in phase 2 (phase 3 when it has no phase 2), put ``_HELD`` missions,
    close it, put ``count`` new legacy files, the conflicting one and the damaged one beside
    it (durable), then record the promotion to phase 3 (or the reopen in phase 3)."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    env = sim_env(disk)
    docs = generate_missions(_HELD + count, seed)
    own, fresh = tuple(docs[:_HELD]), docs[_HELD:]
    store = spec.open(PATH, env)
    try:
        if (why := _unfit(store, (3,))) is not None:
            return why
        target = 2 if store.stage_range[0] <= 2 else 3
        _go(store, target)
        for doc in own:
            store.mission_put(doc)
        decl = store.declaration
    finally:
        store.close()
    new = {("active_mission.json" if i == 0 else f"session_{i:02d}_mission.json"): doc
           for i, doc in enumerate(fresh)}
    stale = {**own[0], "status": "legacy-session", "tool_calls": []}
    files = {name: json.dumps(doc, indent=2, ensure_ascii=False).encode()
             for name, doc in [*new.items(), ("held_mission.json", stale)]}
    files["damaged_mission.json"] = _DAMAGED
    for name, data in files.items():
        _write_file(env.fs, f"{PATH}/{name}", data)
    env.fs.sync_dir(PATH)
    start = disk.position
    store = spec.open(PATH, env)
    try:
        if target == 2:
            start = disk.position
            _go(store, 3)
    finally:
        store.close()
    run = _Recorded(disk, (start, disk.position), (target, 3), decl)
    return _Legacy(run, own, new, files, "damaged_mission.json")


def _kept(fs: FileSystem, name: str, data: bytes) -> bool:
    """Whether the legacy file ``name`` is at its name or at a backup name, with its bytes."""
    stem = name[:-len(".json")]
    names = [name, *(n for n in fs.listdir(PATH)
                     if fnmatch.fnmatchcase(n, f"{stem}_migrated_*.json"))]
    for candidate in names:
        try:
            if read_all(fs, f"{PATH}/{candidate}") == data:
                return True
        except FileNotFoundError:
            continue
    return False


def _legacy_state(store: Any, fs: FileSystem, leg: _Legacy, own_held: bool = True
                  ) -> str | None:
    """What is wrong with the legacy files and the missions (the new ones only once the store
    is in phase 3), or None. ``own_held``: the missions the store held before are checked too
    (not after a power loss the store's durability does not cover: they were its acknowledged
    writes. The legacy files were durable before the import touched them, so they are held
    after every crash)."""
    lost = [n for n, data in leg.files.items() if not _kept(fs, n, data)]
    if lost:
        return (f"legacy file(s) {lost} deleted or changed: neither at their name nor at a "
                "backup <stem>_migrated_*.json with the same bytes")
    for doc in leg.own if own_held else ():
        got = store.mission_get(doc["mission_id"])
        if got is None or canonical_mission(got) != canonical_mission(doc):
            return (f"mission {doc['mission_id']!r}, which the store held before the import, "
                    + ("is gone" if got is None else "was overwritten (held_mission.json holds "
                       "an older document under its id)"))
    if store.stage != 3:
        return None
    for name, doc in leg.new.items():
        got = store.mission_get(doc["mission_id"])
        if got is None:
            return (f"legacy mission {doc['mission_id']!r} ({name}) is not in the store in "
                    "phase 3: an old session's state lost")
        if canonical_mission(got) != canonical_mission(doc):
            return f"legacy mission {doc['mission_id']!r} ({name}) reads back changed"
    try:
        left = read_all(fs, f"{PATH}/{leg.damaged}") == leg.files[leg.damaged]
    except FileNotFoundError:
        left = False
    return None if left else f"the damaged legacy file {leg.damaged} was not left in place"


def check_legacy_import(spec: BackendSpec, *, seed: int, files: int, budget: int,
                        state: str | None = None) -> Evidence:
    """The move to phase 3 with legacy files beside the store, crashed after each disk op of
    it; each reopen (which reruns the import in phase 3), and the move completed after it,
    must lose no legacy file and overwrite no mission, and in phase 3 serve every new legacy
    mission."""
    leg = _legacy_run(spec, seed, files)
    if isinstance(leg, str):
        return Evidence.na(leg)

    power_held = leg.run.declaration.durability.covers(Durability.POWER_LOSS)

    def judge(crash: CrashState, image_disk: SimDisk) -> str | None:
        env = sim_env(image_disk)
        own = power_held or crash.model is CrashModel.PROCESS
        try:
            store = _reopen(spec, leg.run, env)
        except Exception as exc:  # noqa: BLE001 - not reopening is the finding
            return f"did not reopen: {first_line(exc)}"
        step = f"reopened in phase {store.stage}"
        try:
            if (why := _legacy_state(store, env.fs, leg, own)) is not None:
                return f"{step}: {why}"
            if store.stage != 3:
                step = "the move to phase 3, completed after the crash"
                _go(store, 3)
                if (why := _legacy_state(store, env.fs, leg, own)) is not None:
                    return f"{step}: {why}"
        except Exception as exc:  # noqa: BLE001
            return f"{step}: raised {first_line(exc)}"
        finally:
            store.close()
        return None

    first = leg.run.stages[0]
    what = (f"{len(leg.files)} legacy files imported by the "
            + ("promotion 2 -> 3" if first == 2 else "open in phase 3"))
    # every crash model, whatever the store declares: the legacy files' durability is not the
    # store's to weaken (the judge holds the store's own writes to what it declares)
    return _crash_each(leg.run, what, judge, budget=budget, seed=seed, state=state, held=False)


def legacy_import(ctx: RowContext) -> Evidence:
    files = 4 if ctx.budget.name == "quick" else 8
    budget = max(40, ctx.budget.crash_states // 5)
    return _row(ctx, "legacy_import", check_legacy_import, {"seed": ctx.seed, "files": files,
                                                            "budget": budget})


# -- reversible: "Can rollback to JSON" -----------------------------------------------------------


def _reversible_run(spec: BackendSpec, seed: int, count: int
                    ) -> tuple[_Recorded, list[Op]] | str:
    """Phase 1: ``count`` missions and some keys; promoted to 3, where most missions grow
    their audit, some are deleted or added and most keys change (so JSON holds stale
    versions); then the rollback 3 -> 2 recorded. Returns the run and the writes it made (the
    model: ``prefix_states``)."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    rng = random.Random(f"arch001-reversible:{seed}")
    docs = generate_missions(count + 2, seed)
    ops: list[Op] = []
    store = spec.open(PATH, sim_env(disk))

    def write(op: Op) -> None:
        op.run(store)
        ops.append(op)

    try:
        if (why := _unfit(store, (1, 2, 3))) is not None:
            return why
        _go(store, 1)
        for doc in docs[:count]:
            write(MissionPut(doc))
        for i in range(6):
            write(Put(f"agent_memory/{i}", json.dumps({"handoff": i, "phase": 1}).encode()))
        _go(store, 3)
        for doc in docs[:count]:
            roll = rng.random()
            if roll < 0.15:
                write(MissionDelete(doc["mission_id"]))
            elif roll < 0.8:
                write(MissionPut({**doc, "status": "completed", "tool_calls": [
                    *(doc.get("tool_calls") or []), {"tool_name": "git_commit",
                                                     "success": True}]}))
        for doc in docs[count:]:
            write(MissionPut(doc))
        write(Delete("agent_memory/0"))
        for i in range(1, 5):
            write(Put(f"agent_memory/{i}", json.dumps({"handoff": i, "phase": 3}).encode()))
        write(Put("session_handoff", b'{"from": "phase 3"}'))
        decl, start = store.declaration, disk.position
        store.rollback()
    finally:
        store.close()
    return _Recorded(disk, (start, disk.position), (3, 2), decl), ops


def check_reversible(spec: BackendSpec, *, seed: int, missions: int, budget: int,
                     state: str | None = None) -> Evidence:
    """The rollback 3 -> 2, after phase 3 changed what JSON holds, crashed after each disk op
    of it: each reopen must hold exactly what phase 3 held (``read_state`` against the model
    of the writes), and so must the store once the rollback is completed and then taken on
    to phase 1 (reads from JSON)."""
    recorded = _reversible_run(spec, seed, missions)
    if isinstance(recorded, str):
        return Evidence.na(recorded)
    run, ops = recorded
    want = prefix_states(ops)[-1]

    def judge(_crash: CrashState, image_disk: SimDisk) -> str | None:
        try:
            store = _reopen(spec, run, sim_env(image_disk))
        except Exception as exc:  # noqa: BLE001 - not reopening is the finding
            return f"did not reopen: {first_line(exc)}"
        step = f"reopened in phase {store.stage}"
        try:
            for phase in (store.stage, 2, 1):
                if phase != store.stage:
                    step = f"the rollback to phase {phase}, completed after the crash"
                    _go(store, phase)
                seen = read_state(store, ())
                if seen.digest != want.digest:
                    return f"{step}: " + "; ".join(seen.describe_diff(want, limit=3))
        except Exception as exc:  # noqa: BLE001
            return f"{step}: raised {first_line(exc)}"
        finally:
            store.close()
        return None

    return _crash_each(run, f"rollback 3 -> 2 of {len(want.kv) + len(want.relational)} "
                       "missions and keys", judge, budget=budget, seed=seed, state=state)


def reversible(ctx: RowContext) -> Evidence:
    missions = 8 if ctx.budget.name == "quick" else 16
    budget = max(40, ctx.budget.crash_states // 5)
    return _row(ctx, "reversible", check_reversible, {"seed": ctx.seed, "missions": missions,
                                                      "budget": budget})
