"""A store opened in a process of its own: the child side of ``DuplicateWriter``.

    python -m crashgate.harness.faults.writer_proc ROLE SPEC PATH [--opt K=V]...
        [--clock-offset SECONDS] [--prefix P] [--id-base N] [--interval SECONDS]

ROLE is ``writer`` (open for writing, then write until told ``stop`` on stdin or killed) or
``reader`` (open, count what is visible, exit). It speaks one line per event on stdout::

    READY pid=<pid>              opened (a writer starts writing after this)
    ACK <key-or-id>              one write returned: it is acknowledged
    READ <n>                     a reader saw n records
    CLOSED                       a writer closed cleanly after ``stop``
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

__all__ = ["OffsetClock", "key_for", "main", "value_for", "vector_for"]

EXIT_LOCKHELD, EXIT_REFUSED, EXIT_ERROR, EXIT_WRITEFAIL = 3, 4, 5, 6


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


def _say(line: str) -> None:
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


def vector_for(rid: int) -> list[float]:
    """The vector of record ``rid`` (vector-only stores)."""
    return [((rid * 7 + j) % 13) / 13.0 for j in range(8)]


def _stop_flag() -> threading.Event:
    stop = threading.Event()

    def watch() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()  # "stop", or stdin closed: the parent is gone

    threading.Thread(target=watch, daemon=True).start()
    return stop


def _write_loop(store: Any, args: argparse.Namespace) -> int:
    kv = store.declaration.has(Capability.KV)
    stop = _stop_flag()
    i = 0
    while not stop.is_set():
        try:
            if kv:
                key = key_for(args.prefix, i)
                store.put(key, value_for(args.prefix, i))
                _say(f"ACK {key}")
            else:
                rid = args.id_base + i
                store.upsert([VectorRecord.of(rid, vector_for(rid), {"writer": args.prefix})])
                _say(f"ACK {rid}")
        except Exception as exc:  # noqa: BLE001 - the parent decides what a failed write means
            _say(f"WRITEFAIL {_describe(exc)}")
            return EXIT_WRITEFAIL
        i += 1
        if args.max_writes and i >= args.max_writes:
            stop.wait()
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
    p.add_argument("--max-writes", type=int, default=0, help="then wait for stop (0: no limit)")
    args = p.parse_args(argv)
    extra = dict(o.split("=", 1) for o in args.opt)
    env = Env(fs=OsFS(), clock=OffsetClock(args.clock_offset))
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
        return _write_loop(store, args) if args.role == "writer" else _read(store)
    except Exception as exc:  # noqa: BLE001
        _say(f"ERROR {_describe(exc)}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
