"""The power-loss check: run a seeded workload on a simulated disk, then recover the store from
crash states (power loss at every fsync window and op boundary, process crashes after every
file-system operation), the budget shared evenly by the crash models, and judge each against
the model.

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

from crashgate.backends import BackendSpec, Capability, Compactable, Declaration, Durability, Env
from crashgate.harness.crashcheck import (
    Judgement,
    ViolationClass,
    acknowledged_at,
    allowed_range,
    judge,
)
from crashgate.harness.crashenum import enumerate_crash_states, plan_crash_states
from crashgate.harness.crashstates import CrashModel, CrashState, sync_positions
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Op, Reopen, Upsert, describe_op
from crashgate.harness.recovery import reopen_after_crash
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
    """Run the workload (with history: sessions, compaction, re-used ids, long records) on a
    fresh simulated disk, recording each op's trace span; a ``Reopen`` closes the store and
    opens it again on the same disk and env, inside its own span, so crashes land in it."""
    # the store's directory is durable from the start: the crashes under test are the store's
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    base = disk.base
    start_pos = disk.position
    env = sim_env(disk)
    path = f"{DATA_DIR}/store"
    store = spec.open(path, env)
    decl = store.declaration
    if decl.has(Capability.COMPACT) and not isinstance(store, Compactable):
        raise TypeError(f"backend {spec.label!r} declares 'compact' but its store "
                        f"{type(store).__name__} has no compact(); implement it or drop "
                        "'compact' from the declaration")
    ops = random_workload(decl, ops_count, seed, profile, history=True)
    # opening is part of the run: a crash while creating the store must leave it openable
    spans = [(start_pos, disk.position)] if disk.position > start_pos else []
    for op in ops:
        start = disk.position
        if isinstance(op, Reopen):
            store.close()
            store = spec.open(path, env)
        else:
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
    """``by_model`` counts the states checked per model that got any; ``states_by_model`` has
    all five, zeros included, and ``empty_models`` says why a model got none."""

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
    reasons: dict[str, str] = field(default_factory=dict)   # model -> why it had nothing

    @property
    def ok(self) -> bool:
        return not self.violations and self.states_checked > 0

    @property
    def states_by_model(self) -> dict[str, int]:
        """``{model: states checked}`` for every crash model, in ``CrashModel`` order."""
        return {m.value: self.by_model.get(m.value, 0) for m in CrashModel}

    @property
    def empty_models(self) -> dict[str, str]:
        """``{model: why}`` for each model that got no state."""
        return {m: self.reasons.get(m, _ALL_SEEN.get(m, "each of its states replayed to an "
                                                     "image another model had given"))
                for m, n in self.states_by_model.items() if n == 0}


_ALL_SEEN = {
    CrashModel.SUBSET.value: "each reordering of the pending ops replayed to an image the "
    "prefix model had given: the store orders its writes with fsyncs, nothing to reorder",
}


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


def crash_positions(rec: Recorded) -> dict[CrashModel, list[int]]:
    """Where each model crashes. Power loss: just before every sync (the fsync windows, where
    the most is pending) and at every op boundary. Process crash: after every file-system
    operation (write, truncate, create, rename, unlink, mkdir) and at every op boundary, so a
    store is caught between any two of its writes whether or not it put a failpoint or an
    fsync there. A position just after a sync that ends no op is left out for process
    crashes: the page cache and the op in flight are those of the position before it."""
    trace = rec.disk.trace
    first = rec.spans[0][0] if rec.spans else 0
    ends = {end for _, end in rec.spans}
    power = set(sync_positions(trace)) | ends
    process = {p for p in range(first + 1, len(trace) + 1)
               if trace[p - 1].kind not in ("sync", "sync_dir") or p in ends} | ends
    out = {CrashModel.PROCESS: sorted(p for p in process if p >= first)}
    out.update({m: sorted(p for p in power if p >= first) for m in POWER_MODELS})
    return out


def run_powerloss(
    spec: BackendSpec, *, seed: int, ops: int, budget: int, profile: Profile,
    models: Sequence[CrashModel] = (CrashModel.PROCESS, *POWER_MODELS),
    progress: Callable[[int, int], None] | None = None,
) -> PowerLossReport:
    t0 = time.perf_counter()
    rec = record_run(spec, ops, seed, profile)
    judge_state = _Judge(rec)
    positions = crash_positions(rec)
    every = set().union(*(positions[CrashModel(m)] for m in models))
    report = PowerLossReport(spec.label, seed, ops, rec.durability, positions=len(every))
    plan = plan_crash_states(rec.base, rec.disk.trace, positions, models, budget, seed)
    report.reasons = {m.value: why for m, why in plan.reasons.items()}
    report.reasons.update({m.value: "not among the models selected" for m in CrashModel
                           if m not in plan.models})
    states = enumerate_crash_states(rec.base, rec.disk.trace, positions, models, budget, seed,
                                    plan=plan)
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

