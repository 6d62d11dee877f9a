"""ADR-032 row 3 (two writers attempting to open the same store) and invariant 1 (single
writer rule), with real OS processes (``DuplicateWriter``).

Row 3: writer A opens the store and keeps writing; writer B opens the same store and must get
``LockHeld`` (ELOCK) with a message naming the holder, without blocking; A is unharmed: it keeps
writing, closes cleanly, and every write it acknowledged is there afterwards.

A lock is never stolen from a live holder, however old it is (ADR-032's Node writer holds an
``flock``, which lasts as long as its process): A then holds the store for longer than the stale
interval (30 s) twice, without real waiting. First idle (paused, the store open), with the next
writer on a clock 31 s ahead; then writing while 31 s pass on its own clock, 5 s a write
(so a heartbeat that writes renew stays fresh), with the next writer on that clock. Both must get
``LockHeld`` naming A, and A goes on writing.

A store that reads the real clock (``Declaration.real_clock``: a package behind a process
driver, which ``clock_offset`` cannot reach) gets the time for real instead (``passage``): the
idle hold waits 31 real seconds once per row (the first round that holds; later rounds' holds,
and every writing hold, are on crashgate's clock only, and their notes say so), and a killed
writer's lock still held at once is retried after 31 real seconds. So a row costs one or two
real waits at the quick and standard budgets; ``measured["real_seconds_waited"]`` says how long.

Invariant 1 adds: readers (``readonly=true``, when the backend has it) open while A writes, as
many as asked; after A is killed with SIGKILL, a new writer recovers the lock once it is stale
(the new writer runs on a clock 31 s ahead, so the 30 s stale interval has passed for it
without waiting; for a real-clock store, it opens 31 real seconds later) and A's acknowledged
writes survive. Its rounds alternate: after a hold past the stale interval the dead writer's
lock is old already, so every other round leaves the hold out and the lock of a writer killed
young is seen recovered only once stale. For a store with
a heartbeat lease, it adds the lease checks of ``procedures_lease`` (taken over only when
stale, a fenced-off late write never lands, a paused holder's late write fenced off too).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Capability,
    Declaration,
    Durability,
    Unsupported,
    os_env,
)
from crashgate.harness.faults.base import requires
from crashgate.harness.faults.lease import STALE_AFTER
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.faults.writer_proc import key_for, value_for
from crashgate.harness.faults.writers import DuplicateWriter, Outcome, WriterProcess
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.unsupported import cannot_answer
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.scenarios.table import RowContext

__all__ = ["Passage", "check_duplicate_writer", "passage", "round_plan", "single_writer_rule",
           "two_writers"]

ACK_TIMEOUT = 30.0
IDS = {"A": 1_000_000, "C": 3_000_000}


@dataclass
class _Run:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unknown: str | None = None
    conclusive: bool = False
    """A problem was seen in what the store did (a second writer got in, a refusal that does
    not say who holds the store, acknowledged writes missing), not a timeout or a dead child."""
    offset: float = 0.0
    """How far A's clock runs ahead of the real one (it ages while it holds the store)."""
    waited: float = 0.0
    """Real seconds slept so that time passed for a store that reads the real clock."""
    sleep: Callable[[float], None] = time.sleep

    def violation(self, problem: str) -> None:
        self.problems.append(problem)
        self.conclusive = True

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass for real (bounded: the stale interval and a second)."""
        t0 = time.perf_counter()
        self.sleep(seconds)
        self.waited += time.perf_counter() - t0


@dataclass(frozen=True)
class Passage:
    """How time passes for the store in one check: ``real`` seconds slept before the next
    writer opens, else ``ahead`` seconds added to that writer's clock (no waiting)."""

    real: float
    ahead: float


def passage(decl: Declaration, seconds: float, *, real_allowed: bool = True) -> Passage:
    """``seconds`` for real when the store reads the real clock (``decl.real_clock``: moving
    ``env.clock`` does not reach it) and this check may wait (``real_allowed``), else on the
    next writer's clock."""
    if decl.real_clock and real_allowed:
        return Passage(real=seconds, ahead=0.0)
    return Passage(real=0.0, ahead=seconds)


def _describe(o: Outcome) -> str:
    if o.kind in ("TIMEOUT", "EXITED"):
        tail = o.line.strip().splitlines()[-1:] if o.line.strip() else []
        return o.kind.lower() + (f" ({tail[0]})" if tail else "")
    first = o.message.splitlines()[0] if o.message else ""
    return f"{(o.types or [o.kind])[0]}: {first}"


def _judge_refusal(run: _Run, ob: Outcome, a: WriterProcess, path: str, when: str = "") -> None:
    """B's open must end in LockHeld with a clear message naming the holder; ``when`` says how
    long A had held the store, for the messages."""
    at = f" ({when})" if when else ""
    if ob.kind == "READY":
        run.violation(f"the second writer opened {path} for writing while the first "
                      f"(pid {a.pid}, alive) held it{at}")
    elif ob.kind == "TIMEOUT":
        run.problems.append(f"the second writer blocked instead of failing with ELOCK{at}")
    elif ob.kind == "EXITED":
        run.problems.append(f"the second writer exited without a word{at}: {_describe(ob)}")
    elif ob.kind != "LOCKHELD":
        run.violation(f"the second writer failed with {_describe(ob)} instead of "
                      f"LockHeld (ELOCK){at}")
    else:
        msg, holder = ob.message, str(ob.info.get("holder", ""))
        if "ELOCK" not in msg and ob.info.get("code") != "ELOCK":
            run.violation(f"the refusal does not say ELOCK{at}: {msg!r}")
        if not holder.strip() or holder not in msg:
            run.violation(f"the refusal does not name the holder{at}: {msg!r}")
        run.notes.append(f"second writer refused{at}: {msg.splitlines()[0]}"
                         + ("" if str(a.pid) in holder else
                            f" (the holder is not named by its pid {a.pid})"))


def _held_past_stale(run: _Run, dw: DuplicateWriter, a: WriterProcess, path: str,
                     decl: Declaration, real_hold: bool) -> None:
    """A holds the store for longer than the stale interval, alive, idle and then writing; a
    writer whose clock is past the interval must be refused each time, and A goes on.
    ``real_hold``: for a store that reads the real clock, the idle hold waits for real."""
    ahead = STALE_AFTER + 1
    idle = passage(decl, ahead, real_allowed=real_hold)
    if a.command("pause", "PAUSED") is None:
        run.problems.append(f"the first writer ended before it could be paused: "
                            f"{a.stderr_tail or a.lines[-1:]}")
        return
    if idle.real:
        run.wait(idle.real)
    b = dw.writer("B1", id_base=2_100_000, clock_offset=idle.ahead)
    _judge_refusal(run, b.opened(), a, path, f"the first idle {ahead:g} s, waited for real"
                   if idle.real else f"the first idle, the second's clock {ahead:g} s ahead")
    dw.kill(b)
    if a.command("resume", "RESUMED") is None:
        run.problems.append(f"the first writer ended while it sat idle: "
                            f"{a.stderr_tail or a.lines[-1:]}")
        return
    aged = a.command(f"age {ahead:g}", "AGED", ACK_TIMEOUT)
    if aged is None:
        fail = next((ln for ln in a.lines if ln.startswith("WRITEFAIL")), "")
        run.problems.append(f"the first writer could not keep writing while {ahead:g} s passed "
                            f"on its clock: {fail or a.stderr_tail or a.lines[-1:]}")
        return
    run.offset = float(aged.split()[1])
    b = dw.writer("B2", id_base=2_200_000, clock_offset=run.offset)
    _judge_refusal(run, b.opened(), a, path, f"the first writing for {ahead:g} s, both clocks "
                   "on")
    dw.kill(b)
    if decl.real_clock:
        # say exactly which refusal did not have the time pass for real
        run.notes.append(
            "not real time (the store reads the real clock): "
            + ("" if idle.real else f"the idle hold (B1: its clock {ahead:g} s ahead) and ")
            + f"the writing hold (B2: {ahead:g} s passed on the writers' clocks only, so no "
            f"real {ahead:g} s of writing renewed the lock); "
            + (f"B2 met a live lock held more than {run.waited:.0f} real seconds (the idle hold)"
               if idle.real else "the row's first round holds idle for real"))


def _verify(spec: BackendSpec, path: str, writes: dict[str, list[str]], kv: bool,
            intruded: Declaration | None) -> list[str]:
    """Every acknowledged write of each writer is in the store (opened here, in process).
    ``intruded``: a second writer got in and was killed (already a finding), and may have left
    its lock: open as after a crash (``reopen_after_crash``: read-only if need be)."""
    try:
        store = (spec.open(path, os_env()) if intruded is None else
                 reopen_after_crash(spec.open, path, os_env(), intruded).store)
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


def _recover(run: _Run, dw: DuplicateWriter, decl: Declaration) -> WriterProcess | None:
    """After the holder was killed: a new writer must get the store, at once or once the lock
    is stale (run on a clock 31 s ahead, or 31 real seconds later for a store that reads the
    real clock)."""
    c0 = dw.writer("C", id_base=IDS["C"], max_writes=3, clock_offset=run.offset)
    oc = c0.opened()
    if oc.kind == "READY":
        run.notes.append("a new writer recovered the killed writer's lock at once")
        return c0
    if oc.kind != "LOCKHELD":
        run.problems.append(f"after the first writer was killed, a new writer failed with "
                            f"{_describe(oc)}")
        return None
    run.notes.append(f"right after the kill the lock was still held: {oc.message.splitlines()[0]}")
    later = passage(decl, STALE_AFTER + 1)
    if later.real:
        run.wait(later.real)
    c = dw.writer("C", id_base=IDS["C"], max_writes=3, clock_offset=run.offset + later.ahead)
    oc = c.opened()
    how = "waited for real" if later.real else "its clock ahead"
    if oc.kind != "READY":
        run.problems.append(f"a new writer {STALE_AFTER + 1:g} s later ({how}) did not "
                            f"recover the killed writer's lock: {_describe(oc)}")
        if not later.real:
            run.notes.append("the time passed on the env's clock only: a store that reads the "
                             "real clock without declaring it sees none, so for it this checked "
                             "that the kill released the lock at once, as an flock (ADR-032's "
                             "Node lock) is released")
        return None
    run.notes.append(f"a new writer recovered the lock once it was stale ({STALE_AFTER:g} s, "
                     f"{how})")
    return c


def check_duplicate_writer(spec: BackendSpec, *, workdir: str, readers: int = 0,
                           kill: bool = False, past_stale: bool = True,
                           real_hold: bool = True) -> Evidence:
    """One round: A writes, B is refused, A is unharmed; ``past_stale``: A then holds the
    store for more than the stale interval, and later writers are refused too (``real_hold``:
    idle for 31 real seconds if the store reads the real clock); ``readers`` read meanwhile;
    ``kill``: A is SIGKILLed and a new writer recovers the store, else A closes cleanly."""
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
            if past_stale:
                _held_past_stale(run, dw, a, path, decl, real_hold)
            n = len(a.acks())
            if not a.wait_acks(n + 3, ACK_TIMEOUT):
                run.problems.append("the first writer stopped acknowledging writes after the "
                                    f"second writer's attempt: {a.stderr_tail or a.lines[-1:]}")
            procs = [dw.reader(f"R{i}", options={"readonly": "true"})
                     for i in range(readers if can_read else 0)]
            for r in procs:
                o = r.opened()
                if o.kind != "READY" or r.wait_for(("READ ",), ACK_TIMEOUT) is None:
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
                c = _recover(run, dw, decl)
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
    unread: str | None = None   # the store cannot read its records back (Unsupported)
    if run.unknown is None and writes:
        intruded = decl if run.conclusive else None
        try:
            problems = _verify(spec, path, _ids_to_str(writes, kv), kv, intruded)
        except Unsupported as exc:   # the writers are still judged; the data is not
            unread, problems = cannot_answer(exc), []
        for problem in problems:
            run.violation(problem)
    measured = {"processes": spawned, "acknowledged_writes": sum(map(len, writes.values())),
                "rounds": 1, "seconds": round(time.perf_counter() - t0, 2)}
    if decl.real_clock:  # the time that passed for the store, slept for real
        measured["real_seconds_waited"] = round(run.waited, 1)
    details = (*run.notes, *dw.fired)
    if run.unknown:
        return Evidence(Verdict.UNKNOWN, run.unknown, measured, details)
    if run.problems:
        return Evidence(Verdict.FAIL, "; ".join(run.problems), measured, details,
                        conclusive=run.conclusive)
    what = ("second writer got ELOCK naming the holder, also once the first had held the store "
            f"idle and writing for more than {STALE_AFTER:g} s; the first kept writing"
            + (", was killed, and a new writer recovered the store" if kill else
               " and closed cleanly"))
    if unread is not None:
        return Evidence(Verdict.UNKNOWN, f"acknowledged writes not checked ({unread}); the "
                        f"{what}", measured, details)
    return Evidence(Verdict.PASS, f"{what}; every acknowledged write is there", measured,
                    details)


def _ids_to_str(writes: dict[str, list[str]], kv: bool) -> dict[str, list[str]]:
    return writes if kv else {w: [str(int(x)) for x in acks] for w, acks in writes.items()}


def round_plan(rounds: int, *, alternate: bool, real_clock: bool) -> list[tuple[bool, bool]]:
    """``(past_stale, real_hold)`` for each of ``rounds`` rounds: with ``alternate``, every
    other round (from the second) leaves out the hold past the stale interval, so that a killed
    writer's lock is still fresh and its recovery once stale is seen too; a store that reads
    the real clock waits the hold for real in the first round that holds only (one 31 s wait
    a row, not one a round)."""
    plan: list[tuple[bool, bool]] = []
    for i in range(max(1, rounds)):
        past_stale = not (alternate and i % 2)
        plan.append((past_stale, real_clock and past_stale
                     and not any(real for _, real in plan)))
    return plan


def _rounds(ctx: RowContext, *, alternate: bool = False, **kwargs: Any) -> list[Evidence]:
    """``budget.processes`` rounds, as ``round_plan`` says."""
    parts = []
    plan = round_plan(ctx.budget.processes, alternate=alternate,
                      real_clock=ctx.declaration.real_clock)
    for i, (past_stale, real_hold) in enumerate(plan):
        args = {"workdir": str(ctx.workdir), **kwargs, "past_stale": past_stale,
                "real_hold": real_hold}
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
        parts += _rounds(ctx, readers=2, kill=True, alternate=True)
    if decl.has(Capability.LEASE):
        from crashgate.scenarios.procedures_lease import lease_rule  # the lease half

        parts.append(lease_rule(ctx))
    if not parts:
        return Evidence.na(requires(decl, Capability.WRITER_LOCK, Capability.LEASE,
                                    what="writer lock or lease") or "no writer lock or lease")
    unread = any("readers not checked" in d for p in parts for d in p.details)
    ev = combine(parts, "one writer at a time, " + (
        "a dead writer's lock or lease recovered once stale; readers not checked (the backend "
        "has no readonly option)" if unread else
        "readers alongside, a dead writer's lock or lease recovered once stale"))
    return _with_seed(ev, ctx)


def _with_seed(ev: Evidence, ctx: RowContext) -> Evidence:
    return dataclasses.replace(ev, measured={**ev.measured, "seed": ctx.seed})


