"""Rows about crashes: ADR-032 row 1 (power loss during ingest), row 2 (crash between RVF write
and metadata write) and invariant 2 (crash ordering)."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from crashgate.backends import Capability, Compactable, Env, SimulatedCrash, VectorRecord
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashcheck import allowed_range, judge
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Compact, Op, Put, Upsert
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.powerloss import DATA_DIR, check_state, run_powerloss
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.harness.workload import PROFILES
from crashgate.scenarios.table import RowContext

__all__ = ["crash_between_writes", "crash_ordering_rule", "power_loss_during_ingest"]


def _token(state: Any) -> str:
    from crashgate.harness.cli_powerloss import state_token
    return state_token(state)


def power_loss_during_ingest(ctx: RowContext) -> Evidence:
    """Crash states at every fsync window of a seeded workload, recovered and judged."""
    profile = "small"
    ops, budget = ctx.budget.workload_ops, ctx.budget.crash_states
    report = run_powerloss(ctx.spec, seed=ctx.seed, ops=ops, budget=budget,
                           profile=PROFILES[profile])
    measured = {"crash_states": report.states_checked, "crash_points": report.positions,
                "ops": ops, "seed": ctx.seed}
    if report.states_checked == 0:
        return Evidence(Verdict.UNKNOWN, "no crash state could be built: nothing checked",
                        measured)
    if not report.violations:
        return Evidence(
            Verdict.PASS,
            f"{report.states_checked} crash states recovered, none showed a torn or partial "
            f"commit (held to durability '{report.durability.value}')", measured)
    first = min(report.first.values(), key=lambda v: v.state.position)
    counts = ", ".join(f"{k.value}: {n}" for k, n in report.violations.items())
    cmd = " ".join(shlex.quote(p) for p in [
        "crashgate", "powerloss", ctx.spec.label, "--seed", str(ctx.seed), "--ops", str(ops),
        "--profile", profile, "--state", _token(first.state)])

    def replay() -> Evidence:
        verdict, _ = check_state(ctx.spec, seed=ctx.seed, ops=ops, profile=PROFILES[profile],
                                 state=first.state)
        if verdict.violation is None:
            return Evidence(Verdict.PASS, f"replay showed no violation: {verdict.detail}",
                            {"crash_states": 1})
        return Evidence(Verdict.FAIL, f"{verdict.violation.value}: {verdict.detail}",
                        {"crash_states": 1})

    return Evidence(
        Verdict.FAIL, f"{sum(report.violations.values())} of {report.states_checked} crash "
        f"states violate: {counts}", measured,
        details=(f"first: {first.kind.value}: {first.state.describe()}", first.detail),
        reproduce=cmd, replay=replay)


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
        rewrite = VectorRecord.of(1, [0.5] * 8, {"tag": "rewritten", "n": 99})
        return (Upsert(_records(1, 5, 8, "committed")),
                Upsert((*_records(100, 5, 8, "in-flight"), rewrite)))
    return Put("committed", b"v1"), Put("in-flight", b"v2")


def _metadata_agrees(store: Any, ids: list[int]) -> str | None:
    """Query results must carry the same metadata as the records themselves (the cache and the
    source of truth agree after reconciliation)."""
    if not ids:
        return None
    recs = {r.id: r for r in store.fetch(ids)}
    if not recs:
        return None
    probe = next(iter(recs.values())).vector
    for hit in store.query(probe, 10):
        if hit.id in recs and dict(hit.metadata) != dict(recs[hit.id].metadata):
            return f"id {hit.id}: query metadata {dict(hit.metadata)} != record metadata " \
                   f"{dict(recs[hit.id].metadata)}"
    return None


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
        path = f"{DATA_DIR}/store"
        store = ctx.spec.open(path, _env(disk, fps, []))
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
    ops = [committed, in_flight]
    states: list[StoreState] = prefix_states(ops)
    index: dict[str, list[int]] = {}
    for j, s in enumerate(states):
        index.setdefault(s.digest, []).append(j)
    after: list[tuple[str, dict[str, object]]] = []
    kind = "power loss" if power else "process crash"
    ids = [r.id for op in ops if isinstance(op, Upsert) for r in op.records]
    try:
        recovered = reopen_after_crash(ctx.spec.open, path, _env(SimDisk(image), None, after),
                                       decl).store
        seen: StoreState | BaseException = read_state(recovered, ids)
        mismatch = _metadata_agrees(recovered, ids)
        recovered.close()
    except Exception as exc:  # noqa: BLE001 - failing to reopen is the finding
        seen, mismatch = exc, None
    verdict = judge(seen, states, index, ops, allowed_range(1, True, decl.durability, power))
    what = "compaction" if isinstance(in_flight, Compact) else "write"
    measured = {"crashes": 1}
    where = f"{kind} at {failpoint} (during a {what})"
    reconciled = sorted({str(d.get("action", e)) for e, d in after if e.startswith("epoch")})
    note = f"; next open: epoch {', '.join(reconciled)}" if reconciled else ""
    if verdict.violation is not None:
        return Evidence(Verdict.FAIL, f"{where}: {verdict.violation.value}: {verdict.detail}",
                        measured, replay=lambda: _crash_at(ctx, failpoint, power))
    if mismatch:
        return Evidence(Verdict.FAIL, f"{where}: metadata not rebuilt: {mismatch}", measured,
                        replay=lambda: _crash_at(ctx, failpoint, power))
    return Evidence(Verdict.PASS, f"{where}: reopened consistent ({verdict.detail}){note}",
                    measured)


def crash_between_writes(ctx: RowContext) -> Evidence:
    """Crash at each declared failpoint, as a process crash and as power loss; reopen must be
    consistent and the metadata agree with the vectors."""
    parts = [_crash_at(ctx, fp, power)
             for fp in ctx.declaration.failpoints for power in (False, True)]
    ev = combine(parts, f"crashed at each of {len(ctx.declaration.failpoints)} failpoints "
                 "(process crash and power loss): every reopen reconciled and consistent")
    return dataclasses.replace(ev, measured={**ev.measured, "seed": ctx.seed})


def crash_ordering_rule(ctx: RowContext) -> Evidence:
    """The failpoints are hit in the declared write order, and a crash at each is survived."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    fps = ArmedFailpoints()
    store = ctx.spec.open(f"{DATA_DIR}/store", _env(disk, fps, []))
    _, write = _ops(ctx.declaration)
    seen_before = len(fps.trace)
    write.run(store)
    store.close()
    order = [n for n in fps.trace[seen_before:] if n in ctx.declaration.failpoints]
    declared = list(ctx.declaration.failpoints)
    first_seen = list(dict.fromkeys(order))
    ordered = first_seen == [n for n in declared if n in first_seen] and bool(first_seen)
    order_ev = Evidence(
        Verdict.PASS if ordered else Verdict.FAIL,
        f"one write hit the failpoints in the declared order: {' -> '.join(first_seen)}"
        if ordered else f"write order {first_seen} differs from the declared {declared}",
        {"writes": 1}, replay=lambda: crash_ordering_rule(ctx))
    return combine([order_ev, crash_between_writes(ctx)],
                   "writes follow the declared order and a crash between any two is survived")
