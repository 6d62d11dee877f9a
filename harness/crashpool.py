"""Checking crash states in worker processes: what the serial run, forked children and spawned
workers share, and the pool of spawned workers.

Crash states are independent once the run is recorded: each is materialised from the trace,
recovered and judged on its own (``check_one``, the one step every way shares). Where the
platform has ``fork``, children forked per batch inherit the parent's run and images
(``crashfork``). Where it does not (or with ``start_method="spawn"``), a pool of spawned workers
each records the run again itself (a ``recipe``, pickled), checks it has the parent's shape,
and rebuilds each state's image with its own ``TraceWalk`` (advancing over the positions it
gets, which ascend): only the states travel, in enumeration order and in small batches. Either
way results are merged in enumeration order, not in completion order, so a parallel run reports
what a serial one does; a worker that dies or raises surfaces as an error in the parent, never
as a hang or a pass; Ctrl-C stops the workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from crashgate.harness.crashcheck import Judgement
from crashgate.harness.crashstates import CrashState, TraceWalk
from crashgate.harness.model import StoreState
from crashgate.harness.simdisk import DiskImage, DiskOp

__all__ = ["Batch", "CrashPoolError", "Phases", "StateChecker", "available_cores",
           "check_in_workers", "check_one", "check_rebuilt", "default_jobs", "merge",
           "valid_jobs", "worker_died", "worker_start_method"]

XDIST_WORKERS = "PYTEST_XDIST_WORKER_COUNT"


class CrashPoolError(RuntimeError):
    """A worker process checking crash states died, or the run could not be rebuilt in it."""


class StateChecker(Protocol):
    """What a worker needs: the recorded run (``base`` and ``trace``, to materialise a state's
    image) and the two steps after it."""

    @property
    def base(self) -> DiskImage: ...

    @property
    def trace(self) -> Sequence[DiskOp]: ...

    def recover(self, image: DiskImage) -> StoreState | BaseException: ...

    def judge(self, state: CrashState, seen: StoreState | BaseException) -> Judgement: ...


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_jobs() -> int:
    """Every core; under pytest-xdist a worker's share of them (``cores // workers``, at least
    1), so ``-n 2`` on two cores checks serially in each worker instead of oversubscribing."""
    cores = available_cores()
    workers = os.environ.get(XDIST_WORKERS, "")
    if workers.isdigit() and int(workers) > 0:
        return max(1, cores // int(workers))
    return cores


def valid_jobs(jobs: int | None, option: str = "jobs") -> int:
    """``jobs`` checked (None: ``default_jobs()``); ``ValueError`` naming ``option`` if < 1."""
    if jobs is None:
        return default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"{option}={jobs!r}: give a number of worker processes of at least 1 "
                         f"(1 checks in this process; default: {default_jobs()}, the cores)")
    return jobs


def worker_start_method(requested: str | None = None) -> str:
    """How workers start: ``requested``, else ``fork`` where the platform has it, else
    ``spawn``. Only ``fork`` workers share the parent's run; the others record it again."""
    methods = multiprocessing.get_all_start_methods()
    if requested is None:
        return "fork" if "fork" in methods else "spawn"
    if requested not in methods:
        raise ValueError(f"start_method={requested!r}: this platform starts processes with "
                         f"one of {methods}")
    return requested


# -- in the worker --------------------------------------------------------------------------

_checker: StateChecker | None = None
_recipe: Callable[[], StateChecker] | None = None
_walk: TraceWalk | None = None


def _start_worker(recipe: Callable[[], StateChecker]) -> None:
    global _checker, _recipe, _walk
    # Ctrl-C reaches the whole foreground process group: the parent handles it and stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _checker, _recipe, _walk = None, recipe, None


Batch = list[tuple[int, CrashState]]
Phases = dict[str, float]


def _check_batch(batch: Batch) -> tuple[list[tuple[int, Judgement]], Phases]:
    """Judge a batch of ``(index, state)`` (positions ascending); return ``(index, judgement)``
    and the seconds spent per phase."""
    global _checker, _walk
    phases = {"rematerialise": 0.0, "recover": 0.0, "judge": 0.0}
    if _checker is None:
        assert _recipe is not None
        t = time.perf_counter()
        try:
            # here, not in the initializer: an error of the recipe reaches the parent whole
            _checker = _recipe()
        except BaseException as exc:
            exc.add_note(f"raised in crash-state worker process {os.getpid()} while "
                         "recording the run again")
            raise
        phases["workload"] = time.perf_counter() - t
    if batch and (_walk is None or _walk.pos > batch[0][1].position):
        _walk = TraceWalk(_checker.base, _checker.trace, batch[0][1].sector_size)
    return (check_rebuilt(_checker, _walk, batch, phases) if _walk is not None else []), phases


def check_rebuilt(checker: StateChecker, walk: TraceWalk, batch: Batch, phases: Phases
                  ) -> list[tuple[int, Judgement]]:
    """In a worker: rebuild each state's image with ``walk`` (standing at or before the first
    state; positions ascend) by the call the enumeration made, so it is the same image, then
    recover and judge it. ``phases["rematerialise"]`` gets the rebuilding's seconds. An
    exception gets a note naming the process and the state."""
    out = []
    for index, state in batch:
        try:
            t0 = time.perf_counter()
            walk.advance(state.position)
            image = walk.image_of(state)
            phases["rematerialise"] = (phases.get("rematerialise", 0.0)
                                       + time.perf_counter() - t0)
            out.append((index, check_one(checker, state, image, phases)))
        except BaseException as exc:
            exc.add_note(f"raised in crash-state worker process {os.getpid()} while checking "
                         f"state #{index}: {state.describe()}")
            raise
    return out


def check_one(checker: StateChecker, state: CrashState, image: DiskImage, phases: Phases
              ) -> Judgement:
    """Recover ``image`` and judge it as ``state``, adding the seconds of each step to
    ``phases["recover"]`` and ``phases["judge"]``: the one step a serial run and a worker
    share."""
    t0 = time.perf_counter()
    seen = checker.recover(image)
    t1 = time.perf_counter()
    verdict = checker.judge(state, seen)
    phases["recover"] += t1 - t0
    phases["judge"] += time.perf_counter() - t1
    return verdict


# -- in the parent --------------------------------------------------------------------------


def batch_size(budget: int, jobs: int) -> int:
    """16..64 states a batch: big enough that a batch costs more than its round trip, small
    enough that a run of a few hundred states still gives every worker several batches."""
    return max(16, min(64, budget // (jobs * 8) if jobs else 64))


def check_in_workers(
    states: Iterable[tuple[CrashState, DiskImage]], recipe: Callable[[], StateChecker], *,
    jobs: int, batch: int, phases: Phases, method: str = "spawn",
) -> Generator[tuple[CrashState, Judgement], None, None]:
    """Yield ``(state, judgement)`` for every state of ``states``, in their order, checked by
    ``jobs`` spawned worker processes, each of which calls ``recipe()`` (picklable) once for
    its checker. The parent's images are dropped (only the states travel). Worker phase seconds
    are added to ``phases`` (``workload`` too: the workers' recordings). At most
    ``2 * jobs + 1`` batches are in flight: memory stays bounded however many states there
    are. (Where there is ``fork``, ``crashfork.check_forked`` shares the parent's run instead.)"""
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(method),
                               initializer=_start_worker, initargs=(recipe,))
    in_flight: deque[tuple[Batch, Future[tuple[list[tuple[int, Judgement]], Phases]]]] = deque()
    finished = False
    try:
        pending: Batch = []
        source = iter(states)
        index = 0
        exhausted = False
        while not exhausted or pending or in_flight:
            while not exhausted and len(in_flight) < 2 * jobs + 1:
                item = next(source, None)
                if item is None:
                    exhausted = True
                else:
                    pending.append((index, item[0]))
                    index += 1
                if pending and (exhausted or len(pending) >= batch):
                    try:
                        in_flight.append((pending, pool.submit(_check_batch, pending)))
                    except BrokenProcessPool as exc:   # a worker died before this was sent
                        raise worker_died(pending, f"{exc}") from exc
                    pending = []
            if in_flight:
                sent, future = in_flight.popleft()
                yield from merge(sent, _result(future, sent), phases)
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:   # an error, Ctrl-C or a consumer that stopped early: stop the workers now
            _terminate(pool)


def _result(future: Future[tuple[list[tuple[int, Judgement]], Phases]], sent: Batch
            ) -> tuple[list[tuple[int, Judgement]], Phases]:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise worker_died(sent, f"{exc}") from exc


def worker_died(sent: Batch, how: str) -> CrashPoolError:
    """The error for a worker that died (``how``: its exit code, or the pool's words) while
    checking ``sent`` or the states before them."""
    first, last = sent[0][1], sent[-1][1]
    return CrashPoolError(
        f"a crash-state worker process died ({how}) while checking states #{sent[0][0]}.."
        f"#{sent[-1][0]} (trace positions {first.position}..{last.position}) or those before "
        "them: the store killed its process or the machine ran out of memory; rerun with "
        "--jobs 1 to check in one process and see the error")


def merge(sent: Batch, result: tuple[list[tuple[int, Judgement]], Phases], phases: Phases
          ) -> Iterator[tuple[CrashState, Judgement]]:
    """``(state, judgement)`` for each state ``sent`` to a worker, in the order sent, from its
    ``result``; its phase seconds are added to ``phases``. A state it did not judge is a
    ``CrashPoolError``."""
    got, spent = result
    for name, seconds in spent.items():
        phases[name] = phases.get(name, 0.0) + seconds
    by_index = dict(got)
    for index, state in sent:
        if index not in by_index:
            raise CrashPoolError(f"a crash-state worker returned no judgement for state "
                                 f"#{index} ({state.describe()})")
        yield state, by_index[index]


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool and kill its workers: they ignore Ctrl-C, and one busy with a slow
    recovery would otherwise hold the interpreter's exit until its batch ends. The processes
    are taken before ``shutdown``, which forgets them."""
    terminate = getattr(pool, "terminate_workers", None)   # Python 3.14
    if callable(terminate):
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(5)
