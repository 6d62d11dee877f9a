"""ADR-032 row 6 (browser refresh during write) and the lease half of invariant 1, on a
virtual clock (``LeaseExpiry``).

Row 6, per crash point (before the write's fsync, and at each failpoint the store declares):
the holder runs in a process of its own and dies mid-write (a refresh); the next writer is
refused while the lease may still be fresh (unless the store can prove the holder dead and takes
over at once: both are allowed, and said), acquires a fresh lease once it is stale (30 s), finds
the store uncorrupted (exactly the acknowledged writes, plus or minus the one in flight), can
write with its new lease, and hands the store on cleanly.

Both also bring an expired holder back (``check_late_write``, in this process, so the holder is
alive): holder X writes, then is paused (a frozen tab, a stopped process: its clock stands still)
while 31 s pass for everyone else; writer Y opens and, seeing the lease stale, may take it over
and writes; X comes back and attempts its next write, a second later by its own clock. It must
be refused (fenced: its lease token is no longer the record's) and must not land; Y writes on
and closes; a reopen shows exactly the acknowledged writes. A store that refuses Y instead
(it knows X is alive) is allowed, and said; X's write then either lands, acknowledged, or not.

Invariant 1's lease half (``check_fencing``, in this process): a second writer is refused while
the holder's lease is fresh; readers open meanwhile; once the idle holder's lease is stale a new
writer may take it over, and then the old holder's late write must be refused and never land
(fencing); if the takeover is refused instead (the holder is alive and the store knows it), a
late write either lands (acknowledged) or does not (refused), never both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crashgate.backends import BackendSpec, Capability, Declaration, LockHeld, VectorRecord
from crashgate.harness.crashcheck import allowed_range, judge
from crashgate.harness.faults.base import requires
from crashgate.harness.faults.lease import LeaseExpiry
from crashgate.harness.faults.lease_proc import DATA_DIR, STORE_PATH
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Op, Put, Upsert, op_for
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["check_fencing", "check_late_write", "check_refresh", "lease_rule",
           "refresh_during_write"]

HOLDER_OPS = 4          # the holder's acknowledged writes, one virtual second apart
FRESH_PROBES = (0.0, 20.0)  # seconds after the death: the lease is at most 25 s old then


def _extra_op(ops: Sequence[Op], decl: Declaration, tag: str, rid: int) -> Op:
    """A write no workload makes: a key or vector id of its own (its tag as metadata, unless
    the store keeps none: ``ops.op_for``)."""
    if decl.has(Capability.KV):
        return Put(f"{tag}-write", f"{tag}!".encode())
    dim = next((len(r.vector) for op in ops if isinstance(op, Upsert) for r in op.records),
               PROFILES["small"].dimension)
    return op_for(decl, Upsert((VectorRecord.of(rid, [0.25] * dim, {"tag": tag}),)))


def _ids(ops: Sequence[Op]) -> set[int]:
    return {r.id for op in ops if isinstance(op, Upsert) for r in op.records}


def _index(states: Sequence[StoreState]) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for j, s in enumerate(states):
        index.setdefault(s.digest, []).append(j)
    return index


def _line(exc: BaseException) -> str:
    text = str(exc).splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def check_refresh(spec: BackendSpec, *, crash_at: str, seed: int, workdir: str,
                  ops: int = HOLDER_OPS) -> Evidence:
    """One refresh: the holder dies at ``crash_at``; the lease expires; the next open gets a
    fresh lease; no corruption."""
    t0 = time.perf_counter()
    fault = LeaseExpiry(crash_at=crash_at)
    holder = fault.run_holder(spec.label, ops=ops, seed=seed, workdir=Path(workdir))
    measured: dict[str, Any] = {"processes": 1, "writes": holder.acknowledged, "seed": seed}
    if holder.error:
        return Evidence(Verdict.UNKNOWN, f"the lease holder could not run: "
                        f"{holder.error.strip().splitlines()[-1]}", measured)
    disk = SimDisk(holder.image)
    notes: list[str] = []
    problems: list[str] = []
    nxt = None
    for probe in FRESH_PROBES:
        fault.wait(probe)
        try:
            nxt = spec.open(STORE_PATH, fault.env(disk))
        except LockHeld as exc:
            notes.append(f"{fault.clock.time() - holder.wall:.0f} s after the refresh: refused "
                         f"({str(exc).splitlines()[0]})")
            continue
        except Exception as exc:  # noqa: BLE001 - a damaged store is the finding
            problems.append(f"opening after the refresh failed: {_line(exc)}")
            break
        notes.append(f"{fault.clock.time() - holder.wall:.0f} s after the refresh the next "
                     "writer got the store (the store knew its holder was dead)")
        break
    if nxt is None and not problems:
        fault.expire()
        try:
            nxt = spec.open(STORE_PATH, fault.env(disk))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{fault.clock.time() - holder.wall:.0f} s after the refresh (the "
                            f"lease stale) the next open still failed: {_line(exc)}")
    if nxt is not None:
        problems += _after_takeover(spec, fault, disk, holder.ops, holder.acknowledged,
                                    holder.in_flight, nxt, notes)
    measured["seconds"] = round(time.perf_counter() - t0, 2)
    where = holder.crashed or "between writes (the crash point was not on a write's path)"
    details = (f"holder died at {where} after {holder.acknowledged} acknowledged writes",
               *notes, *fault.fired)
    if problems:
        return Evidence(Verdict.FAIL, f"refresh at {crash_at}: " + "; ".join(problems),
                        measured, details, conclusive=True)  # each is what the store did
    return Evidence(Verdict.PASS, f"refresh at {crash_at}: the lease expired, the next open got "
                    "a fresh lease, no corruption", measured, details)


def _after_takeover(spec: BackendSpec, fault: LeaseExpiry, disk: SimDisk, ops: Sequence[Op],
                    acked: int, in_flight: bool, store: Any, notes: list[str]) -> list[str]:
    """The new writer sees no corruption, can write, and hands the store on."""
    states = prefix_states(ops)
    extra = _extra_op(ops, store.declaration, "after-refresh", 900_001)
    ids = _ids([*ops, extra])
    try:
        seen: StoreState | BaseException = read_state(store, ids)
    except Exception as exc:  # noqa: BLE001
        seen = exc
    verdict = judge(seen, states, _index(states), ops,
                    allowed_range(acked, in_flight, store.declaration.durability, False))
    if verdict.violation is not None:
        store.close()
        return [f"after the takeover: {verdict.violation.value}: {verdict.detail}"]
    try:
        extra.run(store)
        store.close()
    except Exception as exc:  # noqa: BLE001
        return [f"the new writer could not write with its fresh lease: {_line(exc)}"]
    want = prefix_states([*ops[: verdict.matched or 0], extra])[-1]
    try:
        again = spec.open(STORE_PATH, fault.env(disk))
        seen2 = read_state(again, ids)
        again.close()
    except Exception as exc:  # noqa: BLE001
        return [f"after the new writer closed, the store could not be reopened: {_line(exc)}"]
    if seen2 != want:
        return ["after the new writer closed, the store shows "
                + "; ".join(seen2.describe_diff(want))]
    notes.append(f"the new writer saw the state after {verdict.matched} of {len(ops)} ops, "
                 "wrote with its fresh lease and closed; a reopen saw it all")
    return []


def check_fencing(spec: BackendSpec, *, seed: int) -> Evidence:
    """In this process: single writer while fresh, readers alongside, takeover only when
    stale, and a fenced-off late write never lands."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    fault = LeaseExpiry()
    x = spec.open(STORE_PATH, fault.env(disk))
    decl = x.declaration
    ops = random_workload(decl, 2, seed, PROFILES["small"])
    late = _extra_op(ops, decl, "late", 900_002)
    newer = _extra_op(ops, decl, "new-writer", 900_003)
    ids = _ids([*ops, late, newer])
    problems: list[str] = []
    notes: list[str] = []
    opens = 1
    for op in ops:
        fault.wait(1.0)
        op.run(x)
    try:
        opens += 1
        y = spec.open(STORE_PATH, fault.env(disk))
    except LockHeld as exc:
        notes.append(f"a second writer was refused while the lease was fresh: "
                     f"{str(exc).splitlines()[0]}")
    else:
        y.close()
        problems.append("a second writer opened the store while the first held a fresh lease")
    if accepts_readonly(spec):
        opens += 1
        try:
            r = spec.open(STORE_PATH, fault.env(disk), readonly="true")
            read_state(r, ids)
            r.close()
            notes.append("a reader (readonly=true) read while the writer held the lease")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"a reader could not read while the writer held the lease: "
                            f"{_line(exc)}")
    fault.expire()  # the holder idles past the stale interval: no heartbeat
    y = None
    try:
        opens += 1
        y = spec.open(STORE_PATH, fault.env(disk))
    except LockHeld as exc:
        notes.append(f"after {fault.stale_after:g} s idle, a takeover was refused (the holder "
                     f"is alive and the store knows it): {str(exc).splitlines()[0]}")
    late_acked, _ = _attempt_late_write(x, y, late, newer, "old", notes, problems)
    opens += 1
    try:
        z = spec.open(STORE_PATH, fault.env(disk))
        seen = read_state(z, ids)
        z.close()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the store could not be reopened at the end: {_line(exc)}")
    else:
        landed = _has(seen, late)
        if late_acked and not landed:
            problems.append("an acknowledged late write is missing")
        if not late_acked and landed:
            problems.append("a refused (fenced-off) late write landed in the store")
        if y is not None and not _has(seen, newer):
            problems.append("the new writer's write is missing")
    measured = {"opens": opens, "writes": 4, "seed": seed}
    if problems:
        return Evidence(Verdict.FAIL, "lease: " + "; ".join(problems), measured, tuple(notes),
                        conclusive=True)  # each is what the store did
    taken = "taken over once stale and the old holder fenced off" if y is not None else \
        "kept by its live holder past the stale interval"
    return Evidence(Verdict.PASS, f"lease: single writer while fresh; {taken}; no late write "
                    "landed unacknowledged", measured, tuple(notes))


def check_late_write(spec: BackendSpec, *, seed: int) -> Evidence:
    """In this process: holder X paused past the stale interval, Y takes over (or is refused),
    X's late write is fenced and never lands, Y's writes are intact (see the module
    docstring)."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    fault = LeaseExpiry()
    x = spec.open(STORE_PATH, fault.env(disk, holder=True))
    decl = x.declaration
    ops = random_workload(decl, 3, seed, PROFILES["small"])
    late = _extra_op(ops, decl, "late", 900_004)
    mine = [_extra_op(ops, decl, f"taker-{i}", 900_005 + i) for i in range(2)]
    ids = _ids([*ops, late, *mine])
    problems: list[str] = []
    notes: list[str] = []
    acked: list[Op] = []
    for op in ops:
        fault.wait(1.0)
        op.run(x)
        acked.append(op)
    fault.pause_holder(fault.stale_after + 1.0)
    y = None
    try:
        y = spec.open(STORE_PATH, fault.env(disk))
    except LockHeld as exc:
        notes.append(f"with the holder paused {fault.stale_after + 1:g} s, a takeover was "
                     f"refused (the holder is alive and the store knows it): {_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - the store's answer
        problems.append(f"a new writer, the lease stale, could not open: {_line(exc)}")
    if y is not None:
        try:
            mine[0].run(y)
            acked.append(mine[0])
            notes.append("the lease went stale while its holder was paused: a new writer took "
                         "it over and wrote")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"the new writer could not write with the lease it took: "
                            f"{_line(exc)}")
    fault.wait(1.0)  # the holder comes back: a second later by its own clock
    late_acked, taker_acked = _attempt_late_write(x, y, late, mine[1], "paused", notes,
                                                  problems)
    acked += [op for op, ok in ((late, late_acked), (mine[1], taker_acked)) if ok]
    try:
        again = reopen_after_crash(spec.open, STORE_PATH, fault.env(disk), decl)
        seen = read_state(again.store, ids)
        again.store.close()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the store could not be reopened at the end: {_line(exc)}")
    else:
        want = prefix_states(acked)[-1]
        if not late_acked and _has(seen, late):
            problems.append("the refused (fenced-off) late write landed in the store")
        elif seen != want:
            problems.append("a reopen does not show exactly the acknowledged writes: "
                            + "; ".join(seen.describe_diff(want)))
    measured = {"opens": 3, "writes": len(acked), "seed": seed}
    details = (*notes, *fault.fired)
    if problems:
        return Evidence(Verdict.FAIL, "late write: " + "; ".join(problems), measured, details,
                        conclusive=True)  # each is what the store did
    how = ("fenced off, and it never landed" if y is not None else
           "kept by its live holder, the takeover refused")
    return Evidence(Verdict.PASS, f"late write: a holder paused past the stale interval was "
                    f"{how}; a reopen showed exactly the acknowledged writes", measured, details)


def _attempt_late_write(x: Any, y: Any, late: Op, then: Op, who: str, notes: list[str],
                        problems: list[str]) -> tuple[bool, bool]:
    """The old holder ``x`` attempts ``late``; when ``y`` took its lease over, the write must
    be refused (fencing), and ``y`` then writes ``then`` and closes; ``x`` is closed last.
    Returns whether the late write and ``then`` were acknowledged."""
    try:
        late.run(x)
        acked = True
    except Exception as exc:  # noqa: BLE001 - a refusal is what fencing looks like
        acked = False
        notes.append(f"the {who} holder's late write was refused: {_line(exc)}")
    then_acked = False
    if y is not None:
        if acked:
            problems.append(f"the {who} holder's late write was acknowledged after a new "
                            "writer had taken its lease over (no fencing)")
        try:
            then.run(y)
            then_acked = True
            y.close()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"after the old holder's late write, the new writer could not "
                            f"write and close: {_line(exc)}")
    with contextlib.suppress(Exception):  # a fenced writer may refuse even to close
        x.close()
    return acked, then_acked


def _has(state: StoreState, op: Op) -> bool:
    if isinstance(op, Put):
        return state.kv_dict().get(op.key) == op.value
    if isinstance(op, Upsert):
        have = {v[0] for v in state.vectors}
        return all(r.id in have for r in op.records)
    return False


# -- the rows ------------------------------------------------------------------------------


def _needs(ctx: RowContext) -> str | None:
    return requires(ctx.declaration, Capability.LEASE, what="heartbeat writer lease")


def _crash_points(ctx: RowContext) -> list[str]:
    return ["sync", *(f"failpoint:{n}" for n in ctx.declaration.failpoints)]


def _late_write(ctx: RowContext, seed: int, name: str) -> Evidence:
    kwargs = {"seed": seed}
    return on_failure(check_late_write(ctx.spec, **kwargs), workdir=ctx.workdir, name=name,
                      spec=ctx.spec, check=check_late_write, kwargs=kwargs)


def _refresh(ctx: RowContext, crash_at: str, seed: int, i: int) -> Evidence:
    kwargs = {"crash_at": crash_at, "seed": seed, "workdir": str(ctx.workdir)}
    ev = check_refresh(ctx.spec, **kwargs)  # type: ignore[arg-type]
    return on_failure(ev, workdir=ctx.workdir, name=f"reproduce_refresh_{i}.py", spec=ctx.spec,
                      check=check_refresh, kwargs=kwargs)


def refresh_during_write(ctx: RowContext) -> Evidence:
    """Row 6: a refresh kills the writer mid-write at each crash point; the lease expires, the
    next open acquires a fresh one, and nothing is corrupt."""
    if (na := _needs(ctx)) is not None:
        return Evidence.na(na + "; a writer lock alone is checked by row 3 and invariant 1")
    t0 = time.perf_counter()
    parts: list[Evidence] = []
    rounds = max(1, ctx.budget.processes)
    for r in range(rounds):
        for crash_at in _crash_points(ctx):
            parts.append(_refresh(ctx, crash_at, ctx.seed + r, len(parts)))
        # a page that is frozen, not killed, and comes back after the next one took over
        parts.append(_late_write(ctx, ctx.seed + r, f"reproduce_late_write_{r}.py"))
    ev = combine(parts, f"{len(parts) - rounds} refreshes mid-write: each lease expired, the "
                 f"next open got a fresh lease, no corruption; {rounds} holders paused past the "
                 "stale interval came back, and no late write landed after a takeover")
    return dataclasses.replace(ev, measured={**ev.measured, "seed": ctx.seed,
                               "seconds": round(time.perf_counter() - t0, 2)})


def lease_rule(ctx: RowContext) -> Evidence:
    """Invariant 1's lease half: fencing and single writer in process, one refresh takeover."""
    if (na := _needs(ctx)) is not None:
        return Evidence.na(na)
    kwargs = {"seed": ctx.seed}
    fencing = on_failure(check_fencing(ctx.spec, **kwargs), workdir=ctx.workdir,
                         name="reproduce_fencing.py", spec=ctx.spec, check=check_fencing,
                         kwargs=kwargs)
    late = _late_write(ctx, ctx.seed, "reproduce_late_write.py")
    return combine([fencing, late, _refresh(ctx, "sync", ctx.seed, 99)],
                   "one writer lease at a time; a stale lease is recovered and the old holder "
                   "fenced off")
