"""One child process speaking the process driver protocol (``backends/PROTOCOL.md``): start it,
send a request, wait for its one response within a timeout, kill it.

A child that dies, answers garbage or does not answer in time is killed (SIGKILL) and the
request is a ``DriverError`` with ``indeterminate=True``: it may or may not have been applied,
as for any process crash. Its stderr is kept (the last ``STDERR_LINES`` lines) and quoted in
every such error: it is the evidence of what went wrong inside the child.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from crashgate.backends import BackendMissing
from crashgate.backends.pids import wait_gone
from crashgate.backends.proc_protocol import DriverError, decode, encode

__all__ = ["STDERR_LINES", "Child"]

STDERR_LINES = 20
EXIT_GRACE = 5.0
"""Seconds a child has to exit after ``close`` (or end of stdin) before it is killed."""


class Child:
    """A started child: ``request(op, args)`` -> ``(True, result)`` or ``(False, error)``
    (the wire error object, for the caller to map); one request at a time."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None, label: str,
                 timeout: float) -> None:
        self.argv = list(argv)
        self.label = label
        self.timeout = timeout
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=None if env is None else dict(env))
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            path = (env or os.environ).get("PATH", "")
            raise BackendMissing(label, f"install {self.argv[0]!r} or put its directory on "
                                 "PATH", cause=f"cannot run {self.argv[0]!r}: {exc.strerror}; "
                                 f"PATH={path}") from exc
        self.pid = self.proc.pid
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._next = 0
        self._lock = threading.Lock()
        self.dead = False
        self._pumps = [threading.Thread(target=self._pump_out, daemon=True),
                       threading.Thread(target=self._pump_err, daemon=True)]
        for t in self._pumps:
            t.start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace").rstrip("\n"))

    def stderr_tail(self) -> str:
        self._pumps[1].join(1.0)   # a dead child's last words may still be in the pipe
        return "\n".join(self._stderr)

    def request(self, op: str, args: Mapping[str, Any], *, timeout: float | None = None
                ) -> tuple[bool, Any]:
        """Send ``op`` and wait for its response. ``ValueError`` (nothing sent) for arguments
        that are not JSON; ``DriverError`` for a child that is gone, dies, times out or
        answers garbage (then killed: the op is indeterminate)."""
        wait = self.timeout if timeout is None else timeout
        with self._lock:
            if self.dead:
                raise DriverError(f"{self.label}: the child process (pid {self.pid}) is gone; "
                                  f"{op!r} was not sent", fix="open the store again")
            self._next += 1
            rid = self._next
            line = encode({"id": rid, "op": op, "args": dict(args)})
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except OSError:
                raise self._died(op, "its stdin closed (it exited)") from None
            try:
                raw = self._lines.get(timeout=wait)
            except queue.Empty:
                self.kill()
                raise DriverError(
                    f"{self.label}: the child process (pid {self.pid}) did not answer {op!r} "
                    f"within {wait:g} s: killed with SIGKILL; the op is indeterminate (applied "
                    f"or not){self._tail()}", indeterminate=True,
                    fix="raise the spec's timeout= option if the store is just slow") from None
            if raw is None:
                raise self._died(op, "it closed its stdout")
            try:
                msg = decode(raw)
                if msg.get("id") != rid:
                    raise DriverError(f"protocol violation: response id {msg.get('id')!r} "
                                      f"to request {rid}")
                if "error" in msg:
                    return False, msg["error"]
                if "ok" not in msg:
                    raise DriverError("protocol violation: a response with neither 'ok' nor "
                                      f"'error': {raw[:200]!r}")
                return True, msg["ok"]
            except DriverError as exc:
                self.kill()
                raise DriverError(f"{self.label}: the child process (pid {self.pid}) broke "
                                  f"the protocol answering {op!r}: {exc.problem}; killed with "
                                  f"SIGKILL, the op is indeterminate{self._tail()}",
                                  indeterminate=True, fix="make the driver follow "
                                  "backends/PROTOCOL.md (log to stderr only)") from None

    def _tail(self) -> str:
        tail = self.stderr_tail()
        return f"\n  Its last stderr lines:\n{tail}" if tail else " (its stderr is empty)"

    def _died(self, op: str, how: str) -> DriverError:
        self.dead = True
        code = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = self.proc.wait(EXIT_GRACE)
        if code is None:
            status = "still running"
        elif code < 0:
            status = f"killed by {signal.Signals(-code).name}"
        elif code == 0:   # also what Popen reports for a child another waiter reaped
            status = "exit status 0, or killed and reaped by the harness (ServerKill)"
        else:
            status = f"exit status {code}"
        return DriverError(f"{self.label}: the child process (pid {self.pid}) died during "
                           f"{op!r} ({how}; {status}): the op is indeterminate (applied or "
                           f"not){self._tail()}", indeterminate=True)

    def kill(self) -> None:
        """SIGKILL the child and wait until it is gone (reaped)."""
        self.dead = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(EXIT_GRACE)
        wait_gone((self.pid,), EXIT_GRACE)
        self._close_pipes()

    def close(self, timeout: float) -> tuple[bool, Any] | None:
        """Send ``close`` (when alive), end its stdin and wait for it to exit, killing it after
        ``EXIT_GRACE`` s; the answer to ``close``, None when it was already gone."""
        answer = None
        if not self.dead:
            with contextlib.suppress(DriverError):
                answer = self.request("close", {}, timeout=timeout)
        self.dead = True
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()   # end of stdin: a host exits at once
        try:
            self.proc.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()
        return answer

    def _close_pipes(self) -> None:
        # stdout and stderr end when the child has exited: closing them under a pump thread
        # would make it fail; a pump that is done has let go of its pipe
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        for pump, pipe in zip(self._pumps, (self.proc.stdout, self.proc.stderr), strict=True):
            pump.join(1.0)
            if not pump.is_alive() and pipe is not None:
                pipe.close()
