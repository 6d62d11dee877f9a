"""ADR-0003's promises under crashes: the memory audit trail and retention ("each deletion
audited", never an expired memory returned, the trail surviving crashes) and the reindex
("Embedding model changes require reindex; store embed_model + embed_dim metadata": never a
mix of two models, a wrong model or dimension refused).

How a crash is made depends on where the store keeps its data:

- a store on crashgate's simulated disk (``Declaration.server`` None): the op is crashed after
  each of its disk operations (``crashspan.crash_throughout``: a process crash, and each
  power-loss model when the store promises power-loss durability), and every crash state is
  reopened and judged;
- a server-backed store: before the op's first write call (right after the op when it writes
  nothing), the server is killed from the harness (``faults.server.ServerKill``: SIGKILL of
  every server process, or of this store's own session process, in turn), the call fails in
  flight, and the store is reopened through its factory (which brings the server back); a
  server crashgate did not start (``killable``) is never killed: the client abandons the
  store there instead.

Either way the reopened store must show the state before the op or after it, never a third.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from crashgate.backends import Durability
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.faults.server import KILLS, ServerKill, killable
from crashgate.harness.powerloss import DATA_DIR, POWER_MODELS
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, first_line
from crashgate.scenarios.procedures_adr0003 import PATH, adr0003
from crashgate.scenarios.procedures_adr0003_memory import MemoryOp, memory_ops, read_view, replay

__all__ = ["KillBefore", "check_retention_crash", "crash_points", "kill_how"]

_WRITES = ("put", "delete", "write_batch", "upsert", "remove")


class KillBefore:
    """``store`` whose ``n``-th write call (1-based, counted over ``_WRITES``) is preceded by
    ``kill()``; every other call passes through. ``calls`` counts the write calls made."""

    def __init__(self, store: Any, n: int | None, kill: Callable[[], None]) -> None:
        self._store, self._n, self._kill = store, n, kill
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in _WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._n:
                self._kill()
            return attr(*args, **kwargs)
        return write


def kill_how(store: Any, turn: int) -> tuple[str, Callable[[], None]]:
    """How to crash a server-backed ``store`` on this ``turn``: a ``ServerKill`` of every
    server process and of this session's process in turn; a client crash (nothing killed,
    the store abandoned) when crashgate may not kill the server (``killable``)."""
    if killable(store) is not None:
        def abandon() -> None:
            raise _Abandoned
        return "client crash (the server is not crashgate's: never killed)", abandon
    kill = ServerKill(KILLS[turn % len(KILLS)])
    return f"SIGKILL of the {kill.kind}", lambda: _fire(kill, store)


def _fire(kill: ServerKill, store: Any) -> None:
    kill.fire(store)


class _Abandoned(BaseException):  # noqa: N818 - the end of a client, like SimulatedCrash
    """The client stops here: the store is abandoned, never closed."""


def crash_points(total: int, budget: int) -> list[int]:
    """At most ``budget`` of 1 ... ``total``, spread evenly, first and last included."""
    if total <= budget:
        return list(range(1, total + 1))
    step = (total - 1) / max(1, budget - 1)
    return sorted({1 + round(i * step) for i in range(budget)})


def models_for(decl: Any) -> list[CrashModel]:
    """A process crash always; power loss too when the store promises to survive it."""
    power = decl.durability.covers(Durability.POWER_LOSS)
    return [CrashModel.PROCESS, *(POWER_MODELS if power else ())]


# -- the memory audit trail ---------------------------------------------------------------------


def _judge_memory(store: Any, clock: Any, ops: list[MemoryOp], done: int, inflight: bool,
                  start: float) -> str | None:
    """The recovered memory shows ``ops[:done]`` (or, ``inflight``, also the next op), and a
    purge then audits every expired memory: the trail stays complete after recovery."""
    memory = adr0003("MemoryStore")(store, clock)
    now = clock.time()
    candidates = [replay(ops, done, start)[0]]
    if inflight:
        candidates.append(replay(ops, done + 1, start)[0])
    got = read_view(memory)
    matched = next((m for m in candidates if m.view(now) == got), None)
    if matched is None:
        return (f"after {done} acknowledged ops{' and one in flight' if inflight else ''} it "
                f"shows {got!r:.240}, the model {candidates[-1].view(now)!r:.240}")
    memory.purge_expired()
    matched.purge(now)
    if read_view(memory) != matched.view(now):
        return (f"a purge after recovery left {read_view(memory)!r:.240}, the model "
                f"{matched.view(now)!r:.240}")
    return None


def _memory_on_disk(spec: Any, ops: list[MemoryOp], budget: int, seed: int,
                    state: str | None) -> Evidence:
    # the layer's clock apart from the store's (procedures_adr0003_memory.check_memory_tables)
    disk, clock = SimDisk(DiskImage.empty(DATA_DIR)), VirtualClock()
    start_time = clock.time()
    store = spec.open(PATH, sim_env(disk, clock=VirtualClock(start_time)))
    decl = store.declaration
    memory = adr0003("MemoryStore")(store, clock)
    first = disk.position
    ends = []
    try:
        for op in ops:
            op.run(memory)
            ends.append(disk.position)
    finally:
        store.close()
    span = (first, ends[-1] if ends else first)

    def judge(crash: Any, image: DiskImage) -> str | None:
        done = sum(1 for end in ends if end <= crash.position)
        _model, now = replay(ops, done, start_time)
        env = sim_env(SimDisk(image), clock=VirtualClock(now))
        try:
            reopened = reopen_after_crash(spec.open, PATH, env, decl).store
        except Exception as exc:  # noqa: BLE001 - not reopening is the finding
            return f"did not reopen: {first_line(exc)}"
        try:
            return _judge_memory(reopened, VirtualClock(now), ops, done, done < len(ops),
                                 start_time)
        except Exception as exc:  # noqa: BLE001
            return f"reading it back raised {first_line(exc)}"
        finally:
            reopened.close()
    return crash_throughout(disk.base, disk.trace, span, judge, what=f"{len(ops)} memory ops",
                            models=models_for(decl), budget=budget, seed=seed, state=state,
                            passed="reopened with the acknowledged memories and audit events",
                            upto_end=True)


def _memory_on_server(spec: Any, ops: list[MemoryOp], budget: int,
                      point: int | None) -> Evidence:
    writes = [i for i, op in enumerate(ops) if op.writes]
    chosen = [writes[p - 1] for p in crash_points(len(writes), budget)] if point is None \
        else [point]
    for turn, at in enumerate(chosen):
        why, how = _memory_server_crash(spec, ops, at, turn)
        if why is not None:
            return Evidence(Verdict.FAIL, f"{how} inside op {at} ({ops[at].kind}): {why}",
                            {"crashes": turn + 1, "point": at}, conclusive=True)
    if not chosen:
        return Evidence(Verdict.UNKNOWN, "the workload made no write: no crash placed",
                        {"crashes": 0})
    return Evidence(Verdict.PASS, f"{len(chosen)} crashes inside a memory op (server and "
                    "session kills in turn): each reopened with the acknowledged memories and "
                    "audit events, the op in flight all there or not at all",
                    {"crashes": len(chosen)})


def _memory_server_crash(spec: Any, ops: list[MemoryOp], at: int, turn: int
                         ) -> tuple[str | None, str]:
    """Run ``ops[:at]``, crash inside ``ops[at]``, reopen, judge."""
    disk, clock = SimDisk(DiskImage.empty(DATA_DIR)), VirtualClock()
    start_time = clock.time()
    store_clock = VirtualClock(start_time)   # the layer's clock apart from the store's
    store = spec.open(PATH, sim_env(disk, clock=store_clock))
    memory = adr0003("MemoryStore")(store, clock)
    how = "a crash"
    acknowledged = False
    try:
        for op in ops[:at]:
            op.run(memory)
        how, kill = kill_how(store, turn)
        wrapper = KillBefore(store, 1, kill)
        memory.store = wrapper
        ops[at].run(memory)
        acknowledged = True
        if wrapper.calls == 0:   # the op wrote nothing to crash inside: crash right after it
            kill()
    except (Exception, _Abandoned):  # noqa: BLE001 - the op in flight: indeterminate
        pass
    with contextlib.suppress(Exception):
        if "client" not in how:
            store.close()
    env = sim_env(disk, clock=store_clock)
    try:
        reopened = spec.open(PATH, env)
    except Exception as exc:  # noqa: BLE001
        return f"did not reopen: {first_line(exc)}", how
    try:
        done = at + 1 if acknowledged else at
        return _judge_memory(reopened, clock, ops, done, not acknowledged, start_time), how
    finally:
        reopened.close()


def check_retention_crash(spec: Any, *, seed: int, steps: int, budget: int, kills: int = 4,
                          state: str | None = None, point: int | None = None) -> Evidence:
    """The memory workload crashed throughout (module docstring): ``budget`` crash states on
    a disk store, ``kills`` server crashes on a server-backed one; ``state`` (a crash state
    token, disk stores) or ``point`` (the op to crash inside, server stores) replays one."""
    ops = memory_ops(seed, steps)
    probe = spec.open(PATH, sim_env(SimDisk(DiskImage.empty(DATA_DIR))))
    try:
        server = probe.declaration.server
    finally:
        probe.close()
    if server is None:
        return _memory_on_disk(spec, ops, budget, seed, state)
    return _memory_on_server(spec, ops, max(2, kills), point)


def retention_crash(ctx: Any) -> Evidence:
    from crashgate.harness.faults.repro import on_failure
    steps = max(24, ctx.budget.workload_ops // 4)
    budget = max(40, ctx.budget.crash_states // 6)
    kills = 3 * ctx.budget.processes
    ev = check_retention_crash(ctx.spec, seed=ctx.seed, steps=steps, budget=budget, kills=kills)
    token = next((d.removeprefix("state ") for d in ev.details if d.startswith("state ")), None)
    return on_failure(ev, workdir=ctx.workdir, name="reproduce_adr0003_retention.py",
                      spec=ctx.spec, check=check_retention_crash,
                      kwargs={"seed": ctx.seed, "steps": steps, "budget": budget,
                              "kills": kills, "state": token, "point": ev.measured.get("point")})
