"""The parent's side of the soak's processes (``server.py`` is the child): start one, read its
events on a thread, turn each finished op into a ``SoakOp`` for the recorder, and, when the
process dies, turn the ops it left in flight into ``info`` ops ending when the death was seen."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from crashgate.harness.faults.writers import READY_TIMEOUT, child_pythonpath
from crashgate.harness.soak.record import WRITES

__all__ = ["ServerProcess", "Sink"]

Sink = Callable[[dict[str, Any]], object]
"""Takes one finished op as the fields of a ``SoakOp`` without ``index`` (the recorder numbers
them)."""


class ServerProcess:
    """One writer or reader process of a soak, labelled like ``writer#2`` or ``reader-1``.

    ``events`` holds every event that is not an op (``ready``, ``verified``, ``done``,
    ``closed``, ``refused``, ``armed``, ``open-failed``) as dicts; ``last_begun[agent]`` is the
    number of the last op each agent began, so a writer that replaces this one resumes after
    it."""

    def __init__(self, label: str, config: dict[str, Any], sink: Sink, run: int) -> None:
        self.label = label
        self.run = run
        self._sink = sink
        self._pending: dict[tuple[Any, int], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last_begun: dict[str, int] = {}
        self.injected = 0
        """I/O errors the process reported injecting (``ioerror`` commands)."""
        self.ok_write_ends: deque[float] = deque(maxlen=100_000)
        """When its latest acknowledged writes ended (a fenced writer must have none late)."""
        env = dict(os.environ, PYTHONPATH=child_pythonpath(), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crashgate.harness.soak.server", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            text=True, bufsize=1)
        self.pid = self.proc.pid
        self.stderr: list[str] = []
        self.eof = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # -- events -------------------------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                self.stderr.append(f"stdout: {line.rstrip()}")
                continue
            kind = ev.get("ev")
            if kind == "b":
                with self._lock:
                    self._pending[(ev["a"], ev["s"])] = ev
                    if ev["a"] != "sweep":
                        self.last_begun[str(ev["a"])] = max(
                            self.last_begun.get(str(ev["a"]), -1), int(ev["s"]))
            elif kind == "e":
                with self._lock:
                    begin = self._pending.pop((ev["a"], ev["s"]), None)
                if begin is not None:
                    self._finish(begin, ev["o"], ev["t"], ev.get("r"), ev.get("err"))
            elif kind == "injected":
                self.injected += 1
            else:
                self.events.put(ev)
        self.eof.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.stderr) < 200:
                self.stderr.append(line.rstrip())

    def _finish(self, begin: dict[str, Any], outcome: str, end: float, result: Any,
                error: str | None, detail: str | None = None) -> None:
        agent = begin["a"]
        if outcome == "ok" and begin["op"] in WRITES:
            self.ok_write_ends.append(end)
        self._sink({"process": self.label, "agent": None if agent == "sweep" else agent,
                    "op": begin["op"], "args": begin["args"], "start": begin["t"], "end": end,
                    "outcome": outcome, "value": begin.get("v"), "result": result,
                    "error": error, "detail": detail or ("sweep" if agent == "sweep" else None),
                    "run": self.run})

    def abandon(self, why: str) -> int:
        """After the process died: every op it left in flight becomes ``info``, ending now (it
        took effect before this moment or never). Returns how many."""
        self.eof.wait(10.0)
        now = time.monotonic()
        with self._lock:
            left, self._pending = list(self._pending.values()), {}
        for begin in left:
            self._finish(begin, "info", now, None, None, why)
        return len(left)

    def wait_event(self, kinds: tuple[str, ...], timeout: float) -> dict[str, Any] | None:
        """The next event of one of ``kinds`` (others are dropped), or None on timeout or
        when the process ended first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.eof.is_set() and self.events.empty():
                    return None
                continue
            if ev.get("ev") in kinds:
                return ev

    def opened(self) -> dict[str, Any] | None:
        """``ready`` or ``refused``; None if it said neither in time."""
        return self.wait_event(("ready", "refused"), READY_TIMEOUT)

    # -- commands -----------------------------------------------------------------------------

    def send(self, **command: Any) -> bool:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Ask it to stop and close; the ``closed`` event (None if it died or hung: then it is
        killed)."""
        self.send(cmd="stop")
        with_stats = self.wait_event(("closed",), timeout)
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.kill()
        self.close_pipes()
        return with_stats

    def close_pipes(self) -> None:
        self.eof.wait(5.0)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

