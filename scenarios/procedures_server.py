"""The rows of a server-backed store (``Declaration.server``): what process crash and duplicate
writers mean when the data is kept by a server in other processes.

- ``server_crash``: a seeded workload runs through the store in a thread (so an op is in flight
  at the server), and after a seeded number of acknowledged ops the harness SIGKILLs every
  server process, or only the store's own session (``harness.faults.server.ServerKill``). The
  store is reopened with the backend's factory (which brings the server back, crash recovery
  included) and what it shows is judged by ``crashcheck.judge`` against the declared
  durability: a store declaring ``process-crash`` or better keeps every acknowledged op; any
  store shows a prefix of the ops (no torn batch, the op in flight all or nothing).
- ``server_clients``: two clients in two OS processes (``DuplicateWriter``'s children) write
  the same store at once, in atomic batches; one is SIGKILLed mid-batch. Every acknowledged
  batch of either is there whole, and the killed client's batch in flight is all or nothing.
  n/a for a store declaring ``writer-lock``: there two clients writing at once cannot happen.

Each check re-runs alone (``check_server_crash``, ``check_two_clients``) against the real server:
a failure carries a reproduction script (``faults.repro.on_failure``). The version-skew row of
a server store is ``procedures_server_versions``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from crashgate.backends import BackendSpec, Capability, Declaration, Durability, os_env
from crashgate.harness.crashcheck import allowed_range, judge
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.faults.server import KILLS, ServerKill, killable
from crashgate.harness.faults.writer_proc import batch_items
from crashgate.harness.faults.writers import DuplicateWriter, WriterProcess
from crashgate.harness.history import History
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Op, Upsert, describe_op
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.unsupported import cannot_answer
from crashgate.harness.verdict import Evidence, Verdict, combine, first_line
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["check_server_crash", "check_two_clients", "needs_server", "one_writer",
           "server_clients", "server_crash"]

DATA_DIR = "/data"
PATH = f"{DATA_DIR}/store"
WAIT = 60.0
"""Seconds to wait for acknowledgements or for a thread to return after a kill: a busy
2-core machine, a server restarting; never a timed assertion (running out is ``unknown``, or,
for a call that never returns after its server died, the store's hang)."""
BATCH = 3
"""Keys per atomic batch a client writes in ``server_clients``."""


def needs_server(decl: Declaration) -> str | None:
    """The rows of this module apply to a store kept by a server."""
    if decl.server is None:
        return ("not a server-backed store (Declaration.server is None): its process crashes "
                "and writers are the simulated disk's and the file lock's rows")
    return None


def one_writer(decl: Declaration) -> str | None:
    """A store that declares a writer lock admits one writing client at a time by design."""
    if decl.has(Capability.WRITER_LOCK):
        return ("declares writer-lock: two clients writing at once cannot happen by design "
                "(the second gets LockHeld; ADR-032 row 3 and invariant 1 certify that)")
    return None


# -- server-crash --------------------------------------------------------------------------


class _Runner:
    """Runs ``ops`` on ``store`` in a thread, recording each in ``history``; stops at the first
    exception (the op then is ``info``: in flight when the server died) or when told."""

    def __init__(self, store: Any, ops: list[Op], history: History) -> None:
        self.store, self.ops, self.history = store, ops, history
        self.acked = 0
        self.in_flight = False
        self.error: str | None = None
        self.stop = threading.Event()
        self.killed = threading.Event()   # set just before the kill: later errors are its
        self.early: str | None = None     # an error before any kill: the store's own
        self.unsupported: str | None = None   # ... one saying the store lacks the op
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for op in self.ops:
            if self.stop.is_set():
                break
            name, args = type(op).__name__.lower(), {"op": describe_op(op)}
            try:
                op.run(self.store)
            except Exception as exc:  # noqa: BLE001 - a broken connection is the crash
                self.history.record(name, args, "info", first_line(exc))
                with self._cond:
                    self.in_flight, self.error = True, first_line(exc)
                    if not self.killed.is_set():
                        self.early = self.error
                        self.unsupported = cannot_answer(exc)
                    self._cond.notify_all()
                break
            self.history.record(name, args, "ok")
            with self._cond:
                self.acked += 1
                self._cond.notify_all()
        with self._cond:
            self.stop.set()
            self._cond.notify_all()

    def wait_acks(self, n: int, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.acked < n and not self.stop.is_set() and time.monotonic() < deadline:
                self._cond.wait(0.2)

    def finish(self, timeout: float = WAIT) -> bool:
        """Stop after the op in progress; whether the thread returned within ``timeout``."""
        self.stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _vector_ids(ops: list[Op]) -> list[int]:
    return sorted({r.id for op in ops if isinstance(op, Upsert) for r in op.records})


def check_server_crash(spec: BackendSpec, *, seed: int, ops: int, kill: str) -> Evidence:
    """One round: a fresh store, the seeded workload of ``ops`` ops in a thread, SIGKILL of
    ``kill`` (``server`` or ``session``) after a seeded number of acknowledged ops, reopen,
    judge. What a reproduction script calls."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    env = sim_env(disk)
    store = spec.open(PATH, env)
    decl: Declaration = store.declaration
    if (reason := needs_server(decl) or killable(store)) is not None:
        store.close()
        return Evidence.na(reason)
    workload = random_workload(decl, ops, seed, PROFILES["small"])
    kill_after = random.Random(f"server-crash:{seed}").randrange(max(1, ops // 3), ops)
    history = History()
    fault = ServerKill(kill)
    runner = _Runner(store, workload, history)
    runner.wait_acks(kill_after)
    measured: dict[str, Any] = {"kills": 1, "ops": ops, "seed": seed, "kill": kill}
    if runner.early is not None:
        runner.finish()
        if runner.unsupported is not None:   # EUNSUPPORTED broke no promise
            return Evidence(Verdict.UNKNOWN, runner.unsupported, measured,
                            tuple(history.tail()))
        return Evidence(Verdict.FAIL, f"an op failed before any kill: {runner.early}",
                        measured, tuple(history.tail()), conclusive=False)
    runner.killed.set()
    try:
        pids = fault.fire(store)
    finally:
        returned = runner.finish()
    with contextlib.suppress(Exception):   # the old connection is dead: closing may complain
        store.close()
    if not returned:
        return Evidence(Verdict.FAIL, f"a call on the store did not return within {WAIT:g} s "
                        f"after SIGKILL of the {kill}: a store must raise promptly, never hang",
                        measured, tuple(history.tail()))
    acked, in_flight = runner.acked, runner.in_flight
    ran = workload[: acked + (1 if in_flight else 0)]
    states: list[StoreState] = prefix_states(ran)
    index: dict[str, list[int]] = {}
    for j, s in enumerate(states):
        index.setdefault(s.digest, []).append(j)
    seen: StoreState | BaseException
    try:
        recovered = reopen_after_crash(spec.open, PATH, env, decl).store
        try:
            seen = read_state(recovered, _vector_ids(ran))
        finally:
            with contextlib.suppress(Exception):
                recovered.close()
    except Exception as exc:  # noqa: BLE001 - a store that cannot reopen is the finding
        seen = exc
    if isinstance(seen, Exception) and (cannot := cannot_answer(seen)) is not None:
        # reopened, but the store cannot be read back (no fetch): nothing to judge
        return Evidence(Verdict.UNKNOWN, f"SIGKILL of the {kill}, reopened: {cannot}",
                        measured, tuple(history.tail()))
    allowed = allowed_range(acked, in_flight, decl.durability, power_loss=False)
    verdict = judge(seen, states, index, ran, allowed)
    history.record("kill", {"kind": kill, "pids": list(pids)}, "info",
                   verdict.violation.value if verdict.violation else None, verdict.detail)
    lost = max(0, acked - verdict.matched) if verdict.matched is not None else None
    measured.update(acknowledged=acked, in_flight=int(in_flight), lost_acknowledged=lost)
    where = (f"SIGKILL of the {kill} ({len(pids)} process{'es' if len(pids) > 1 else ''}) "
             f"after {acked} acknowledged ops{', 1 in flight' if in_flight else ''}")
    attach = {f"history_server_crash_{kill}_seed{seed}.jsonl": history.to_jsonl()}
    if verdict.violation is not None:
        return Evidence(Verdict.FAIL, f"{where}: {verdict.violation.value} (declared "
                        f"durability '{decl.durability.value}'): {verdict.detail}", measured,
                        tuple(history.tail()), attachments=attach, conclusive=True)
    return Evidence(Verdict.PASS, f"{where}: recovered {verdict.detail}", measured,
                    attachments=attach)


def server_crash(ctx: RowContext) -> Evidence:
    """Both kills, ``max(2, 2 * budget.processes)`` rounds, each on a fresh store with its own
    seed; every round re-runnable alone."""
    if (reason := needs_server(ctx.declaration)) is not None:
        return Evidence.na(reason)
    parts: list[Evidence] = []
    for i in range(max(2, 2 * ctx.budget.processes)):
        kwargs: dict[str, Any] = {"seed": ctx.seed + i, "ops": ctx.budget.workload_ops,
                                  "kill": KILLS[i % 2]}
        ctx.progress(f"server-crash round {i + 1}: SIGKILL of the {kwargs['kill']}")
        ev = check_server_crash(ctx.spec, **kwargs)
        parts.append(on_failure(ev, workdir=ctx.workdir, name=f"reproduce_server_crash_{i}.py",
                                spec=ctx.spec, check=check_server_crash, kwargs=kwargs))
    durability = ctx.declaration.durability
    kept = ("every acknowledged op kept" if durability.covers(Durability.PROCESS_CRASH) else
            "a prefix of the ops shown (durability 'none': acknowledged ops may be lost)")
    ev = combine(parts, f"{len(parts)} SIGKILLs of the server and of one session with ops in "
                 f"flight: {kept}, no batch torn, the op in flight all or nothing")
    lost = sum(p.measured.get("lost_acknowledged") or 0 for p in parts)
    return dataclasses.replace(ev, measured={**ev.measured, "rounds": len(parts),
                                             "lost_acknowledged": lost, "seed": ctx.seed})


# -- server-clients ------------------------------------------------------------------------


def _verify_batches(store: Any, who: str, acks: list[str], batch: int,
                    in_flight: bool) -> list[str]:
    """Every acknowledged batch of client ``who`` whole; its next batch (in flight when it was
    killed) all there or not at all."""
    problems: list[str] = []
    for i, _ in enumerate(acks):
        wrong = [k for k, v in batch_items(who, i, batch) if store.get(k) != v]
        if wrong:
            problems.append(f"client {who}'s acknowledged batch {i} lost or wrong at "
                            f"{wrong[:3]}")
            break
    if in_flight:
        items = batch_items(who, len(acks), batch)
        there = [k for k, v in items if store.get(k) == v]
        if there and len(there) < len(items):
            problems.append(f"client {who}'s batch in flight when it was killed is torn: "
                            f"{len(there)} of {len(items)} keys there ({there})")
    return problems


def _wait_writing(proc: WriterProcess, n: int) -> str | None:
    o = proc.opened()
    if o.kind != "READY":
        return f"client {proc.label} could not open the store: {o.kind} {o.message}"
    if not proc.wait_acks(n, WAIT):
        return (f"client {proc.label} acknowledged fewer than {n} writes: "
                f"{proc.stderr_tail or proc.lines[-2:]}")
    return None


def check_two_clients(spec: BackendSpec, *, workdir: str, writes: int = 8) -> Evidence:
    """Clients A and B (two OS processes) write the store at once in batches of ``BATCH``
    keys; B is SIGKILLed while writing, A goes on and closes; every acknowledged batch is
    there whole, B's batch in flight all or nothing."""
    t0 = time.perf_counter()
    path = str(Path(tempfile.mkdtemp(prefix="clients-", dir=workdir)) / "store")
    first = spec.open(path, os_env())   # create it (and, for crashgate's server, start it)
    decl = first.declaration
    first.close()
    if (reason := needs_server(decl) or one_writer(decl)) is not None:
        return Evidence.na(reason)
    if not (decl.has(Capability.KV) and decl.has(Capability.BATCH)):
        return Evidence.na("the clients write key-value batches: declares no kv with batch")
    problems: list[str] = []
    acks: dict[str, list[str]] = {}
    with DuplicateWriter(spec.label, path) as dw:
        a = dw.writer("A", batch=BATCH)
        b = dw.writer("B", batch=BATCH)
        why = _wait_writing(a, writes) or _wait_writing(b, writes)
        if why is not None:
            return Evidence(Verdict.UNKNOWN, why, {"processes": 2}, dw.fired)
        dw.kill(b)   # mid-batch: its session ends, the server rolls back what it began
        n = len(a.acks())
        if not a.wait_acks(n + writes, WAIT):
            problems.append("client A stopped acknowledging writes after client B was "
                            f"killed: {a.stderr_tail or a.lines[-2:]}")
        if not a.stop():
            problems.append(f"client A did not close cleanly: {a.stderr_tail}")
        acks = {"A": a.acks(), "B": b.acks()}
        events = dw.fired
    try:
        after = spec.open(path, os_env())
    except Exception as exc:  # noqa: BLE001 - not reopening is the finding
        problems.append(f"the store could not be opened after the clients: {first_line(exc)}")
    else:
        try:
            for who, got in acks.items():
                problems += _verify_batches(after, who, got, BATCH, in_flight=who == "B")
        finally:
            after.close()
    measured = {"processes": 2, "acknowledged_batches": sum(map(len, acks.values())),
                "batch": BATCH, "seconds": round(time.perf_counter() - t0, 2)}
    if problems:
        return Evidence(Verdict.FAIL, "; ".join(problems), measured, events, conclusive=True)
    return Evidence(Verdict.PASS, f"two clients in two processes wrote at once "
                    f"({len(acks['A'])} and {len(acks['B'])} batches of {BATCH} acknowledged), "
                    "one was SIGKILLed mid-batch: every acknowledged batch whole, the one in "
                    "flight all or nothing", measured, events)


def server_clients(ctx: RowContext) -> Evidence:
    """``budget.processes`` rounds of ``check_two_clients``."""
    if (reason := needs_server(ctx.declaration) or one_writer(ctx.declaration)) is not None:
        return Evidence.na(reason)
    parts = []
    for i in range(max(1, ctx.budget.processes)):
        kwargs: dict[str, Any] = {"workdir": str(ctx.workdir)}
        ev = check_two_clients(ctx.spec, **kwargs)
        parts.append(on_failure(ev, workdir=ctx.workdir, name=f"reproduce_clients_{i}.py",
                                spec=ctx.spec, check=check_two_clients, kwargs=kwargs))
    ev = combine(parts, "two clients at once: every acknowledged batch of either there, none "
                 "torn")
    return dataclasses.replace(ev, measured={**ev.measured, "rounds": len(parts),
                                             "seed": ctx.seed})
