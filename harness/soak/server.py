"""The soak's writer and reader processes (the child side; ``soak.procs`` is the parent side).

    python -m crashgate.harness.soak.server CONFIG_JSON

A writer opens the store once and runs its agents as threads through that one open store (the
way agents share a store in one process, so the store's own locking is what is tested); a
reader opens it with ``readonly=true`` in sessions of a few reads each. Events go to stdout, one
JSON object a line; the parent timestamps nothing itself (``time.monotonic`` is one clock for
every process on the machine):

    {"ev": "ready", "pid": n, "stage": n | null, "reconciled": n}
                                                   opened (a stage adapter: its stage, and what
                                                   its open mended)
    {"ev": "refused", "error": str, "type": [..]}  opening failed (exit 3)
    {"ev": "b", "a": agent, "s": seq, "op": .., "args": .., "v": value, "t": start}
    {"ev": "e", "a": agent, "s": seq, "o": "ok"|"fail"|"info", "r": result, "err": .., "t": end}
    {"ev": "verified", ...}                        a sweep ended (what it compared, see ``_sweep``)
    {"ev": "done"}                                 every agent ran its ops
    {"ev": "closed", "fallbacks": n | null}        closed cleanly after "stop" (reads served
                                                   from a fallback, where the store counts them)

Commands on stdin, one JSON object a line: ``{"cmd": "sweep"}`` (pause the agents, read every
register and, for a dual-write stage, compare its two stores; ``verified`` answers),
``{"cmd": "ioerror", "errno": "EIO"|"ENOSPC", "count": n}`` (the next n mutating file
operations fail), ``{"cmd": "stop"}``. A closed stdin means the parent is gone: stop.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from crashgate.backends import (
    BadOption,
    Capability,
    CrashgateError,
    Env,
    LockHeld,
    OsFS,
    Staged,
    VersionTooNew,
    resolve,
)
from crashgate.harness.divergence import DivergenceLedger
from crashgate.harness.faults.faultyfs import FaultyFS, FsOp
from crashgate.harness.faults.ioerrors import ERRNOS
from crashgate.harness.faults.writer_proc import OffsetClock
from crashgate.harness.gate_evidence import DUAL_WRITE, compare_shadow, has_store
from crashgate.harness.soak import workload as w
from crashgate.harness.soak.execute import execute

__all__ = ["main"]

READ_SESSION = 5
"""Reads a reader makes per open: it reads a snapshot, so each read's interval starts at the
open before it (a read never claims to be fresher than its snapshot)."""
BACKOFF = 0.05
"""Seconds an agent waits after an op that did not succeed."""
REFUSALS = (VersionTooNew, BadOption, LockHeld)
"""A reader's first open failing with one of these is refused: it never reads."""
_OUT = threading.Lock()


def _emit(doc: dict[str, Any]) -> None:
    line = json.dumps(doc, separators=(",", ":"))
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _Pause:
    """Agents run between ``enter`` and ``leave``; ``pause`` waits until none is inside."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._busy = 0

    def enter(self) -> None:
        with self._cond:
            while self._paused:
                self._cond.wait()
            self._busy += 1

    def leave(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            while self._busy:
                self._cond.wait()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()


class _IoErrors:
    """The trigger of a ``FaultyFS``: the next ``count`` mutating operations fail."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left = 0
        self._errno = ERRNOS["EIO"]

    def arm(self, kind: str, count: int) -> None:
        with self._lock:
            self._errno, self._left = ERRNOS[kind], count

    def __call__(self, op: FsOp) -> BaseException | None:
        with self._lock:
            if self._left <= 0:
                return None
            self._left -= 1
            _emit({"ev": "injected", "op": op.kind})
            return OSError(self._errno, f"crashgate soak: injected {os.strerror(self._errno)}"
                           f" at {op.kind} {op.path}")


def _run_op(store: Any, agent: Any, aop: w.AgentOp, start: float | None = None) -> str:
    """Run ``aop`` and report it (``b`` then ``e``); ``start`` overrides when the op counts
    as begun (a reader's: its session's open). Returns the outcome."""
    _emit({"ev": "b", "a": agent, "s": aop.seq, "op": aop.op, "args": dict(aop.args),
           "v": aop.value, "t": time.monotonic() if start is None else start})
    outcome, result, error = execute(store, aop)
    _emit({"ev": "e", "a": agent, "s": aop.seq, "o": outcome, "r": result, "err": error,
           "t": time.monotonic()})
    return outcome


def _agent(store: Any, cfg: dict[str, Any], agent: str, start: int, pause: _Pause,
           stop: threading.Event) -> None:
    ops = w.agent_ops(store.declaration, seed=cfg["seed"], run=cfg["run"], agent=agent,
                      start=start)
    limit = cfg["ops_per_agent"]
    for aop in ops:
        if stop.is_set() or (limit and aop.seq >= limit):
            return
        pause.enter()
        try:
            outcome = _run_op(store, agent, aop)
        finally:
            pause.leave()
        if outcome != "ok":
            time.sleep(BACKOFF)   # as a client backs off a failing store, not spinning on it


def _sweep(store: Any, n: list[int]) -> dict[str, Any]:
    """Read every register the workload can write (recorded like an agent's reads, agent
    ``"sweep"``), then, in a dual-write stage, compare the two stores record by record."""
    decl = store.declaration
    reads: list[w.AgentOp] = []

    def add(op: str, args: dict[str, Any]) -> None:
        reads.append(w.AgentOp(n[0], op, args))
        n[0] += 1
    if decl.has(Capability.KV):
        add("scan", {"prefix": ""})
        for key in w.KEYS:
            add("get", {"key": key})
    if decl.has(Capability.RELATIONAL):
        for state, action in w.QVALUES:
            add("q_get", {"state": state, "action": action})
        for plan in w.PLANS:
            add("goap_get", {"plan": plan})
    if decl.has(Capability.VECTOR):
        add("fetch", {"ids": list(w.VECTOR_IDS)})
    for aop in reads:
        _run_op(store, "sweep", aop)
    out: dict[str, Any] = {"ev": "verified", "reads": len(reads)}
    stage = getattr(store, "stage", None)
    if stage in DUAL_WRITE and has_store(store, "sqlite") and has_store(store, "rvf"):
        queued = len(store.divergences()) if hasattr(store, "divergences") else 0
        out["repaired"] = store.repair() if queued else 0
        ledger = DivergenceLedger()
        corruption = {"checks": 0, "incidents": 0}
        compare_shadow(ledger, corruption, store.store("sqlite"), store.store("rvf"),
                       set(w.VECTOR_IDS))
        out["divergence"] = {"compared": ledger.compared, "mismatches": ledger.mismatches,
                             "examples": [m.key for t in ledger.tallies.values()
                                          for m in t.examples][:5]}
        out["corruption"] = corruption
    return out


def _commands(store: Any, pause: _Pause, stop: threading.Event, errors: _IoErrors,
              n: list[int]) -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "stop":
            break
        if cmd["cmd"] == "sweep":
            pause.pause()
            try:
                _emit(_sweep(store, n))
            finally:
                pause.resume()
        elif cmd["cmd"] == "ioerror":
            errors.arm(cmd["errno"], int(cmd["count"]))
            _emit({"ev": "armed", "errno": cmd["errno"], "count": cmd["count"]})
    stop.set()


def _writer(store: Any, cfg: dict[str, Any], errors: _IoErrors, n: list[int]) -> int:
    pause, stop = _Pause(), threading.Event()
    threads = [threading.Thread(target=_agent, daemon=True,
                                args=(store, cfg, str(a), cfg["resume"].get(str(a), 0), pause,
                                      stop))
               for a in cfg["agents"]]
    commands = threading.Thread(target=_commands, args=(store, pause, stop, errors, n),
                                daemon=True)
    commands.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not stop.is_set():
        _emit({"ev": "done"})
    stop.wait()
    return _close(store)


def _reader(spec: Any, cfg: dict[str, Any], env: Env) -> int:
    stop = threading.Event()
    def watch_stdin() -> None:   # any line, or the parent gone, stops the reader
        sys.stdin.readline()
        stop.set()
    threading.Thread(target=watch_stdin, daemon=True).start()
    agent = cfg["agents"][0]
    ops = None   # made from the declaration of the first store it opens
    while not stop.is_set():
        opened = time.monotonic()
        try:
            store = spec.open(cfg["path"], env, **cfg["options"])
        except Exception as exc:  # noqa: BLE001 - readers are unlimited: the parent judges it
            if ops is None and isinstance(exc, REFUSALS):   # refused at the first open
                _emit(_refused(exc))
                return 3
            _emit({"ev": "open-failed", "error": f"{type(exc).__name__}: {exc}",
                   "t0": opened, "t": time.monotonic()})
            time.sleep(0.2)
            continue
        if ops is None:
            _emit({"ev": "ready", "pid": os.getpid(), "stage": None, "reconciled": 0})
            ops = w.agent_ops(store.declaration, seed=cfg["seed"], run=cfg["run"],
                              agent=agent, start=cfg["resume"].get(agent, 0))
        try:
            for _ in range(READ_SESSION):
                _run_op(store, agent, next(ops), start=opened)
        finally:
            store.close()
        time.sleep(cfg.get("reader_pause", 0.02))
    _emit({"ev": "closed", "fallbacks": None})
    return 0


def _refused(exc: BaseException) -> dict[str, Any]:
    return {"ev": "refused", "error": str(exc),
            "type": [c.__name__ for c in type(exc).__mro__][:-2]}


def _close(store: Any) -> int:
    fallbacks = getattr(store, "fallbacks", None)
    store.close()
    _emit({"ev": "closed",
           "fallbacks": None if fallbacks is None else int(sum(fallbacks.values()))})
    return 0


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C reaches the whole process group: the parent alone decides how its soak stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = json.loads((argv or sys.argv[1:])[0])
    spec = resolve(cfg["spec"])
    errors = _IoErrors()
    # native: SQLite does its own I/O with its real locks and shared WAL index, as it must with
    # readers in other processes; I/O errors then reach what goes through the env (RVF, JSON)
    fs: Any = FaultyFS(OsFS(), errors, keep_ops=False, native=True)
    env = Env(fs=fs, clock=OffsetClock(float(cfg.get("clock_offset", 0.0))))
    try:
        if cfg["role"] == "reader":
            return _reader(spec, cfg, env)
        store = spec.open(cfg["path"], env, **cfg["options"])
    except CrashgateError as exc:
        _emit(_refused(exc))
        return 3
    _emit({"ev": "ready", "pid": os.getpid(),
           "stage": int(store.stage) if isinstance(store, Staged) else None,
           "reconciled": int(getattr(store, "reconciled", 0) or 0)})
    sweeps = [0]   # the sweep's op numbers, one sequence per process
    if cfg.get("sweep_first"):
        _emit(_sweep(store, sweeps))
    return _writer(store, cfg, errors, sweeps)


if __name__ == "__main__":
    sys.exit(main())
