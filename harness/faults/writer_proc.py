"""A store opened in a process of its own: the child side of ``DuplicateWriter``.

    python -m crashgate.harness.faults.writer_proc ROLE SPEC PATH [--opt K=V]...
        [--clock-offset SECONDS] [--prefix P] [--id-base N] [--interval SECONDS] [--batch N]

ROLE is ``writer`` (open for writing, then write until told ``stop`` on stdin or killed; it also
takes ``pause``, ``resume`` and ``age SECONDS``, see ``_Commands``) or ``reader`` (open, count
what is visible, exit). It speaks one line per event on stdout::

    READY pid=<pid>              opened (a writer starts writing after this)
    ACK <key-or-id>              one write returned: it is acknowledged
    READ <n>                     a reader saw n records
    CLOSED                       a writer closed cleanly after ``stop``
    PAUSED / RESUMED             a writer stopped / went on writing, as told
    AGED <offset>                a writer's clock is now <offset> s ahead, as told
    LOCKHELD <json>              opening raised LockHeld (exit 3)
    REFUSED <json>               opening raised another CrashgateError (exit 4)
    ERROR <json>                 anything else went wrong (exit 5; WRITEFAIL exits 6)

The JSON carries ``type`` (the exception class and its bases), ``message`` and, for LockHeld,
``holder`` and ``code``. ``--clock-offset`` runs the store on a clock that many seconds ahead
of the real one: how a new writer is made to see a lease or lock as old as it would be after
waiting, without waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from crashgate.backends import (
    Capability,
    CrashgateError,
    Env,
    LockHeld,
    OsFS,
    VectorRecord,
    resolve,
)
from crashgate.harness.ops import records_for

__all__ = ["OffsetClock", "batch_items", "key_for", "main", "value_for", "vector_for"]

EXIT_LOCKHELD, EXIT_REFUSED, EXIT_ERROR, EXIT_WRITEFAIL = 3, 4, 5, 6
AGE_STEP = 5.0
"""Seconds of a writer's clock per write while it ages: well under ADR-032's 10 s heartbeat,
so a heartbeat that writes renew never looks stale to the writer itself."""


class OffsetClock:
    """The system clock shifted ``offset`` seconds into the future (both clocks)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_SAY = threading.Lock()  # the writer and the command thread both speak: whole lines only


def _say(line: str) -> None:
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _describe(exc: BaseException) -> str:
    doc: dict[str, Any] = {
        "type": [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)],
        "message": str(exc),
    }
    if isinstance(exc, LockHeld):
        doc["holder"] = exc.holder
        doc["code"] = getattr(exc, "code", "")
    return json.dumps(doc)


def key_for(prefix: str, i: int) -> str:
    """The key of a writer's ``i``-th write (key-value stores)."""
    return f"{prefix}-{i:06d}"


def value_for(prefix: str, i: int) -> bytes:
    """The value of a writer's ``i``-th write: recognisable, so a mix-up shows."""
    return f"{prefix}:{i}:".encode() + bytes((i * 31 + j) % 251 for j in range(24))


def batch_items(prefix: str, i: int, n: int) -> list[tuple[str, bytes]]:
    """The (key, value) pairs of a writer's ``i``-th write with ``--batch n`` (one
    ``write_batch``, acknowledged as ``key_for(prefix, i)``); ``n`` 1 is the plain put."""
    key, value = key_for(prefix, i), value_for(prefix, i)
    return [(key, value)] + [(f"{key}#{j}", value + f"#{j}".encode()) for j in range(1, n)]


def vector_for(rid: int) -> list[float]:
    """The vector of record ``rid`` (vector-only stores)."""
    return [((rid * 7 + j) % 13) / 13.0 for j in range(8)]


class _Commands:
    """What the parent says on stdin, one command a line: ``stop`` (close and exit), ``pause``
    (stop writing but keep the store open: an idle holder), ``resume``, ``age SECONDS`` (let
    that much time pass on this writer's clock while it keeps writing, ``AGE_STEP`` seconds per
    write, so a heartbeat renewed by writes stays fresh). Each is answered on stdout once it
    took effect: ``PAUSED``, ``RESUMED``, ``AGED <offset>``. A closed stdin means the parent is
    gone: stop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self._lock = threading.Lock()
        self._age = 0.0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        for line in sys.stdin:
            word, _, arg = line.strip().partition(" ")
            if word == "stop":
                break
            if word == "pause":
                self.running.clear()
                _say("PAUSED")
            elif word == "resume":
                self.running.set()
                _say("RESUMED")
            elif word == "age":
                with self._lock:
                    self._age += float(arg)
        self.stop.set()
        self.running.set()

    def tick(self, clock: OffsetClock) -> None:
        """Before a write: move the clock ``AGE_STEP`` seconds on while an ``age`` is
        pending."""
        with self._lock:
            if self._age <= 0:
                return
            step = min(AGE_STEP, self._age)
            self._age -= step
            clock.offset += step
            if self._age <= 0:
                _say(f"AGED {clock.offset:g}")


def _write_loop(store: Any, clock: OffsetClock, args: argparse.Namespace) -> int:
    kv = store.declaration.has(Capability.KV)
    cmd = _Commands()
    i = 0
    while not cmd.stop.is_set():
        cmd.running.wait()
        if cmd.stop.is_set():
            break
        cmd.tick(clock)
        try:
            if kv and args.batch > 1:   # all of it or none: a client killed mid-batch
                store.write_batch(dict(batch_items(args.prefix, i, args.batch)))
                _say(f"ACK {key_for(args.prefix, i)}")
            elif kv:
                key = key_for(args.prefix, i)
                store.put(key, value_for(args.prefix, i))
                _say(f"ACK {key}")
            else:
                rid = args.id_base + i
                # metadata names the writer, unless the store keeps none (ops.records_for)
                store.upsert(list(records_for(store.declaration, [
                    VectorRecord.of(rid, vector_for(rid), {"writer": args.prefix})])))
                _say(f"ACK {rid}")
        except Exception as exc:  # noqa: BLE001 - the parent decides what a failed write means
            _say(f"WRITEFAIL {_describe(exc)}")
            return EXIT_WRITEFAIL
        i += 1
        if args.max_writes and i >= args.max_writes:
            cmd.stop.wait()
            break
        time.sleep(args.interval)
    store.close()
    _say("CLOSED")
    return 0


def _read(store: Any) -> int:
    decl = store.declaration
    n = len(store.scan("")) if decl.has(Capability.KV) else store.count()
    _say(f"READ {n}")
    store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crashgate.harness.faults.writer_proc")
    p.add_argument("role", choices=("writer", "reader"))
    p.add_argument("spec")
    p.add_argument("path")
    p.add_argument("--opt", action="append", default=[], metavar="K=V")
    p.add_argument("--clock-offset", type=float, default=0.0)
    p.add_argument("--prefix", default="w")
    p.add_argument("--id-base", type=int, default=0)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=1,
                   help="keys per write, as one write_batch (key-value stores with batch)")
    p.add_argument("--max-writes", type=int, default=0, help="then wait for stop (0: no limit)")
    args = p.parse_args(argv)
    extra = dict(o.split("=", 1) for o in args.opt)
    clock = OffsetClock(args.clock_offset)
    env = Env(fs=OsFS(), clock=clock)
    try:
        store = resolve(args.spec).open(args.path, env, **extra)
    except LockHeld as exc:
        _say(f"LOCKHELD {_describe(exc)}")
        return EXIT_LOCKHELD
    except CrashgateError as exc:
        _say(f"REFUSED {_describe(exc)}")
        return EXIT_REFUSED
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which judges it
        _say(f"ERROR {_describe(exc)}")
        return EXIT_ERROR
    _say(f"READY pid={os.getpid()}")
    try:
        return _write_loop(store, clock, args) if args.role == "writer" else _read(store)
    except Exception as exc:  # noqa: BLE001
        _say(f"ERROR {_describe(exc)}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
