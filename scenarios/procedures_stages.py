"""ADR-072's rows for stage adapters: every stage "can be rolled back to the previous stage
without data loss", and the escape hatch's export leaves the previous SQLite as it was until it
switches.

Each move is crashed after every disk operation it does (a process crash and each power-loss
model), on a store filled by a seeded workload whose every op was acknowledged before the move
began. A move changes no data, so every reopen must show exactly the model after the whole
workload, and be in the stage before the move or the stage after it: never a third, never a mix
(which shows as data missing or extra).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crashgate.backends import BackendSpec, Capability, Declaration, Staged
from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Upsert
from crashgate.harness.powerloss import DATA_DIR, POWER_MODELS
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.stateful_stages import STAGE_RANGE
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["MOVES", "check_move", "escape_hatch", "needs_stages", "reversible", "stage_moves"]

PATH = f"{DATA_DIR}/store"
MOVES = ("promote", "rollback", "escape")
_MODELS = [CrashModel.PROCESS, *POWER_MODELS]


def needs_stages(decl: Declaration) -> str | None:
    """ADR-072's rows: a stage adapter of ADR-072's stages (one that names no document is
    taken for one)."""
    if not decl.has(Capability.STAGES):
        return ("not a migration stage adapter: nothing to promote or roll back (declares no "
                "stages)")
    if decl.migration not in (None, "ADR-072"):
        return (f"an adapter of {decl.migration}'s stages, not ADR-072's: held to "
                f"{decl.migration}'s rows")
    return None


@dataclass(frozen=True)
class _Moved:
    """A store filled by the workload and then moved: the disk, the move's span in its trace,
    the stages before and after, and the state every reopen must show."""

    disk: SimDisk
    span: tuple[int, int]
    stages: tuple[int, int]
    want: StoreState
    ids: frozenset[int]
    declaration: Declaration
    hatch: Any
    """``escape_hatch()`` before the move (stage 4 only), which a reopen in stage 4 must show."""


def _move(spec: BackendSpec, seed: int, ops: int, move: str) -> _Moved | str:
    """Run the workload, then ``move``; the move's trace span, or why it cannot be made."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = spec.open(PATH, sim_env(disk))
    try:
        decl = store.declaration
        work = random_workload(decl, ops, seed, PROFILES["small"])
        for op in work:
            op.run(store)
        before = store.stage
        first, last = getattr(store, "stage_range", STAGE_RANGE)
        act: Callable[[], int] | None = {
            "promote": store.promote if before < last else None,
            "rollback": store.rollback if before > first else None,
            "escape": getattr(store, "activate_escape_hatch", None) if before == last else None,
        }[move]
        if act is None:
            return f"{move} does not apply in stage {before}"
        hatch = _hatch(store) if move == "escape" else None   # a rollback catches it up
        start = disk.position
        after = act()
        span = (start, disk.position)
    finally:
        store.close()
    ids = frozenset(r.id for op in work if isinstance(op, Upsert) for r in op.records)
    return _Moved(disk, span, (before, after), prefix_states(work)[-1], ids, decl, hatch)


def _hatch(store: Any) -> Any:
    """What a stage-4 store's escape hatch holds (``escape_hatch()``), None elsewhere."""
    read = getattr(store, "escape_hatch", None)
    return read() if read is not None and store.stage == 4 else None


def _judge(spec: BackendSpec, moved: _Moved, image: DiskImage) -> str | None:
    """Why the store reopened from ``image`` is wrong, or None."""
    try:
        store = reopen_after_crash(spec.open, PATH, sim_env(SimDisk(image)),
                                   moved.declaration).store
    except Exception as exc:  # noqa: BLE001 - not opening is the finding
        return f"did not reopen: {type(exc).__name__}: {exc}"
    try:
        stage = store.stage if isinstance(store, Staged) else None
        if stage not in moved.stages:
            return f"reopened in stage {stage}, neither {moved.stages[0]} nor {moved.stages[1]}"
        got = read_state(store, moved.ids)
        hatch = _hatch(store) if moved.hatch is not None else None
    except Exception as exc:  # noqa: BLE001
        return f"reading it back raised {type(exc).__name__}: {exc}"
    finally:
        store.close()
    if got.digest != moved.want.digest:
        return (f"reopened in stage {stage} with other data than was acknowledged before the "
                f"move: {'; '.join(got.describe_diff(moved.want, limit=3))}")
    if hatch is not None and hatch != moved.hatch:
        return ("reopened in stage 4 with its escape hatch changed by the export a crash "
                "interrupted: the previous SQLite must stay as it was until the switch")
    return None


def check_move(spec: BackendSpec, *, seed: int, ops: int, move: str, budget: int,
               state: str | None = None) -> Evidence:
    """Crash ``move`` after each of its disk operations (``budget`` crash states; only the one
    ``state`` token names, when given) and judge every reopen."""
    moved = _move(spec, seed, ops, move)
    if isinstance(moved, str):
        return Evidence.na(moved)
    return crash_throughout(
        moved.disk.base, moved.disk.trace, moved.span,
        lambda _crash, image: _judge(spec, moved, image),
        what=f"{move} {moved.stages[0]} -> {moved.stages[1]}", models=_MODELS, budget=budget,
        seed=seed, state=state,
        passed=f"reopened in stage {moved.stages[0]} or {moved.stages[1]} with every "
               "acknowledged write")


def stage_moves(ctx: RowContext, moves: tuple[str, ...]) -> Evidence:
    """The row: each of ``moves`` that applies in the store's stage, crashed throughout."""
    ops = max(20, ctx.budget.workload_ops // 3)
    budget = max(40, ctx.budget.crash_states // 6)
    parts = []
    for move in moves:
        ev = check_move(ctx.spec, seed=ctx.seed, ops=ops, move=move, budget=budget)
        token = next((d.removeprefix("state ") for d in ev.details
                      if d.startswith("state ")), None)
        parts.append(on_failure(ev, workdir=ctx.workdir, name=f"reproduce_{move}.py",
                                spec=ctx.spec, check=check_move,
                                kwargs={"seed": ctx.seed, "ops": ops, "move": move,
                                        "budget": budget, "state": token}))
    if all(p.verdict is Verdict.NA for p in parts):
        return Evidence.na("; ".join(p.summary for p in parts))
    return combine(parts, "every move crashed throughout reopened in one stage with every "
                          "acknowledged write")


def reversible(ctx: RowContext) -> Evidence:
    return stage_moves(ctx, ("promote", "rollback"))


def escape_hatch(ctx: RowContext) -> Evidence:
    return stage_moves(ctx, ("escape",))
