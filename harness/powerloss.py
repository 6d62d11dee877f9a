"""The power-loss check: run a seeded workload on a simulated disk, then recover the store from
crash states (power loss at every fsync window and op boundary, process crashes after every
file-system operation), the budget shared evenly by the crash models, and judge each against
the model.

The workload runs once, to the end, recording the disk's trace (as ALICE does): what a program
wrote up to a point does not depend on a crash that comes later, so every crash state can be
built afterwards from the trace. With ``jobs`` > 1 the states are recovered and judged in
other processes: children forked per batch, which inherit this run and the enumeration's walk
(``crashfork``), or, without ``fork``, spawned workers that record the run again
(``crashpool``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
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
from crashgate.harness.crashfork import check_forked
from crashgate.harness.crashpool import (
    CrashPoolError,
    batch_size,
    check_in_workers,
    check_one,
    valid_jobs,
    worker_start_method,
)
from crashgate.harness.crashstates import CrashModel, CrashState, TraceWalk, sync_positions
from crashgate.harness.model import PrefixModel, StoreState, read_state
from crashgate.harness.ops import Op, Reopen, Upsert, describe_op, thin
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import SECTOR_SIZE, DiskImage, DiskOp, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.spill import Spill
from crashgate.harness.workload import Profile, iter_workload

__all__ = ["DATA_DIR", "PowerLossReport", "Recorded", "Violation", "check_state", "record_run",
           "run_powerloss", "trace_shape"]

DATA_DIR = "/data"
POWER_MODELS = (CrashModel.PREFIX, CrashModel.SUBSET, CrashModel.TORN, CrashModel.GARBAGE)


@dataclass(frozen=True)
class Recorded:
    """One workload run on a simulated disk: the ops, where each began and ended in the trace."""

    spec: BackendSpec
    ops: tuple[Op, ...]
    """The ops, thinned (``ops.thin``): upserts keep their ids, not their vectors."""
    spans: tuple[tuple[int, int], ...]      # (start, end) trace positions of each op
    base: DiskImage
    disk: SimDisk
    """The run's disk: its ``trace``; the page cache is dropped once the run ends."""
    declaration: Declaration
    vector_ids: frozenset[int]
    states: tuple[StoreState, ...]
    """The model after each prefix of the ops (``model.PrefixModel``), built as the run went
    (the thinned ops no longer hold the vectors to build it from)."""

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
    disk = SimDisk(DiskImage.empty(DATA_DIR), spill=Spill())   # the trace's long writes: on disk
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
    # opening is part of the run: a crash while creating the store must leave it openable
    spans = [(start_pos, disk.position)] if disk.position > start_pos else []
    model = PrefixModel()
    ops: list[Op] = []
    ids: set[int] = set()
    # one op at a time, each thinned once the model has it: the run never holds every vector
    for op in iter_workload(decl, ops_count, seed, profile, history=True):
        start = disk.position
        if isinstance(op, Reopen):
            store.close()
            store = spec.open(path, env)
        else:
            op.run(store)
        spans.append((start, disk.position))
        model.apply(op)
        if isinstance(op, Upsert):
            ids.update(r.id for r in op.records)
        ops.append(thin(op))
    start = disk.position
    store.close()
    spans.append((start, disk.position))
    disk.drop_page_cache()
    return Recorded(spec, tuple(ops), tuple(spans), base, disk, decl, frozenset(ids),
                    tuple(model.states))


@dataclass(frozen=True)
class Violation:
    kind: ViolationClass
    state: CrashState
    detail: str


@dataclass
class PowerLossReport:
    """``by_model`` counts the states checked per model that got any; ``states_by_model`` has
    all five, zeros included, and ``empty_models`` says why a model got none. ``phases``:
    seconds per phase, summed over the parent and the worker processes (``workload``: recording
    the run; ``plan``: crash points and the budget's plan; ``materialise``: enumerating and
    building the images; ``rematerialise``: spawned workers building them again; ``recover``:
    open and read the recovered store; ``judge``: compare with the model)."""

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
    jobs: int = 1                                           # processes that checked states
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds (see above)

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
        self.states = rec.states
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


@dataclass(frozen=True)
class _Checker:
    """Recovering and judging states of one recorded run (``crashpool.StateChecker``)."""

    rec: Recorded
    judging: _Judge

    @property
    def base(self) -> DiskImage:
        return self.rec.base

    @property
    def trace(self) -> Sequence[DiskOp]:
        return self.rec.disk.trace

    def recover(self, image: DiskImage) -> StoreState | BaseException:
        return _recover(self.rec, image)

    def judge(self, state: CrashState, seen: StoreState | BaseException) -> Judgement:
        return self.judging(state, seen)


def trace_shape(trace: Sequence[DiskOp]) -> str:
    """A digest of a trace's shape: every field of each op and the length of each write, not
    the bytes written, which is all a ``CrashState`` refers to."""
    h = hashlib.blake2b(digest_size=16)
    for op in trace:
        h.update(repr(op.shape()).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class _Rerecord:
    """How a spawned worker process, which shares no memory with the parent, gets the run: it
    records the run again and refuses one of another shape. Bytes may differ (a random salt,
    a writer id): a serial run would have written others too."""

    spec: BackendSpec
    seed: int
    ops: int
    profile: Profile
    shape: str

    def __call__(self) -> _Checker:
        rec = record_run(self.spec, self.ops, self.seed, self.profile)
        if trace_shape(rec.disk.trace) != self.shape:
            raise CrashPoolError(
                f"backend {self.spec.label!r} did different disk operations when its seeded "
                f"workload (seed {self.seed}, {self.ops} ops) was run again in a worker "
                "process: its writes depend on more than the workload (time, randomness, the "
                "process), so the parent's crash states do not fit them; check in one process "
                "with --jobs 1")
        return _Checker(rec, _Judge(rec))


def _timed(items: Iterable[tuple[CrashState, DiskImage]], phases: dict[str, float]
           ) -> Iterator[tuple[CrashState, DiskImage]]:
    """``items``, with the time spent producing them added to ``phases["materialise"]``."""
    source = iter(items)
    while True:
        t = time.perf_counter()
        item = next(source, None)
        phases["materialise"] += time.perf_counter() - t
        if item is None:
            return
        yield item


def _check_serially(states: Iterable[tuple[CrashState, DiskImage]], checker: _Checker,
                    phases: dict[str, float]
                    ) -> Generator[tuple[CrashState, Judgement], None, None]:
    for state, image in states:
        yield state, check_one(checker, state, image, phases)


def run_powerloss(
    spec: BackendSpec, *, seed: int, ops: int, budget: int, profile: Profile,
    models: Sequence[CrashModel] = (CrashModel.PROCESS, *POWER_MODELS),
    progress: Callable[[int, int], None] | None = None, jobs: int | None = None,
    start_method: str | None = None,
) -> PowerLossReport:
    """Record the run, build its crash states and judge each. ``jobs``: processes that recover
    and judge (None: ``crashpool.default_jobs()``, the cores; 1: in this process); any number
    gives the same report, in the same order. ``start_method``: how workers start (default
    ``fork`` where there is one, sharing this run; ``spawn`` records it again in each worker;
    see ``crashpool``). ``progress(done, budget)`` is called every 100 states."""
    jobs = valid_jobs(jobs)
    method = worker_start_method(start_method)
    phases = dict.fromkeys(("workload", "plan", "materialise", "recover", "judge"), 0.0)
    t0 = time.perf_counter()
    rec = record_run(spec, ops, seed, profile)
    t1 = time.perf_counter()
    phases["workload"] = t1 - t0
    checker = _Checker(rec, _Judge(rec))
    positions = crash_positions(rec)
    every = set().union(*(positions[CrashModel(m)] for m in models))
    report = PowerLossReport(spec.label, seed, ops, rec.durability, positions=len(every))
    plan = plan_crash_states(rec.base, rec.disk.trace, positions, models, budget, seed)
    report.reasons = {m.value: why for m, why in plan.reasons.items()}
    report.reasons.update({m.value: "not among the models selected" for m in CrashModel
                           if m not in plan.models})
    phases["plan"] = time.perf_counter() - t1
    walk = TraceWalk(rec.base, rec.disk.trace, SECTOR_SIZE)
    states = _timed(enumerate_crash_states(rec.base, rec.disk.trace, positions, models, budget,
                                           seed, plan=plan, walk=walk), phases)
    batch = batch_size(budget, jobs)
    # more workers than batches would only fork idle processes
    report.jobs = min(jobs, math.ceil(sum(plan.share.values()) / batch))
    checked: Generator[tuple[CrashState, Judgement], None, None]
    if report.jobs <= 1:
        report.jobs = 1
        checked = _check_serially(states, checker, phases)
    else:
        if method == "fork":   # children forked per batch inherit this run and the walk
            checked = check_forked(states, walk, checker, jobs=report.jobs, batch=batch,
                                   phases=phases)
        else:                  # spawned workers record the run again
            recipe = _Rerecord(spec, seed, ops, profile, trace_shape(rec.disk.trace))
            checked = check_in_workers(states, recipe, jobs=report.jobs, batch=batch,
                                       phases=phases, method=method)
    # closed at once on any exit (Ctrl-C in ``progress`` too): that stops the workers
    with contextlib.closing(checked):
        for state, verdict in checked:
            report.states_checked += 1
            report.by_model[state.model.value] += 1
            if verdict.violation is not None:
                report.violations[verdict.violation] += 1
                report.first.setdefault(verdict.violation,
                                        Violation(verdict.violation, state, verdict.detail))
            if progress is not None and report.states_checked % 100 == 0:
                progress(report.states_checked, budget)
    report.phases = phases
    report.seconds = time.perf_counter() - t0
    return report


def check_state(spec: BackendSpec, *, seed: int, ops: int, profile: Profile,
                state: CrashState) -> tuple[Judgement, list[str]]:
    """Replay the run and judge one crash state; also return the ops around it, for a person."""
    rec = record_run(spec, ops, seed, profile)
    image = state.image(rec.base, rec.disk.trace)
    judging = _Judge(rec)
    verdict = judging(state, _recover(rec, image))
    done, in_flight = judging.allowed(state.position, state.model is not CrashModel.PROCESS)
    lines = [f"{i + 1:>4}. {describe_op(op)}" for i, op in enumerate(rec.ops[: done + 1])]
    if in_flight:
        lines[-1] += "   <- in flight when the crash came"
    return verdict, lines[-8:]

