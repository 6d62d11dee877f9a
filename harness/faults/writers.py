"""Duplicate writers: real OS processes opening one store (the child is ``writer_proc``).

``DuplicateWriter`` starts and tracks the processes; the procedure decides what their lines
mean. Every process it started is killed by ``heal()`` (use it as a context manager), by its
own handle, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.backends import Capability, Declaration
from crashgate.harness.faults.base import Fault, requires

__all__ = ["DuplicateWriter", "Outcome", "WriterProcess", "child_pythonpath"]

READY_TIMEOUT = 60.0  # a cold interpreter importing numpy and apsw on a busy 2-core machine


def child_pythonpath(extra: Iterable[str] = ()) -> str:
    """PYTHONPATH for a child that must resolve the same ``module:factory`` names as this
    process: ``extra`` first, then this process's ``sys.path`` directories."""
    seen: dict[str, None] = {}
    for p in [*extra, *sys.path, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]:
        if p and os.path.isdir(p):
            seen.setdefault(os.path.abspath(p), None)
    return os.pathsep.join(seen)


@dataclass(frozen=True)
class Outcome:
    """How a child's open ended: ``kind`` is READY, LOCKHELD, REFUSED, ERROR, or TIMEOUT /
    EXITED when it said nothing; ``info`` is the parsed JSON of the line (``{}`` for READY)."""

    kind: str
    info: dict[str, Any]
    line: str = ""

    @property
    def types(self) -> list[str]:
        return list(self.info.get("type", []))

    @property
    def message(self) -> str:
        return str(self.info.get("message", self.line))


class WriterProcess:
    """One child process and the lines it printed (read by a thread as they come)."""

    def __init__(self, label: str, argv: Sequence[str], env: dict[str, str]) -> None:
        self.label = label
        self.argv = list(argv)
        # its own process group: a store that lives in a child of it (a proc: driver, e.g. the
        # real @ruvector/rvf in node) is killed with it, not left to exit on a closed stdin
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=env, start_new_session=True)
        self.lines: list[str] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        self._pumps = [threading.Thread(target=self._pump, daemon=True),
                       threading.Thread(target=self._pump_err, daemon=True)]
        for pump in self._pumps:
            pump.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr[-15:])

    def acks(self) -> list[str]:
        with self._cond:
            return [ln[4:] for ln in self.lines if ln.startswith("ACK ")]

    def wait_for(self, prefixes: Sequence[str], timeout: float) -> str | None:
        """The first line starting with one of ``prefixes``; ``None`` on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ln in self.lines:
                    if ln.startswith(tuple(prefixes)):
                        return ln
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def wait_acks(self, n: int, timeout: float) -> bool:
        """Whether the child acknowledged at least ``n`` writes within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(ln.startswith("ACK ") for ln in self.lines) < n:
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wait_eof(self, timeout: float = 10.0) -> bool:
        """Whether the child's stdout ended (every line it printed is in ``lines``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def opened(self, timeout: float = READY_TIMEOUT) -> Outcome:
        """How the child's open ended (it prints exactly one of these lines first)."""
        line = self.wait_for(("READY", "LOCKHELD", "REFUSED", "ERROR"), timeout)
        if line is None:
            kind = "EXITED" if self.proc.poll() is not None else "TIMEOUT"
            return Outcome(kind, {}, self.stderr_tail)
        kind, _, rest = line.partition(" ")
        if kind == "READY":
            return Outcome(kind, {}, line)
        try:
            info = json.loads(rest)
        except ValueError:
            info = {"message": rest}
        return Outcome(kind, info, line)

    def _send(self, command: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it has exited: the answer never comes, and the caller sees that

    def command(self, command: str, answer: str, timeout: float = 30.0) -> str | None:
        """Send a writer ``command`` (``pause``, ``resume``, ``age SECONDS``, see
        ``writer_proc``) and wait for its next line starting with ``answer``; ``None`` when
        it did not come (the child exited, e.g. on a failed write, or timed out)."""
        with self._cond:
            before = sum(ln.startswith(answer) for ln in self.lines)
        self._send(command)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                said = [ln for ln in self.lines if ln.startswith(answer)]
                if len(said) > before:
                    return said[before]
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask a writer to close cleanly; whether it printed CLOSED."""
        self._send("stop")
        ok = self.wait_for(("CLOSED",), timeout) is not None
        self.reap(timeout)
        return ok

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would, of it and its process group (the
        processes of its store); waits until it is gone."""
        self._kill_group()
        self.reap(30.0)
        self.wait_eof()

    def _kill_group(self) -> None:
        # only while it is not reaped: until then its pid (the group's id) cannot be reused
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def reap(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
            code = self.proc.wait(10)
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        """Close the pipes of an exited child, once the threads reading them saw their end
        (a pipe left open is a file descriptor leaked per child, and a ResourceWarning)."""
        for pump in self._pumps:
            pump.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not (pipe is not self.proc.stdin
                                         and any(p.is_alive() for p in self._pumps)):
                with contextlib.suppress(OSError):
                    pipe.close()

    def __repr__(self) -> str:
        return f"WriterProcess({self.label}, pid={self.pid})"


class DuplicateWriter(Fault):
    """Start writers and readers of the store ``spec`` at ``path`` as real processes."""

    levers = frozenset({"process"})

    def __init__(self, spec: str, path: str, *, pythonpath: Iterable[str] = (),
                 interval: float = 0.01) -> None:
        self.spec = spec
        self.path = path
        self.interval = interval
        self._env = dict(os.environ, PYTHONPATH=child_pythonpath(pythonpath),
                         PYTHONUNBUFFERED="1")
        self.processes: list[WriterProcess] = []
        self._events: list[str] = []

    @property
    def name(self) -> str:
        return f"DuplicateWriter({self.spec})"

    def needs(self, decl: Declaration) -> str | None:
        return requires(decl, Capability.WRITER_LOCK, what="writer lock across processes")

    def _spawn(self, role: str, label: str, options: dict[str, str], clock_offset: float,
               id_base: int, max_writes: int, batch: int = 1) -> WriterProcess:
        argv = [sys.executable, "-m", "crashgate.harness.faults.writer_proc", role, self.spec,
                self.path, "--prefix", label, "--id-base", str(id_base),
                "--interval", str(self.interval), "--clock-offset", str(clock_offset),
                "--max-writes", str(max_writes)] + (["--batch", str(batch)] if batch > 1 else [])
        for k, v in options.items():
            argv += ["--opt", f"{k}={v}"]
        proc = WriterProcess(label, argv, self._env)
        self.processes.append(proc)
        self._events.append(f"started {role} {label} (pid {proc.pid})"
                            + (f" with clock +{clock_offset:g} s" if clock_offset else ""))
        return proc

    def writer(self, label: str, *, id_base: int = 0, clock_offset: float = 0.0,
               max_writes: int = 0, options: dict[str, str] | None = None,
               batch: int = 1) -> WriterProcess:
        """``batch`` > 1: each write is one ``write_batch`` of that many keys
        (``writer_proc.batch_items``)."""
        return self._spawn("writer", label, options or {}, clock_offset, id_base, max_writes,
                           batch)

    def reader(self, label: str, *, options: dict[str, str] | None = None) -> WriterProcess:
        return self._spawn("reader", label, options or {}, 0.0, 0, 0)

    def kill(self, proc: WriterProcess) -> None:
        """SIGKILL ``proc`` if it still runs (and wait for it)."""
        running = proc.proc.poll() is None
        proc.kill()
        self._events.append(f"SIGKILL {proc.label} (pid {proc.pid})" if running else
                            f"{proc.label} (pid {proc.pid}) had exited with code "
                            f"{proc.proc.returncode}")

    def heal(self) -> None:
        for proc in self.processes:
            if proc.proc.poll() is None:
                proc.kill()
            else:   # exited on its own (refused, failed): reaped, and its pipes closed
                proc.reap(10.0)

    def __enter__(self) -> DuplicateWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(self._events)
