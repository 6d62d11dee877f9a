"""Checking crash states in processes forked per batch, which inherit the parent's run and walk.

Where the platform has ``fork``, the parent enumerates the states as a serial run does
(``crashenum``, which builds each image to dedupe it) and hands them out a batch at a time to a
child forked for that batch. The child is forked just before its batch is enumerated, so it
inherits the recorded run, the checker and the enumeration's ``TraceWalk`` standing where its
states begin, all as they are in the parent's memory: nothing is pickled or recorded again. The
parent then enumerates the batch and sends the states (not the images); the child advances its
copy of the walk over them, rebuilds each image with the call the enumeration made
(``TraceWalk.image_of``: the same image), recovers and judges it, sends back ``(index,
judgement)`` and ends. At most ``jobs`` children run at once; results are merged in enumeration
order, so any ``jobs`` reports what a serial run does.

Why a child per batch, forked at that moment: memory. A forked process shares every page with
its parent until one of them writes it; whatever the parent frees or rewrites while a child
lives stays in the child's memory as it was. Forked when the parent holds one image at most
(never a batch of them) and living for one batch, a child holds little of its own, where a
long-lived worker would hold its own walk (every file's durable bytes: 95 MB of a large store,
per worker) and whatever the parent freed since it started. The parent calls ``gc.freeze()``
before each fork, so that neither collector writes to the objects they share. Forking costs
about a millisecond per hundred MB mapped; a batch costs far more.

A child that dies (killed, out of memory) is a ``CrashPoolError`` naming its states; one whose
check raises sends the exception back, which the parent raises with a note naming the state
(or, if it cannot be passed back, a ``CrashPoolError`` holding its traceback). Ctrl-C, an error
or a consumer that stops early kills the running children at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import multiprocessing
import pickle
import signal
import traceback
from collections.abc import Generator, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from crashgate.harness.crashcheck import Judgement
from crashgate.harness.crashpool import (
    Batch,
    CrashPoolError,
    Phases,
    StateChecker,
    check_rebuilt,
    merge,
    worker_died,
)
from crashgate.harness.crashstates import CrashState, TraceWalk
from crashgate.harness.simdisk import DiskImage

__all__ = ["check_forked"]

Result = tuple[list[tuple[int, Judgement]], Phases]


def _child(checker: StateChecker, walk: TraceWalk, conn: Connection) -> None:
    """In the forked child: receive the batch's ``(index, state)`` list, rebuild and check each,
    send ``("ok", judgements, phases)`` or ``("raised", pickled exception or None, text)``."""
    # Ctrl-C reaches the whole foreground process group: the parent handles it and stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    phases: Phases = {"rematerialise": 0.0, "recover": 0.0, "judge": 0.0}
    try:
        batch: Batch = conn.recv()
        message: tuple[Any, ...] = ("ok", check_rebuilt(checker, walk, batch, phases), phases)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        text = "".join(traceback.format_exception(exc))
        try:
            payload: bytes | None = pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled: its text
            payload = None
        message = ("raised", payload, text)
    conn.send(message)
    conn.close()


class _Running:
    """One forked child and the states it checks."""

    def __init__(self, number: int, process: BaseProcess, conn: Connection) -> None:
        self.number, self.process, self.conn = number, process, conn
        self.sent: Batch = []

    def result(self) -> Result:
        """The child's answer (it has sent one or ended); raises what it raised, or
        ``CrashPoolError`` when it died."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join()
            raise worker_died(self.sent, f"exit code {self.process.exitcode}") from exc
        finally:
            self.conn.close()
        self.process.join()
        if message[0] == "ok":
            return message[1], message[2]
        _, payload, text = message
        raised = None
        if payload is not None:
            with contextlib.suppress(Exception):
                raised = pickle.loads(payload)
        if isinstance(raised, BaseException):
            raise raised
        raise CrashPoolError(f"a crash-state worker process raised an exception that cannot be "
                             f"passed back to this process; its traceback:\n{text}")


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None).malloc_trim
    return None


def _release_free_memory() -> None:
    """Give the C heap's free pages back to the OS: freed memory the allocator keeps would
    otherwise be mapped into the child too, and the child would own every such page the parent
    reuses while it lives (recording a large run frees some 200 MB)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _fork(number: int, checker: StateChecker, walk: TraceWalk) -> _Running:
    ctx = multiprocessing.get_context("fork")
    _release_free_memory()
    mine, theirs = ctx.Pipe()
    process = ctx.Process(target=_child, args=(checker, walk, theirs), daemon=True,
                          name=f"crashgate-check-{number}")
    # Out of the collector's sight, in both processes, until the run ends (``check_forked``
    # unfreezes): a collection traverses every object it tracks, writing to its header, so one
    # in the child would copy every page it inherited, and one in the parent would leave the
    # child holding its own copy of every such page.
    gc.freeze()
    process.start()
    theirs.close()   # the child's end: EOF here once the child is gone
    return _Running(number, process, mine)


def _send(child: _Running, sent: Batch) -> None:
    child.sent = sent
    try:
        child.conn.send(sent)
    except OSError as exc:   # it died before its batch came
        child.process.join()
        raise worker_died(sent, f"exit code {child.process.exitcode}") from exc


def check_forked(
    states: Iterable[tuple[CrashState, DiskImage]], walk: TraceWalk, checker: StateChecker, *,
    jobs: int, batch: int, phases: Phases,
) -> Generator[tuple[CrashState, Judgement], None, None]:
    """Yield ``(state, judgement)`` for every state of ``states`` (the run of ``checker``,
    enumerated by ``walk``: ``crashenum.enumerate_crash_states(..., walk=walk)``), in their
    order, checked in children forked per ``batch`` states, at most ``jobs`` at once. The
    children's phase seconds are added to ``phases``. Unix only (``fork``)."""
    if jobs < 1 or batch < 1:
        raise ValueError(f"check_forked(jobs={jobs}, batch={batch}): both must be at least 1")
    source: Iterator[tuple[CrashState, DiskImage]] = iter(states)
    running: dict[Connection, _Running] = {}
    done: dict[int, tuple[Batch, Result]] = {}   # finished, in any order
    started = yielded = index = 0
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < jobs:
                # the first state moves the walk to where the batch begins; its image is
                # dropped before the fork, so the child inherits one image at most
                first = next(source, None)
                if first is None:
                    exhausted = True
                    break
                sent = [(index, first[0])]
                first = None
                child = _fork(started, checker, walk)
                running[child.conn] = child
                started += 1
                for state, _ in source:
                    sent.append((index + len(sent), state))
                    if len(sent) >= batch:
                        break
                else:
                    exhausted = True
                index += len(sent)
                _send(child, sent)
            if not running:
                break
            for ready in wait(list(running)):
                child = running.pop(ready)   # type: ignore[call-overload]
                done[child.number] = (child.sent, child.result())
            while yielded in done:
                yield from merge(*done.pop(yielded), phases)
                yielded += 1
    finally:
        for child in running.values():   # an error, Ctrl-C or an early stop: stop them now
            with contextlib.suppress(Exception):
                child.process.kill()
        for child in running.values():
            with contextlib.suppress(Exception):
                child.process.join(5)
                child.conn.close()
        gc.unfreeze()   # what ``_fork`` froze is the collector's again
