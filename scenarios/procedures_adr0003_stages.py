"""The SQLite -> Postgres migration of ADR-0003's stage adapters ("We must implement
migrations"): every promotion and rollback, with a client crash at each failpoint of the move,
reopens in one of its two stages with every acknowledged record; stage 1's shadow reads are
compared and counted, and a crash between a dual write's two writes leaves no disagreement
once the writer's open has reconciled.

A store filled by a seeded workload (every op acknowledged) is moved from its first stage to
its last and back. Each move is crashed once at each failpoint it hits
(``Staged.transition_failpoints``: after a catch-up batch, before the switch; all are armed, the
first hit crashes, and the move is retried with the others): the client process dies
(``SimulatedCrash``; the page cache of crashgate's simulated disk and the server's state
survive), the store is reopened through the factory and must be in the stage before or after
the move, holding exactly the model; the last retry completes the move, judged the same way.
Power loss is not made here: the Postgres half is a server's state, in no disk image.
"""

from __future__ import annotations

from typing import Any

from crashgate.backends import BackendSpec, Capability, Declaration, SimulatedCrash, Staged
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.model import prefix_states, read_state
from crashgate.harness.ops import Upsert
from crashgate.harness.powerloss import DATA_DIR
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, first_line
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["check_migration", "migration", "needs_adr0003_stages"]

PATH = f"{DATA_DIR}/store"


def needs_adr0003_stages(decl: Declaration) -> str | None:
    """An adapter of ADR-0003's stages (``Declaration.migration``)."""
    if not decl.has(Capability.STAGES) or decl.migration != "ADR-0003":
        return ("not an ADR-0003 stage adapter (declares no stages of ADR-0003's SQLite -> "
                f"Postgres migration: Declaration.migration is {decl.migration!r})")
    return None


class _World:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec, self.disk, self.failpoints = spec, SimDisk(DiskImage.empty(DATA_DIR)), \
            ArmedFailpoints()

    def open(self) -> Any:
        return self.spec.open(PATH, sim_env(self.disk, failpoints=self.failpoints))

    def crash(self) -> None:
        self.disk.crash()
        self.failpoints.disarm()


def _check(store: Any, want: Any, ids: frozenset[int], stages: tuple[int, ...]) -> str | None:
    if store.stage not in stages:
        return f"reopened in stage {store.stage}, not in {' or '.join(map(str, stages))}"
    got = read_state(store, ids)
    if got.digest != want.digest:
        return f"stage {store.stage} shows other data: {'; '.join(got.describe_diff(want, 3))}"
    return None


def _move(store: Any, to: int) -> None:
    store.promote() if to > store.stage else store.rollback()


def _tally(store: Any, compared: int, mismatched: int) -> tuple[int, int]:
    """Add ``store``'s shadow comparisons and mismatches (a store without them adds 0)."""
    return (compared + int(sum(getattr(store, "shadow_reads", {}).values())),
            mismatched + int(sum(getattr(store, "mismatches", {}).values())))


def check_migration(spec: BackendSpec, *, seed: int, ops: int) -> Evidence:
    """The row (module docstring)."""
    world = _World(spec)
    store = world.open()
    crashes = compared = mismatched = 0
    try:
        if not isinstance(store, Staged):
            return Evidence.na("not a stage adapter (no stage, promote, rollback)")
        decl: Declaration = getattr(store, "declaration")  # noqa: B009 - Staged names no declaration
        work = random_workload(decl, ops, seed, PROFILES["small"])
        for op in work:
            op.run(store)
        want = prefix_states(work)[-1]
        ids = frozenset(r.id for op in work if isinstance(op, Upsert) for r in op.records)
        first, last = store.stage_range
        here = store.stage
        moves = [*range(here + 1, last + 1), *range(last - 1, first - 1, -1)]
        for to in moves:
            frm = store.stage
            untried = list(store.transition_failpoints)
            while untried and store.stage == frm:
                for failpoint in untried:   # the first one the move hits crashes it
                    world.failpoints.arm(failpoint)
                try:
                    _move(store, to)
                except SimulatedCrash as crash:
                    crashes += 1
                    untried = [f for f in untried if f != crash.where]
                    compared, mismatched = _tally(store, compared, mismatched)
                    world.crash()
                    store = world.open()
                    why = _check(store, want, ids, (frm, to))
                    if why:
                        return Evidence(Verdict.FAIL, f"move {frm} -> {to}, crash at "
                                        f"{crash.where}: {why}", {"crashes": crashes},
                                        conclusive=True)
                world.failpoints.disarm()
            if store.stage == frm:
                _move(store, to)
            why = _check(store, want, ids, (to,))
            if why:
                return Evidence(Verdict.FAIL, f"after the move {frm} -> {to}: {why}",
                                {"crashes": crashes}, conclusive=True)
        compared, mismatched = _tally(store, compared, mismatched)
    except Exception as exc:  # noqa: BLE001 - a move or read that raises is the finding
        return Evidence(Verdict.FAIL, f"raised {first_line(exc)}", {"crashes": crashes},
                        conclusive=True)
    finally:
        store.close()
    measured = {"ops": len(work), "crashes": crashes, "shadow_reads": compared,
                "mismatches": mismatched, "seed": seed}
    if mismatched:
        return Evidence(Verdict.FAIL, f"{mismatched} of {compared} shadow reads answered "
                        "otherwise than the source of truth", measured, conclusive=True)
    if not crashes:
        return Evidence(Verdict.UNKNOWN, "no move hit a failpoint: no crash placed", measured)
    return Evidence(Verdict.PASS, f"stages {first} -> {last} -> {first}: {crashes} client "
                    "crashes inside moves, each reopened in one of the move's two stages with "
                    f"every acknowledged record; {compared} shadow reads compared, 0 "
                    "mismatches (power loss n/a: the Postgres half is in no disk image)",
                    measured)


def migration(ctx: RowContext) -> Evidence:
    from crashgate.harness.faults.repro import on_failure
    kwargs = {"seed": ctx.seed, "ops": max(20, ctx.budget.workload_ops // 3)}
    return on_failure(check_migration(ctx.spec, **kwargs), workdir=ctx.workdir,
                      name="reproduce_adr0003_migration.py", spec=ctx.spec,
                      check=check_migration, kwargs=kwargs)
