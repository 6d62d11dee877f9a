"""ADR-0003's ``RunStore``: run state (start, steps, finish) over any crashgate store with kv and
batch.

Key ``adr0003/run/<run id>`` holds the whole run as JSON. Every change (start, a step, finish)
rewrites it with one ``put``, so after any crash a run is as it was after some acknowledged
change: a step is there or not, a finish is there with its status or not.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from crashgate.backends import Clock
from crashgate.reference.adr0003.records import (
    PREFIX,
    Run,
    RunStep,
    UnknownRun,
    check_id,
    dumps,
    require,
)

__all__ = ["FINAL", "RunStore"]

_RUNS = PREFIX + "run/"
FINAL = ("succeeded", "failed", "cancelled")


class RunStore:
    """Runs in ``store``; time from ``clock`` (``env.clock``). One writer at a time."""

    def __init__(self, store: Any, clock: Clock) -> None:
        require(store, "run")
        self.store = store
        self.clock = clock
        self._lock = threading.RLock()

    def start(self, tenant_id: str, run_id: str,
              metadata: Mapping[str, Any] | None = None) -> Run:
        """A new run, ``running``. A run id already used is a ``ValueError``."""
        check_id("tenant_id", tenant_id)
        check_id("run_id", run_id)
        with self._lock:
            if self.get(run_id) is not None:
                raise ValueError(f"run_id={run_id!r} is already used; give a new run id")
            run = Run(run_id, tenant_id, "running", self.clock.time(), None, (),
                      dict(metadata or {}))
            self._put(run)
            return run

    def step(self, run_id: str, name: str, detail: Mapping[str, Any] | None = None) -> Run:
        """Record a step of a running run."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name={name!r}: give the step a non-empty name")
        with self._lock:
            run = self._running(run_id, f"step({name!r})")
            run = Run(run.run_id, run.tenant_id, run.status, run.started_at, None,
                      (*run.steps, RunStep(name, self.clock.time(), dict(detail or {}))),
                      run.metadata)
            self._put(run)
            return run

    def finish(self, run_id: str, status: str = "succeeded", error: str | None = None) -> Run:
        """End a running run with ``status`` (``succeeded``, ``failed`` or ``cancelled``)."""
        if status not in FINAL:
            raise ValueError(f"status={status!r}: give one of {FINAL}")
        with self._lock:
            run = self._running(run_id, f"finish({status!r})")
            run = Run(run.run_id, run.tenant_id, status, run.started_at, self.clock.time(),
                      run.steps, run.metadata, error)
            self._put(run)
            return run

    def _running(self, run_id: str, what: str) -> Run:
        run = self.get(run_id)
        if run is None:
            raise UnknownRun(f"{what}: run_id={run_id!r} was never started; start() it first")
        if run.status != "running":
            raise ValueError(f"{what}: run {run_id!r} already finished ({run.status}); start a "
                             "new run")
        return run

    def _put(self, run: Run) -> None:
        self.store.put(_RUNS + run.run_id, dumps({
            "tenant_id": run.tenant_id, "status": run.status, "started_at": run.started_at,
            "finished_at": run.finished_at, "metadata": dict(run.metadata), "error": run.error,
            "steps": [{"name": s.name, "at": s.at, "detail": dict(s.detail)}
                      for s in run.steps]}))

    def get(self, run_id: str) -> Run | None:
        check_id("run_id", run_id)
        raw = self.store.get(_RUNS + run_id)
        return None if raw is None else _run(run_id, raw)

    def list(self, tenant_id: str | None = None, status: str | None = None) -> list[Run]:
        """Runs by run id, of ``tenant_id`` and in ``status`` when given."""
        if tenant_id is not None:
            check_id("tenant_id", tenant_id)
        if status is not None and status not in ("running", *FINAL):
            raise ValueError(f"status={status!r}: give one of {('running', *FINAL)} or None")
        runs = [_run(k[len(_RUNS):], v) for k, v in self.store.scan(_RUNS)]
        return [r for r in runs if (tenant_id is None or r.tenant_id == tenant_id)
                and (status is None or r.status == status)]


def _run(run_id: str, raw: bytes) -> Run:
    doc = json.loads(raw)
    return Run(run_id, doc["tenant_id"], doc["status"], doc["started_at"], doc["finished_at"],
               tuple(RunStep(s["name"], s["at"], s["detail"]) for s in doc["steps"]),
               doc["metadata"], doc["error"])
