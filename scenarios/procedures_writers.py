"""ADR-032 row 3 (two writers attempting to open the same store) and invariant 1 (single
writer rule), with real OS processes (``DuplicateWriter``).

Row 3: writer A opens the store and keeps writing; writer B opens the same store and must get
``LockHeld`` (ELOCK) with a message naming the holder, without blocking; A is unharmed: it keeps
writing, closes cleanly, and every write it acknowledged is there afterwards.

Invariant 1 adds: readers (``readonly=true``, when the backend has it) open while A writes, as
many as asked; after A is killed with SIGKILL, a new writer recovers the lock once it is stale
(the new writer runs on a clock 31 s ahead, so the 30 s stale interval has passed for it
without waiting) and A's acknowledged writes survive; and, for a store with a heartbeat lease,
the lease checks of ``procedures_lease`` (taken over only when stale, a fenced-off late write
never lands).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Capability,
    Durability,
    os_env,
)
from crashgate.harness.faults.base import requires
from crashgate.harness.faults.lease import STALE_AFTER
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.faults.writer_proc import key_for, value_for
from crashgate.harness.faults.writers import DuplicateWriter, Outcome, WriterProcess
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.scenarios.table import RowContext

__all__ = ["check_duplicate_writer", "single_writer_rule", "two_writers"]

ACK_TIMEOUT = 30.0
IDS = {"A": 1_000_000, "C": 3_000_000}


@dataclass
class _Run:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unknown: str | None = None


def _describe(o: Outcome) -> str:
    if o.kind in ("TIMEOUT", "EXITED"):
        tail = o.line.strip().splitlines()[-1:] if o.line.strip() else []
        return o.kind.lower() + (f" ({tail[0]})" if tail else "")
    first = o.message.splitlines()[0] if o.message else ""
    return f"{(o.types or [o.kind])[0]}: {first}"


def _judge_refusal(run: _Run, ob: Outcome, a: WriterProcess, path: str) -> None:
    """B's open must end in LockHeld with a clear message naming the holder."""
    if ob.kind == "READY":
        run.problems.append(f"the second writer opened {path} for writing while the first "
                            f"(pid {a.pid}) held it")
    elif ob.kind == "TIMEOUT":
        run.problems.append("the second writer blocked instead of failing with ELOCK")
    elif ob.kind != "LOCKHELD":
        run.problems.append(f"the second writer failed with {_describe(ob)} instead of "
                            "LockHeld (ELOCK)")
    else:
        msg, holder = ob.message, str(ob.info.get("holder", ""))
        if "ELOCK" not in msg and ob.info.get("code") != "ELOCK":
            run.problems.append(f"the refusal does not say ELOCK: {msg!r}")
        if not holder.strip() or holder not in msg:
            run.problems.append(f"the refusal does not name the holder: {msg!r}")
        run.notes.append(f"second writer refused: {msg.splitlines()[0]}"
                         + ("" if str(a.pid) in holder else
                            f" (the holder is not named by its pid {a.pid})"))


def _verify(spec: BackendSpec, path: str, writes: dict[str, list[str]], kv: bool) -> list[str]:
    """Every acknowledged write of each writer is in the store (opened here, in process)."""
    try:
        store = spec.open(path, os_env())
    except Exception as exc:  # noqa: BLE001 - not reopening is the finding
        return [f"the store could not be reopened afterwards: {type(exc).__name__}: {exc}"]
    missing: list[str] = []
    try:
        for who, acks in writes.items():
            if kv:
                lost = [k for i, k in enumerate(acks)
                        if store.get(k) != value_for(who, int(k.rsplit("-", 1)[1]))
                        or k != key_for(who, i)]
            else:
                have = {r.id for r in store.fetch([int(x) for x in acks])}
                lost = [x for x in acks if int(x) not in have]
            if lost:
                missing.append(f"{len(lost)} of writer {who}'s {len(acks)} acknowledged writes "
                               f"are missing or wrong (first: {lost[0]})")
    finally:
        store.close()
    return missing


def _recover(run: _Run, dw: DuplicateWriter) -> WriterProcess | None:
    """After the holder was killed: a new writer must get the store, at once or once the lock
    is stale (run on a clock 31 s ahead)."""
    c0 = dw.writer("C", id_base=IDS["C"], max_writes=3)
    oc = c0.opened()
    if oc.kind == "READY":
        run.notes.append("a new writer recovered the killed writer's lock at once")
        return c0
    if oc.kind != "LOCKHELD":
        run.problems.append(f"after the first writer was killed, a new writer failed with "
                            f"{_describe(oc)}")
        return None
    run.notes.append(f"right after the kill the lock was still held: {oc.message.splitlines()[0]}")
    c = dw.writer("C", id_base=IDS["C"], max_writes=3, clock_offset=STALE_AFTER + 1)
    oc = c.opened()
    if oc.kind != "READY":
        run.problems.append(f"a new writer {STALE_AFTER + 1:g} s later (its clock ahead) did not "
                            f"recover the killed writer's lock: {_describe(oc)}")
        return None
    run.notes.append(f"a new writer recovered the lock once it was stale ({STALE_AFTER:g} s)")
    return c


def check_duplicate_writer(spec: BackendSpec, *, workdir: str, readers: int = 0,
                           kill: bool = False) -> Evidence:
    """One round: A writes, B is refused, A is unharmed; ``readers`` read meanwhile; ``kill``:
    A is SIGKILLed and a new writer recovers the store, else A closes cleanly."""
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="dup-", dir=workdir))
    path = str(base / "store")
    first = spec.open(path, os_env())  # create it, and learn what it declares
    decl = first.declaration
    first.close()
    kv = decl.has(Capability.KV)
    run = _Run()
    writes: dict[str, list[str]] = {}
    can_read = readers > 0 and accepts_readonly(spec)
    with DuplicateWriter(spec.label, path) as dw:
        a = dw.writer("A", id_base=IDS["A"])
        oa = a.opened()
        if oa.kind != "READY" or not a.wait_acks(3, ACK_TIMEOUT):
            run.unknown = f"the first writer could not open and write: {_describe(oa)}"
        else:
            b = dw.writer("B", id_base=2_000_000)
            _judge_refusal(run, b.opened(), a, path)
            dw.kill(b)  # refused, it has exited; if it opened, it must not write on
            n = len(a.acks())
            if not a.wait_acks(n + 3, ACK_TIMEOUT):
                run.problems.append("the first writer stopped acknowledging writes after the "
                                    f"second writer's attempt: {a.stderr_tail or a.lines[-1:]}")
            procs = [dw.reader(f"R{i}", options={"readonly": "true"})
                     for i in range(readers if can_read else 0)]
            for r in procs:
                o = r.opened()
                if o.kind != "READY" or r.wait_for(("READ",), ACK_TIMEOUT) is None:
                    run.problems.append(f"reader {r.label} could not read while the writer "
                                        f"held the store: {_describe(o)}")
            if procs:
                run.notes.append(f"{len(procs)} readers (readonly=true) read while A wrote")
            elif readers:
                run.notes.append("readers not checked: the backend has no readonly option")
            if kill:
                dw.kill(a)
                if decl.durability.covers(Durability.PROCESS_CRASH):
                    writes["A"] = a.acks()
                else:
                    run.notes.append("A's writes not checked after the kill: the backend "
                                     f"promises durability '{decl.durability.value}'")
                c = _recover(run, dw)
                if c is not None:
                    if not c.wait_acks(3, ACK_TIMEOUT) or not c.stop():
                        run.problems.append(f"the recovering writer could not write and close: "
                                            f"{c.stderr_tail or c.lines[-2:]}")
                    writes["C"] = c.acks()
            else:
                if not a.stop():
                    run.problems.append("the first writer did not close cleanly after the "
                                        f"second writer's attempt: {a.stderr_tail}")
                writes["A"] = a.acks()
        spawned = len(dw.processes)
    if run.unknown is None and writes:
        run.problems += _verify(spec, path, _ids_to_str(writes, kv), kv)
    measured = {"processes": spawned, "acknowledged_writes": sum(map(len, writes.values())),
                "rounds": 1, "seconds": round(time.perf_counter() - t0, 2)}
    details = (*run.notes, *dw.fired)
    if run.unknown:
        return Evidence(Verdict.UNKNOWN, run.unknown, measured, details)
    if run.problems:
        return Evidence(Verdict.FAIL, "; ".join(run.problems), measured, details)
    what = ("second writer got ELOCK naming the holder; the first kept writing"
            + (", was killed, and a new writer recovered the store" if kill else
               " and closed cleanly") + "; every acknowledged write is there")
    return Evidence(Verdict.PASS, what, measured, details)


def _ids_to_str(writes: dict[str, list[str]], kv: bool) -> dict[str, list[str]]:
    return writes if kv else {w: [str(int(x)) for x in acks] for w, acks in writes.items()}


def _rounds(ctx: RowContext, **kwargs: Any) -> list[Evidence]:
    parts = []
    for i in range(max(1, ctx.budget.processes)):
        args = {"workdir": str(ctx.workdir), **kwargs}
        ev = check_duplicate_writer(ctx.spec, **args)
        parts.append(on_failure(ev, workdir=ctx.workdir, name=f"reproduce_writers_{i}.py",
                                spec=ctx.spec, check=check_duplicate_writer, kwargs=args))
    return parts


def two_writers(ctx: RowContext) -> Evidence:
    """Row 3: the second writer gets ELOCK with a clear message."""
    reason = requires(ctx.declaration, Capability.WRITER_LOCK, what="writer lock across processes")
    if reason is not None:
        return Evidence.na(reason)
    ev = combine(_rounds(ctx), "the second writer got ELOCK naming the holder, the first was "
                 "unharmed")
    return _with_seed(ev, ctx)


def single_writer_rule(ctx: RowContext) -> Evidence:
    """Invariant 1: one writer, unlimited readers, a stale lease (lock) recoverable."""
    decl = ctx.declaration
    parts: list[Evidence] = []
    if decl.has(Capability.WRITER_LOCK):
        parts += _rounds(ctx, readers=2, kill=True)
    if decl.has(Capability.LEASE):
        from crashgate.scenarios.procedures_lease import lease_rule  # the lease half

        parts.append(lease_rule(ctx))
    if not parts:
        return Evidence.na(requires(decl, Capability.WRITER_LOCK, Capability.LEASE,
                                    what="writer lock or lease") or "no writer lock or lease")
    ev = combine(parts, "one writer at a time, readers alongside, a dead writer's lock or "
                 "lease recovered once stale")
    return _with_seed(ev, ctx)


def _with_seed(ev: Evidence, ctx: RowContext) -> Evidence:
    return Evidence(ev.verdict, ev.summary, {**ev.measured, "seed": ctx.seed}, ev.details,
                    ev.reproduce, ev.replay, ev.attachments)


