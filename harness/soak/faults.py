"""The soak's faults, acting on a running ``SoakRun`` from outside its processes (signals, other
processes, the file system the writer's env goes through). Each records itself in the history
as a ``fault`` op whose interval is its window (shaded in the report), and says what it found;
a fault whose promise broke adds a problem to the run (a violation of the soak).

What each expects is what DESIGN.md's faults promise: a killed writer's acknowledged writes all
there after the restart (the sweep's reads, checked like any other); a second writer refused
with ``LockHeld`` while the first holds the store; a writer frozen past its lease either keeps
its lock (an OS lock is held by a live process whatever the clocks say) or, where the store
declares a lease, is taken over and fenced: none of its writes is acknowledged after that; an
older reader refused with ``VersionTooNew``, a newer one reading what was written; I/O errors
and a full disk failing ops without losing acknowledged ones.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from crashgate.backends import Capability
from crashgate.harness.faults.writers import DuplicateWriter

if TYPE_CHECKING:
    from crashgate.harness.soak.run import SoakRun

__all__ = ["inject"]

LEASE_AGE = 60.0
"""How far ahead the clock of the writer that tries to take over is: twice ADR-032's 30 s."""
IO_ERRORS = {"io-error": ("EIO", 3), "disk-full": ("ENOSPC", 12)}


def inject(run: SoakRun, name: str) -> None:
    start = time.monotonic()
    skip = _skip(run, name)
    if skip:
        run.result.skipped.setdefault(name, skip)
        return
    detail = _FAULTS[name](run)
    run.recorder.fault(name, start, time.monotonic(), detail, run.run)
    run.result.faults.append({"name": name, "start": start - run.recorder.t0,
                              "end": time.monotonic() - run.recorder.t0, "detail": detail,
                              "run": run.run})


def _skip(run: SoakRun, name: str) -> str | None:
    decl = run.decl
    if name == "kill-writer" and not run.survives_kill:
        return (f"it declares durability {decl.durability.value}: nothing is promised to "
                "survive the writer's death")
    if name in ("second-writer", "lease-expiry") and not (
            decl.has(Capability.WRITER_LOCK) or decl.has(Capability.LEASE)):
        return "it declares neither a writer lock nor a lease: several writers are its users' "\
               "business"
    if name == "skew-reader" and not (decl.has(Capability.WIRE_VERSION) and decl.wire_version):
        return "it declares no wire version that a reader of another version could be opened at"
    if name in IO_ERRORS and not run.survives_kill:
        return "a restart after the errors would lose everything it holds by its declaration"
    return None


def _kill_writer(run: SoakRun) -> str:
    run.stop_writer(kill=True, why="the writer was killed (SIGKILL) while this op ran")
    run.restart_writer()
    return f"SIGKILL; writer#{run.incarnation} recovered and swept every record"


def _second(run: SoakRun, clock_offset: float, label: str) -> tuple[str, bool]:
    """A second writer process on the store; (what happened, whether it opened)."""
    with DuplicateWriter(run.s.spec.label, run.path) as dw:
        proc = dw.writer(label, clock_offset=clock_offset, max_writes=2)
        out = proc.opened()
        if out.kind == "LOCKHELD":
            return f"refused with LockHeld: {out.message[:160]}", False
        if out.kind == "READY":
            proc.wait_acks(2, 10.0)
            proc.stop(10.0)
            return "opened the store for writing", True
        return f"ended with {out.kind}: {out.message[:160]}", False


def _second_writer(run: SoakRun) -> str:
    what, opened = _second(run, run.clock_offset, f"second-{run.run}")
    if opened or "LockHeld" not in what:
        run.result.problems.append(f"second-writer: a second writer, while the writer held "
                                   f"the store, {what} (expected LockHeld)")
    return what


def _lease_expiry(run: SoakRun) -> str:
    writer = run.writer
    assert writer is not None
    writer.signal(signal.SIGSTOP)
    try:
        what, opened = _second(run, run.clock_offset + LEASE_AGE, f"late-{run.run}")
    finally:
        writer.signal(signal.SIGCONT)
    if not opened:
        if "LockHeld" not in what:
            run.result.problems.append(f"lease-expiry: a writer {LEASE_AGE:g} s ahead, while "
                                       f"the holder was frozen, {what}")
        return f"holder frozen; a writer {LEASE_AGE:g} s ahead was {what}"
    if not run.decl.has(Capability.LEASE):
        run.result.problems.append(
            f"lease-expiry: a writer {LEASE_AGE:g} s ahead opened the store while the holder "
            "was alive and frozen; it declares a writer lock, not a lease")
    taken = time.monotonic()
    time.sleep(1.0)   # the holder wakes up and tries to write: it must be fenced off
    late = sum(1 for end in list(writer.ok_write_ends) if end > taken)
    if late:
        run.result.problems.append(f"lease-expiry: {writer.label} had {late} writes "
                                   "acknowledged after its lease was taken over")
    run.stop_writer(kill=True, why="the fenced writer was replaced")
    run.restart_writer()
    return (f"holder frozen; a writer {LEASE_AGE:g} s ahead took the lease over; the old "
            f"holder had {late} writes acknowledged after that; restarted")


def _skew_reader(run: SoakRun) -> str:
    current = int(run.decl.wire_version or 0)
    found = []
    for version, want in ((current - 1, "refused"), (current + 1, "reads")):
        if version < 0:
            continue
        proc = run.start_reader(f"skew-v{version}", {"readonly": "true",
                                                     "wire_version": str(version)})
        out = proc.opened()
        if out is not None and out["ev"] == "ready":
            time.sleep(0.5)   # its reads go into the history and are checked like any
            proc.stop(10.0)
            proc.abandon("reader stopped")
            got = "opened and read"
        else:
            proc.kill()
            proc.close_pipes()
            got = (f"refused ({', '.join(out.get('type', [])[:1])}: "
                   f"{str(out.get('error'))[:120]})" if out else "said nothing")
        found.append(f"v{version} reader {got}")
        if want == "refused" and "VersionTooNew" not in got:
            run.result.problems.append(f"skew-reader: a v{version} reader of a v{current} "
                                       f"store {got} (expected VersionTooNew)")
        if want == "reads" and got != "opened and read":
            run.result.problems.append(f"skew-reader: a v{version} reader of a v{current} "
                                       f"store {got} (a newer reader reads older files)")
    return "; ".join(found)


def _io_errors(name: str) -> Callable[[SoakRun], str]:
    code, count = IO_ERRORS[name]

    def fault(run: SoakRun) -> str:
        writer = run.writer
        assert writer is not None
        before = writer.injected
        writer.send(cmd="ioerror", errno=code, count=count)
        writer.wait_event(("armed",), 10.0)
        time.sleep(1.0)
        hit = writer.injected - before
        run.stop_writer(kill=False, why=f"the writer restarted after {code}")
        run.restart_writer()
        if hit == 0:
            run.result.skipped.setdefault(name, (
                "no file write or sync of the store went through the env's file system in the "
                "window (SQLite on a real disk does its own I/O, with its real locks): nothing "
                "to fail"))
        return (f"{hit} of the next {count} file writes or syncs failed with {code}; "
                "restarted, swept")
    return fault


_FAULTS = {"kill-writer": _kill_writer, "second-writer": _second_writer,
           "lease-expiry": _lease_expiry, "skew-reader": _skew_reader,
           "io-error": _io_errors("io-error"), "disk-full": _io_errors("disk-full")}
