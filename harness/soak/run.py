"""One run of a soak: the writer process with its agents, the reader processes beside it, the
faults of the schedule, and the checks, on a real directory. ``soak.session`` runs the runs of
a soak (or of one shard) and writes what they found.

The loop, once a second: inject the fault that is due, check every read that ended more than
``MARGIN`` seconds ago against the history, sample progress. A run ends after ``duration``
seconds or when the agents ran their ops; then the writer sweeps every record once more (every
acknowledged write is checked), everything stops, and the rest of the reads are checked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from crashgate.backends import BackendSpec, Declaration, Durability
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.interrupt import interrupt_obeyed, raise_if_interrupted
from crashgate.harness.soak.faults import inject
from crashgate.harness.soak.procs import ServerProcess
from crashgate.harness.soak.recorder import Recorder
from crashgate.harness.soak.resources import ResourceSampler
from crashgate.harness.soak.schedule import Schedule

__all__ = ["MARGIN", "RunResult", "SoakRun", "SoakSettings"]

MARGIN = 5.0
"""Seconds a read waits before it is checked, so every write that began before it ended has
been reported by its process (events of several processes reach the parent in their own time)."""
READERS = 2
RESTART_CLOCK_STEP = 60.0
"""Seconds the clock of each restarted writer runs ahead of its predecessor's: it sees a dead
writer's lock or lease as old as it would be after waiting out ADR-032's 30 s stale interval
(twice over), without the soak waiting (as the duplicate-writer rows do)."""


@dataclass(frozen=True)
class SoakSettings:
    spec: BackendSpec             # its label, options included, is what every process opens
    agents: int
    seed: int
    schedule: Schedule
    duration: float | None
    ops: int | None
    readers: int = READERS


@dataclass
class RunResult:
    run: int
    started: float                 # epoch seconds
    ended: float
    faults: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)     # fault -> why it could not run
    problems: list[str] = field(default_factory=list)         # fault expectations broken
    recoveries: int = 0
    sweeps: int = 0
    divergence: dict[str, int] = field(default_factory=lambda: {"compared": 0, "mismatches": 0})
    corruption: dict[str, int] = field(default_factory=lambda: {"checks": 0, "incidents": 0})
    repaired: int = 0
    stage: int | None = None       # a stage adapter's stage, as its writer opened it
    reconciled: int = 0            # records a reopened stage adapter mended (not closed cleanly)
    fallbacks: int | None = None                              # None: the store counts none
    io_errors: int = 0
    reader_open_failures: list[str] = field(default_factory=list)
    interrupted: bool = False      # Ctrl-C: the run stopped early, its evidence kept


class SoakRun:
    """Run ``run`` of a soak in ``directory`` (the store is ``directory/store``)."""

    def __init__(self, settings: SoakSettings, run: int, directory: str, recorder: Recorder,
                 sampler: ResourceSampler, declaration: Declaration,
                 progress: Any = None) -> None:
        self.s = settings
        self.run = run
        self.path = os.path.join(directory, "store")
        self.recorder = recorder
        self.sampler = sampler
        self.decl = declaration
        self.progress = progress
        self.result = RunResult(run, time.time(), 0.0)
        self.incarnation = 0
        self.writer: ServerProcess | None = None
        self.readers: list[ServerProcess] = []
        self.resume: dict[str, int] = {}
        self.clock_offset = 0.0
        """How far the current writer's clock is ahead of the real one."""
        self.ops_per_agent = (-(-settings.ops // settings.agents) if settings.ops else 0)

    # -- processes ----------------------------------------------------------------------------

    def config(self, role: str, agents: list[str], options: dict[str, str] | None = None,
               sweep_first: bool = False) -> dict[str, Any]:
        return {"role": role, "spec": self.s.spec.label, "path": self.path,
                "options": dict(options or {}), "seed": self.s.seed,
                "run": self.run, "agents": agents, "resume": self.resume,
                "ops_per_agent": self.ops_per_agent, "sweep_first": sweep_first,
                "clock_offset": self.clock_offset}

    def start_writer(self, sweep_first: bool) -> ServerProcess:
        self.incarnation += 1
        label = f"writer#{self.incarnation}"
        proc = ServerProcess(label, self.config("writer", [str(a) for a in range(self.s.agents)],
                                                sweep_first=sweep_first),
                             self.recorder.add, self.run)
        opened = proc.opened()
        if opened is None or opened["ev"] != "ready":
            proc.kill()
            why = opened["error"] if opened else "it said nothing in time"
            raise RuntimeError(f"{label} could not open {self.s.spec.label} at {self.path}: "
                               f"{why}; stderr: {' | '.join(proc.stderr[-5:])}")
        self.result.reconciled += int(opened.get("reconciled", 0))
        self.result.stage = opened.get("stage")
        if sweep_first:
            self._take_sweep(proc, proc.wait_event(("verified",), 300.0))
        self.sampler.watch(f"run {self.run} {label}", proc.pid)
        self.writer = proc
        return proc

    def start_reader(self, label: str, options: dict[str, str]) -> ServerProcess:
        proc = ServerProcess(label, self.config("reader", [f"r{label}"], options),
                             self.recorder.add, self.run)
        return proc

    def _take_sweep(self, proc: ServerProcess, ev: dict[str, Any] | None) -> None:
        if ev is None:
            self.result.problems.append(f"{proc.label} did not finish a sweep of its records")
            return
        self.result.sweeps += 1
        for section in ("divergence", "corruption"):
            for k, v in (ev.get(section) or {}).items():
                if isinstance(v, int):
                    getattr(self.result, section)[k] += v
        self.result.repaired += int(ev.get("repaired", 0))
        examples = (ev.get("divergence") or {}).get("examples")
        if examples:
            self.result.problems.append(f"{proc.label}: the two stores differ at {examples}")

    def sweep(self) -> None:
        if self.writer is not None and self.writer.alive and self.writer.send(cmd="sweep"):
            self._take_sweep(self.writer, self.writer.wait_event(("verified",), 300.0))

    def stop_writer(self, *, kill: bool, why: str) -> None:
        """Kill (SIGKILL) or stop the writer; the ops it left in flight become ``info``."""
        proc = self.writer
        if proc is None:
            return
        closed = None
        if kill:
            proc.kill()
        else:
            closed = proc.stop()
            if closed is None:
                why = f"{why}; it did not close cleanly"
        proc.abandon(why)
        proc.close_pipes()
        self.result.io_errors += proc.injected
        for agent, seq in proc.last_begun.items():
            self.resume[agent] = max(self.resume.get(agent, 0), seq + 1)
        if closed is not None and closed.get("fallbacks") is not None:
            self.result.fallbacks = (self.result.fallbacks or 0) + int(closed["fallbacks"])
        self.sampler.unwatch(f"run {self.run} {proc.label}")
        self.writer = None

    def restart_writer(self) -> None:
        self.clock_offset += RESTART_CLOCK_STEP
        self.start_writer(sweep_first=True)
        self.result.recoveries += 1

    @property
    def survives_kill(self) -> bool:
        return self.decl.durability.rank >= Durability.PROCESS_CRASH.rank

    # -- the loop -----------------------------------------------------------------------------

    def execute(self) -> RunResult:
        self.start_writer(sweep_first=False)
        t0 = time.monotonic()
        readonly = {"readonly": "true"}
        if self.s.readers and self._reader_allowed():
            self.readers = [self.start_reader(f"reader-{i + 1}", readonly)
                            for i in range(self.s.readers)]
            for r in self.readers:
                self.sampler.watch(f"run {self.run} {r.label}", r.pid)
        else:
            self.result.skipped["readers"] = ("the backend has no readonly option: no reader "
                                              "processes beside the writer")
        done_faults = -1
        try:
            while True:
                time.sleep(0.25)
                raise_if_interrupted()   # one swallowed on the way stops the soak all the same
                elapsed = time.monotonic() - t0
                if self.s.duration is not None and elapsed >= self.s.duration:
                    break
                if self._agents_done():
                    break
                due = self.s.schedule.at(elapsed)
                if due is not None and due[0] > done_faults:
                    # the next in order, never skipped: a fault that ran long delays the rest
                    done_faults += 1
                    inject(self, self.s.schedule.nth(done_faults))
                self.recorder.check(time.monotonic() - MARGIN)
                self._reader_events()
                if self.progress is not None:
                    self.progress(self)
            self.sweep()
        except KeyboardInterrupt:
            # a soak stopped by hand keeps what it gathered: the processes are stopped and the
            # documents written as for a run that ended
            self.result.interrupted = True
            interrupt_obeyed()
        finally:
            for r in self.readers:
                if not r.alive:   # readers are unlimited: one that died is a broken promise
                    self.result.problems.append(
                        f"{r.label} died during the run (exit {r.proc.returncode}): "
                        f"{' | '.join(r.stderr[-6:]) or 'it said nothing on stderr'}")
                r.stop(10.0)
                r.abandon("reader stopped")
                self.sampler.unwatch(f"run {self.run} {r.label}")
            self._reader_events()
            self.stop_writer(kill=False, why="the run ended")
        self.result.ended = time.time()
        return self.result

    def _agents_done(self) -> bool:
        w = self.writer
        if w is None:
            return False
        while not w.events.empty():
            ev = w.events.get()
            if ev.get("ev") == "done":
                return True
        return False

    def _reader_events(self) -> None:
        for r in self.readers:
            while not r.events.empty():
                ev = r.events.get()
                if ev.get("ev") == "open-failed" and len(self.result.reader_open_failures) < 20:
                    self.result.reader_open_failures.append(f"{r.label}: {ev['error']}")

    def _reader_allowed(self) -> bool:
        # a reader opens the store with readonly=true; the backend must take the option
        return accepts_readonly(self.s.spec)
