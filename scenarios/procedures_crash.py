"""Rows about crashes: ADR-032 row 1 (power loss during ingest), row 2 (crash between RVF write
and metadata write) and invariant 2 (crash ordering).

Row 2 and invariant 2 crash a write at the failpoints the store declares and, without its help,
after every disk operation the simulated disk sees inside the write: what a store can be caught
at does not depend on where its author put failpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Capability,
    Compactable,
    Declaration,
    Env,
    SimulatedCrash,
    VectorRecord,
)
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashcheck import Judgement, allowed_range, judge
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel, CrashState
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.repro import write_reproduction
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Compact, Op, Put, Upsert, op_for
from crashgate.harness.powerloss import (
    DATA_DIR,
    POWER_MODELS,
    check_state,
    crash_positions,
    record_run,
    run_powerloss,
)
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.vector_oracle import check_hits, probe_queries
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.harness.workload import PROFILES
from crashgate.scenarios.table import RowContext

__all__ = ["check_crash_in_write", "crash_between_writes", "crash_ordering_rule",
           "power_loss_during_ingest"]

PATH = f"{DATA_DIR}/store"


def _token(state: Any) -> str:
    from crashgate.harness.cli_powerloss import state_token
    return state_token(state)


QUERIED_STATES = 8
"""Power-loss crash states of row 1 whose recovered store is also queried (``_queries_agree``)."""


def power_loss_during_ingest(ctx: RowContext) -> Evidence:
    """Crash states at every fsync window of a seeded workload, recovered and judged; for a
    vector store, a few recovered states are also queried, with and without a filter, and
    the answers checked by the oracle against the records the recovered store holds."""
    ev = power_loss_run(ctx, "small")
    if ev.verdict is not Verdict.PASS or not ctx.declaration.has(Capability.VECTOR):
        return ev
    queried = queries_after_power_loss(ctx, "small")
    if queried.verdict is Verdict.FAIL:
        return dataclasses.replace(queried, measured={**ev.measured, **queried.measured})
    return dataclasses.replace(ev, measured={**ev.measured, **queried.measured},
                               details=(*ev.details, queried.summary))


def queries_after_power_loss(ctx: RowContext, profile: str) -> Evidence:
    """Record the workload of ``profile`` again, recover ``QUERIED_STATES`` power-loss crash
    states of it and query each recovered store (``_queries_agree``)."""
    ops = ctx.budget.workload_ops
    rec = record_run(ctx.spec, ops, ctx.seed, PROFILES[profile])
    positions = {m: p for m, p in crash_positions(rec).items() if m in POWER_MODELS}
    states = queries = 0
    for state, image in enumerate_crash_states(rec.base, rec.disk.trace, positions,
                                               POWER_MODELS, QUERIED_STATES, ctx.seed):
        try:
            store = reopen_after_crash(ctx.spec.open, rec.path, sim_env(SimDisk(image)),
                                       rec.declaration).store
        except Exception:  # noqa: BLE001, S112 - the row's main check judges failed opens
            continue
        try:
            problem, asked = _queries_agree(store, sorted(rec.vector_ids), rec.declaration,
                                            ctx.seed + state.position)
        finally:
            with contextlib.suppress(Exception):   # closing a copy cannot change the verdict
                store.close()
        states += 1
        queries += asked
        if problem is not None:
            return Evidence(
                Verdict.FAIL, f"after power loss ({state.describe(rec.disk.trace)}), the "
                f"recovered store answered {problem}",
                {"states_queried": states, "queries_checked": queries},
                replay=lambda: queries_after_power_loss(ctx, profile), conclusive=True)
    measured = {"states_queried": states, "queries_checked": queries}
    if not queries:
        return Evidence(Verdict.UNKNOWN, "no recovered state held a vector to query", measured)
    return Evidence(Verdict.PASS, f"{queries} queries (with and without filters) on "
                    f"{states} stores recovered after power loss agreed with exact search over "
                    "what each holds", measured)


def power_loss_run(ctx: RowContext, profile: str) -> Evidence:
    """The seeded workload of ``profile`` (``workload.PROFILES``) with crash states at every
    fsync window and op boundary, recovered and judged; the first violation replayed, with
    the ``crashgate powerloss`` command that reproduces it."""
    ops, budget = ctx.budget.workload_ops, ctx.budget.crash_states
    report = run_powerloss(ctx.spec, seed=ctx.seed, ops=ops, budget=budget,
                           profile=PROFILES[profile], jobs=ctx.jobs)
    measured = {"crash_states": report.states_checked, "crash_points": report.positions,
                "states_by_model": report.states_by_model, "ops": ops, "seed": ctx.seed}
    # a model with no state is said, with why: a count of zero is not a pass of that model
    empty = tuple(f"{m}: no crash state ({why})" for m, why in report.empty_models.items())
    if report.states_checked == 0:
        return Evidence(Verdict.UNKNOWN, "no crash state could be built: nothing checked",
                        measured, details=empty)
    if not report.violations:
        return Evidence(
            Verdict.PASS,
            f"{report.states_checked} crash states recovered, none showed a torn or partial "
            f"commit (held to durability '{report.durability.value}')", measured,
            details=empty)
    first = min(report.first.values(), key=lambda v: v.state.position)
    counts = ", ".join(f"{k.value}: {n}" for k, n in report.violations.items())
    cmd = " ".join(shlex.quote(p) for p in [
        "crashgate", "powerloss", ctx.spec.label, "--seed", str(ctx.seed), "--ops", str(ops),
        "--profile", profile, "--state", _token(first.state)])

    def replay() -> Evidence:
        try:
            verdict, _ = check_state(ctx.spec, seed=ctx.seed, ops=ops,
                                     profile=PROFILES[profile], state=first.state)
        except ValueError as exc:
            # the replayed run wrote differently (the store does not do the same thing twice),
            # so the first crash state does not fit its trace: replay the whole row instead
            again = run_powerloss(ctx.spec, seed=ctx.seed, ops=ops, budget=budget,
                                  profile=PROFILES[profile], jobs=ctx.jobs)
            if again.violations:
                return Evidence(Verdict.FAIL, f"the run replayed whole ({exc}): "
                                f"{sum(again.violations.values())} of {again.states_checked} "
                                "crash states violate", {"crash_states": again.states_checked})
            return Evidence(Verdict.PASS, f"the run replayed whole ({exc}): no violation",
                            {"crash_states": again.states_checked})
        if verdict.violation is None:
            return Evidence(Verdict.PASS, f"replay showed no violation: {verdict.detail}",
                            {"crash_states": 1})
        return Evidence(Verdict.FAIL, f"{verdict.violation.value}: {verdict.detail}",
                        {"crash_states": 1})

    return Evidence(
        Verdict.FAIL, f"{sum(report.violations.values())} of {report.states_checked} crash "
        f"states violate: {counts}", measured,
        details=(f"first: {first.kind.value}: {first.state.describe()}", first.detail, *empty),
        reproduce=cmd, replay=replay, conclusive=True)


# -- crashes at named failpoints ------------------------------------------------------------


def _env(disk: SimDisk, fps: ArmedFailpoints | None, events: list[tuple[str, dict[str, object]]]
         ) -> Env:
    env = sim_env(disk, VirtualClock(), fps or ArmedFailpoints())
    return dataclasses.replace(env, observe=lambda e, d: events.append((e, d)))


def _records(first_id: int, n: int, dim: int, tag: str) -> tuple[VectorRecord, ...]:
    return tuple(VectorRecord.of(first_id + i, [((first_id + i) * 7 + j) % 11 / 10.0
                                                for j in range(dim)], {"tag": tag, "n": i})
                 for i in range(n))


def _ops(decl: Any) -> tuple[Op, Op]:
    if decl.has(Capability.VECTOR):
        # the in-flight write adds records and rewrites a committed one: metadata written ahead
        # of its vector (or the other way round) shows as a record no op ever wrote
        # (a store that keeps no metadata gets them without: ops.op_for)
        rewrite = VectorRecord.of(1, [0.5] * 8, {"tag": "rewritten", "n": 99})
        return (op_for(decl, Upsert(_records(1, 5, 8, "committed"))),
                op_for(decl, Upsert((*_records(100, 5, 8, "in-flight"), rewrite))))
    return Put("committed", b"v1"), Put("in-flight", b"v2")


def _queries_agree(store: Any, ids: list[int], decl: Declaration, seed: int
                   ) -> tuple[str | None, int]:
    """Query a recovered store (``vector_oracle.probe_queries``: with and without filters)
    and check each answer against exact search over the records it holds (``fetch``): every
    hit live, matching, with its record's metadata (the cache and the source of truth agree
    after reconciliation) and exact distance, the true nearest for an exact store. Returns
    (the first problem, with the query, or None; queries asked)."""
    records = store.fetch(ids) if ids else []
    metric = decl.metric or "l2"
    probes = probe_queries(records, seed)
    for probe in probes:
        hits = store.query(list(probe.vector), probe.k, probe.where)
        problem, _, _ = check_hits(hits, records, probe.vector, probe.k, metric, probe.where,
                                   decl.recall)
        if problem is not None:
            return f"{probe.describe()}: {problem}", len(probes)
    return None, len(probes)


@dataclass(frozen=True)
class _Reopened:
    """A reopen after a crash, judged: ``mismatch`` names a query whose answer disagrees with
    the records (metadata not rebuilt, say); ``note`` says how the next open reconciled the
    epochs."""

    verdict: Judgement
    mismatch: str | None
    """A query the reopened store answered wrongly (``_queries_agree``), with the query."""
    note: str

    @property
    def failure(self) -> str | None:
        if self.verdict.violation is not None:
            return f"{self.verdict.violation.value}: {self.verdict.detail}"
        return f"query answered wrongly: {self.mismatch}" if self.mismatch else None


def _judge_reopen(spec: BackendSpec, decl: Declaration, image: DiskImage, ops: list[Op],
                  power: bool) -> _Reopened:
    """Reopen ``image`` as a user would and judge it against ``ops`` (the first acknowledged,
    the second in flight), metadata included."""
    states: list[StoreState] = prefix_states(ops)
    index: dict[str, list[int]] = {}
    for j, s in enumerate(states):
        index.setdefault(s.digest, []).append(j)
    after: list[tuple[str, dict[str, object]]] = []
    ids = [r.id for op in ops if isinstance(op, Upsert) for r in op.records]
    try:
        recovered = reopen_after_crash(spec.open, PATH, _env(SimDisk(image), None, after),
                                       decl).store
        seen: StoreState | BaseException = read_state(recovered, ids)
        mismatch = _queries_agree(recovered, ids, decl, len(ids))[0] \
            if decl.has(Capability.VECTOR) else None
        recovered.close()
    except Exception as exc:  # noqa: BLE001 - failing to reopen is the finding
        seen, mismatch = exc, None
    verdict = judge(seen, states, index, ops, allowed_range(1, True, decl.durability, power))
    reconciled = sorted({str(d.get("action", e)) for e, d in after if e.startswith("epoch")})
    note = f"; next open: epoch {', '.join(reconciled)}" if reconciled else ""
    return _Reopened(verdict, mismatch, note)


def _crash_at(ctx: RowContext, failpoint: str, power: bool) -> Evidence:
    """Commit one op, arm ``failpoint``, then run a write (or, for a failpoint only compaction
    reaches, a compaction) that crashes there; recover from the page cache or the durable image
    and judge the reopened store against the two ops."""
    decl = ctx.declaration
    committed, write = _ops(decl)
    candidates: list[Op] = [write]
    if decl.has(Capability.COMPACT):
        candidates.append(Compact())
    for in_flight in candidates:
        disk = SimDisk(DiskImage.empty(DATA_DIR))
        fps = ArmedFailpoints()
        store = ctx.spec.open(PATH, _env(disk, fps, []))
        if isinstance(in_flight, Compact) and not isinstance(store, Compactable):
            store.close()
            continue
        committed.run(store)
        fps.arm(failpoint)
        try:
            in_flight.run(store)
        except SimulatedCrash:
            break
        store.close()
    else:
        return Evidence(Verdict.UNKNOWN, f"failpoint {failpoint!r} was not reached by a write "
                        "or a compaction", {"crashes": 0})
    disk.crash()
    image: DiskImage = disk.durable_image() if power else disk.cache_image()
    got = _judge_reopen(ctx.spec, decl, image, [committed, in_flight], power)
    what = "compaction" if isinstance(in_flight, Compact) else "write"
    kind = "power loss" if power else "process crash"
    where = f"{kind} at {failpoint} (during a {what})"
    if got.failure is not None:
        return Evidence(Verdict.FAIL, f"{where}: {got.failure}", {"crashes": 1},
                        replay=lambda: _crash_at(ctx, failpoint, power), conclusive=True)
    return Evidence(Verdict.PASS, f"{where}: reopened consistent ({got.verdict.detail})"
                    f"{got.note}", {"crashes": 1})


# -- crashes at every disk operation inside the in-flight write -----------------------------


@dataclass(frozen=True)
class _InFlight:
    """One committed op and one in flight, run on a simulated disk: ``span`` holds the trace
    positions ``(start, end)`` of the in-flight op."""

    ops: tuple[Op, Op]
    disk: SimDisk
    declaration: Declaration
    span: tuple[int, int]


def _record_in_flight(spec: BackendSpec, compaction: bool) -> _InFlight | None:
    """Record the committed op and the in-flight write (or compaction) on a simulated disk;
    None when the store cannot compact."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = spec.open(PATH, _env(disk, None, []))
    try:
        decl = store.declaration
        committed, write = _ops(decl)
        if compaction and not isinstance(store, Compactable):
            return None
        in_flight: Op = Compact() if compaction else write
        committed.run(store)
        start = disk.position
        in_flight.run(store)
        return _InFlight((committed, in_flight), disk, decl, (start, disk.position))
    finally:
        store.close()


def _in_flight_name(compaction: bool) -> str:
    return "compaction" if compaction else "write"


def check_crash_in_write(spec: BackendSpec, *, state: str, compaction: bool = False
                         ) -> Evidence:
    """Re-run one crash inside the in-flight write (what a reproduction file calls): record
    the two ops again, rebuild the crash state from its token, reopen and judge."""
    from crashgate.harness.cli_powerloss import state_from_token

    rec = _record_in_flight(spec, compaction)
    if rec is None:
        return Evidence(Verdict.UNKNOWN, f"{spec.label} cannot compact: nothing to replay")
    crash = state_from_token(state)
    image = crash.image(rec.disk.base, rec.disk.trace)
    got = _judge_reopen(spec, rec.declaration, image, list(rec.ops),
                        crash.model is not CrashModel.PROCESS)
    where = (f"{crash.describe(rec.disk.trace)}, op {crash.position - rec.span[0]} of the "
             f"{rec.span[1] - rec.span[0]} disk operations of a {_in_flight_name(compaction)}")
    if got.failure is not None:
        return Evidence(Verdict.FAIL, f"{where}: {got.failure}", {"crash_states": 1},
                        conclusive=True)
    return Evidence(Verdict.PASS, f"{where}: reopened consistent ({got.verdict.detail})",
                    {"crash_states": 1})


def _crashes_in_write(ctx: RowContext, compaction: bool) -> Evidence:
    """Crash the in-flight write (or compaction) after each of its disk operations: a process
    crash (the page cache) and power loss (crash states of every power model, the durable
    image among them) at each, within a share of the budget; judge every reopen as
    ``_crash_at`` does. No failpoint is needed: the simulated disk sees every operation."""
    rec = _record_in_flight(ctx.spec, compaction)
    what = _in_flight_name(compaction)
    if rec is None:
        return Evidence.na(f"{ctx.spec.label} declares compact but cannot compact")
    start, end = rec.span
    inside = list(range(start + 1, end))
    if not inside:
        return Evidence(Verdict.UNKNOWN, f"the {what} did {end - start} disk operation(s) "
                        "through the env: no crash between two of them can be placed",
                        {"crash_states": 0})
    positions = {CrashModel.PROCESS: inside, **{m: inside for m in POWER_MODELS}}
    budget = max(ctx.budget.crash_states // 8, 2 * len(inside))
    trace = rec.disk.trace
    counts = dict.fromkeys((m.value for m in CrashModel), 0)
    failures: list[tuple[CrashState, str]] = []
    for state, image in enumerate_crash_states(rec.disk.base, trace, positions,
                                               [CrashModel.PROCESS, *POWER_MODELS], budget,
                                               ctx.seed):
        counts[state.model.value] += 1
        got = _judge_reopen(ctx.spec, rec.declaration, image, list(rec.ops),
                            state.model is not CrashModel.PROCESS)
        if got.failure is not None:
            failures.append((state, got.failure))
    checked = sum(counts.values())
    measured = {"crash_states": checked, "states_by_model": counts}
    if not failures:
        return Evidence(Verdict.PASS, f"{checked} crashes inside a {what} (after each of its "
                        f"{len(inside) + 1} disk operations): every reopen consistent",
                        measured)
    # the earliest crash, and the plainest model there, is the one a person reads first
    order = {m: i for i, m in enumerate(CrashModel)}
    first, failure = min(failures, key=lambda f: (f[0].position, order[f[0].model]))
    token = _token(first)
    kwargs = {"state": token, "compaction": compaction}
    name = f"reproduce_crash_in_{what}.py"
    script = write_reproduction(ctx.workdir, name, title=f"crash inside a {what}: {failure}",
                                module=__name__, function=check_crash_in_write.__name__,
                                spec=ctx.spec.label, kwargs=kwargs)
    spec = ctx.spec
    return Evidence(
        Verdict.FAIL, f"crash inside a {what}, after disk op {first.position - start} of "
        f"{end - start} ({first.model.value}): {failure}", measured,
        details=(f"{len(failures)} of {checked} crashes inside the {what} failed",
                 f"first: {first.describe(trace)}"),
        reproduce=f"python {script}", attachments={name: Path(script).read_text()},
        replay=lambda: check_crash_in_write(spec, state=token, compaction=compaction),
        conclusive=True)


def crash_between_writes(ctx: RowContext) -> Evidence:
    """Crash at each declared failpoint, as a process crash and as power loss, and after each
    disk operation of a write (and of a compaction); every reopen must be consistent and the
    metadata agree with the vectors."""
    decl = ctx.declaration
    parts = [_crash_at(ctx, fp, power) for fp in decl.failpoints for power in (False, True)]
    inside = [_crashes_in_write(ctx, False)]
    if decl.has(Capability.COMPACT):
        inside.append(_crashes_in_write(ctx, True))
    if decl.failpoints:
        # a store whose I/O bypasses the env is still crashed at its failpoints
        inside = [p if p.measured.get("crash_states") else dataclasses.replace(
            p, verdict=Verdict.NA) for p in inside]
    ev = combine([*parts, *inside],
                 f"crashed at each of {len(decl.failpoints)} failpoints and after every disk "
                 "operation of a write (process crash and power loss): every reopen reconciled "
                 "and consistent")
    counts = dict.fromkeys((m.value for m in CrashModel), 0)
    for p in inside:
        for m, n in p.measured.get("states_by_model", {}).items():
            counts[m] += n
    return dataclasses.replace(ev, measured={**ev.measured, "states_by_model": counts,
                                             "seed": ctx.seed})


def crash_ordering_rule(ctx: RowContext) -> Evidence:
    """The failpoints are hit in the declared write order, and a crash at each, and between
    any two disk operations of a write, is survived. A store without failpoints has no
    declared order to check: its order is judged by the crashes between its writes."""
    declared = list(ctx.declaration.failpoints)
    if not declared:
        order_ev = Evidence.na("declares no failpoints: the write order is judged by crashing "
                               "after each disk operation of a write")
        return combine([order_ev, crash_between_writes(ctx)],
                       "a crash between any two disk operations of a write is survived")
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    fps = ArmedFailpoints()
    store = ctx.spec.open(PATH, _env(disk, fps, []))
    _, write = _ops(ctx.declaration)
    seen_before = len(fps.trace)
    write.run(store)
    store.close()
    order = [n for n in fps.trace[seen_before:] if n in ctx.declaration.failpoints]
    first_seen = list(dict.fromkeys(order))
    ordered = first_seen == [n for n in declared if n in first_seen] and bool(first_seen)
    order_ev = Evidence(
        Verdict.PASS if ordered else Verdict.FAIL,
        f"one write hit the failpoints in the declared order: {' -> '.join(first_seen)}"
        if ordered else f"write order {first_seen} differs from the declared {declared}",
        {"writes": 1}, replay=lambda: crash_ordering_rule(ctx))
    return combine([order_ev, crash_between_writes(ctx)],
                   "writes follow the declared order and a crash between any two is survived")
