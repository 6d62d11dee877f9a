"""The power-loss check: run a seeded workload on a simulated disk, then recover the store from
crash states at every fsync window and at every op boundary, and judge each against the model.

The workload runs once, to the end, recording the disk's trace (as ALICE does): what a program
wrote up to a point does not depend on a crash that comes later, so every crash state can be
built afterwards from the trace.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from crashgate.backends import BackendSpec, Declaration, Durability, Env
from crashgate.harness.crashcheck import (
    Judgement,
    ViolationClass,
    acknowledged_at,
    allowed_range,
    judge,
)
from crashgate.harness.crashstates import (
    CrashModel,
    CrashState,
    enumerate_crash_states,
    sync_positions,
)
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.ops import Op, Upsert, describe_op
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.workload import Profile, random_workload

__all__ = ["DATA_DIR", "PowerLossReport", "Recorded", "Violation", "check_state", "record_run",
           "run_powerloss"]

DATA_DIR = "/data"
POWER_MODELS = (CrashModel.PREFIX, CrashModel.SUBSET, CrashModel.TORN, CrashModel.GARBAGE)


@dataclass(frozen=True)
class Recorded:
    """One workload run on a simulated disk: the ops, where each began and ended in the trace."""

    spec: BackendSpec
    ops: tuple[Op, ...]
    spans: tuple[tuple[int, int], ...]      # (start, end) trace positions of each op
    base: DiskImage
    disk: SimDisk
    declaration: Declaration
    vector_ids: frozenset[int]

    @property
    def durability(self) -> Durability:
        return self.declaration.durability

    @property
    def path(self) -> str:
        return f"{DATA_DIR}/store"

    def acknowledged_at(self, position: int) -> tuple[int, bool]:
        """How many ops had returned at ``position``, and whether one was in flight."""
        return acknowledged_at(self.spans, position)


def record_run(spec: BackendSpec, ops_count: int, seed: int, profile: Profile) -> Recorded:
    # the store's directory is durable from the start: the crashes under test are the store's
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    base = disk.base
    start_pos = disk.position
    env = sim_env(disk)
    store = spec.open(f"{DATA_DIR}/store", env)
    decl = store.declaration
    ops = random_workload(decl, ops_count, seed, profile)
    # opening is part of the run: a crash while creating the store must leave it openable
    spans = [(start_pos, disk.position)] if disk.position > start_pos else []
    for op in ops:
        start = disk.position
        op.run(store)
        spans.append((start, disk.position))
    start = disk.position
    store.close()
    spans.append((start, disk.position))
    ids = frozenset(r.id for op in ops if isinstance(op, Upsert) for r in op.records)
    return Recorded(spec, tuple(ops), tuple(spans), base, disk, decl, ids)


@dataclass(frozen=True)
class Violation:
    kind: ViolationClass
    state: CrashState
    detail: str


@dataclass
class PowerLossReport:
    spec: str
    seed: int
    ops: int
    durability: Durability
    states_checked: int = 0
    by_model: Counter[str] = field(default_factory=Counter)
    violations: Counter[ViolationClass] = field(default_factory=Counter)
    first: dict[ViolationClass, Violation] = field(default_factory=dict)
    positions: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and self.states_checked > 0


def _recover(rec: Recorded, image: DiskImage) -> StoreState | BaseException:
    disk = SimDisk(image)
    env: Env = sim_env(disk)
    try:
        store = reopen_after_crash(rec.spec.open, rec.path, env, rec.declaration).store
    except Exception as exc:  # noqa: BLE001 - any failure to open is the finding
        return exc
    try:
        return read_state(store, rec.vector_ids)
    except Exception as exc:  # noqa: BLE001
        return exc
    finally:
        # closing a recovered copy cannot change the verdict
        with contextlib.suppress(Exception):
            store.close()


class _Judge:
    """Prefix states and their index, computed once per run."""

    def __init__(self, rec: Recorded) -> None:
        self.rec = rec
        # span 0 may be the open, the last is the close: map spans to model op counts
        self.states = prefix_states(rec.ops)
        self.index: dict[str, list[int]] = {}
        for j, s in enumerate(self.states):
            self.index.setdefault(s.digest, []).append(j)
        self.has_open_span = len(rec.spans) == len(rec.ops) + 2

    def allowed(self, position: int, power_loss: bool) -> tuple[int, bool]:
        done, in_flight = self.rec.acknowledged_at(position)
        if self.has_open_span:
            # span 0 is opening the store: no model op; the last span is close: no model op
            if done == 0:
                return 0, False
            done -= 1
        n = len(self.rec.ops)
        if done >= n:
            return n, False
        return done, in_flight

    def __call__(self, state: CrashState, seen: StoreState | BaseException) -> Judgement:
        power = state.model is not CrashModel.PROCESS
        done, in_flight = self.allowed(state.position, power)
        allowed = allowed_range(done, in_flight, self.rec.durability, power)
        return judge(seen, self.states, self.index, self.rec.ops, allowed)


def crash_positions(rec: Recorded) -> list[int]:
    """Just before every sync, and at every op boundary."""
    points = set(sync_positions(rec.disk.trace))
    points.update(end for _, end in rec.spans)
    return sorted(p for p in points if p >= rec.spans[0][0]) if rec.spans else sorted(points)


def run_powerloss(
    spec: BackendSpec, *, seed: int, ops: int, budget: int, profile: Profile,
    models: Sequence[CrashModel] = (CrashModel.PROCESS, *POWER_MODELS),
    progress: Callable[[int, int], None] | None = None,
) -> PowerLossReport:
    t0 = time.perf_counter()
    rec = record_run(spec, ops, seed, profile)
    judge_state = _Judge(rec)
    positions = crash_positions(rec)
    report = PowerLossReport(spec.label, seed, ops, rec.durability, positions=len(positions))
    states = enumerate_crash_states(rec.base, rec.disk.trace, positions, models, budget, seed)
    for state, image in states:
        verdict = judge_state(state, _recover(rec, image))
        report.states_checked += 1
        report.by_model[state.model.value] += 1
        if verdict.violation is not None:
            report.violations[verdict.violation] += 1
            report.first.setdefault(verdict.violation,
                                    Violation(verdict.violation, state, verdict.detail))
        if progress is not None and report.states_checked % 100 == 0:
            progress(report.states_checked, budget)
    report.seconds = time.perf_counter() - t0
    return report


def check_state(spec: BackendSpec, *, seed: int, ops: int, profile: Profile,
                state: CrashState) -> tuple[Judgement, list[str]]:
    """Replay the run and judge one crash state; also return the ops around it, for a person."""
    rec = record_run(spec, ops, seed, profile)
    image = state.image(rec.base, rec.disk.trace)
    verdict = _Judge(rec)(state, _recover(rec, image))
    done, in_flight = _Judge(rec).allowed(state.position, state.model is not CrashModel.PROCESS)
    lines = [f"{i + 1:>4}. {describe_op(op)}" for i, op in enumerate(rec.ops[: done + 1])]
    if in_flight:
        lines[-1] += "   <- in flight when the crash came"
    return verdict, lines[-8:]

