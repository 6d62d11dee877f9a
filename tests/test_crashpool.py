"""Crash states checked in worker processes (``harness.crashpool``): the same report as a serial
run, state for state; a worker that dies or raises is an error in the parent, never a pass."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pytest

from crashgate.backends import Env, resolve
from crashgate.harness import crashpool, powerloss
from crashgate.harness.cli import main
from crashgate.harness.crashcheck import ViolationClass
from crashgate.harness.crashpool import CrashPoolError, default_jobs, valid_jobs
from crashgate.harness.powerloss import PowerLossReport, run_powerloss
from crashgate.harness.workload import PROFILES
from crashgate.reference.memory import MemoryStore, open_memory

_RECORDER = os.getpid()   # the process that imported this module: the test's, not a worker's


def open_dies_in_worker(path: str, env: Env, **options: str) -> Any:
    """The memory store, except that a worker process opening it is killed (as the OOM killer
    or a store calling ``os._exit`` would)."""
    if os.getpid() != _RECORDER:
        os.kill(os.getpid(), signal.SIGKILL)
    return open_memory(path, env, **options)


class Escapes(BaseException):
    """Not an ``Exception``: recovery does not catch it, as it would not catch SystemExit."""


class _EscapingScan(MemoryStore):
    def scan(self, prefix: str = "") -> Any:
        if os.getpid() != _RECORDER:   # the workload never scans: only a recovery does
            raise Escapes("the store gave up")
        return super().scan(prefix)


def open_escapes_in_worker(path: str, env: Env, **options: str) -> Any:
    store = open_memory(path, env, **options)
    store.__class__ = _EscapingScan
    return store


def open_writes_differently_in_worker(path: str, env: Env, **options: str) -> Any:
    """A store whose disk operations depend on the process: its run cannot be rebuilt. (A
    spawned worker imports this module again: it is told by having a parent.)"""
    if multiprocessing.parent_process() is not None:
        f = env.fs.open(f"{path}.{os.getpid()}", "w")
        f.write(0, b"x")
        f.close()
    return open_memory(path, env, **options)


def _summary(report: PowerLossReport) -> dict[str, Any]:
    return {"checked": report.states_checked, "positions": report.positions,
            "by_model": report.states_by_model, "violations": dict(report.violations),
            "first": {k: (v.state, v.detail) for k, v in report.first.items()},
            "reasons": report.empty_models}


def _both(name: str, **kw: Any) -> tuple[PowerLossReport, PowerLossReport]:
    spec = resolve(name)
    args = {"seed": 11, "ops": 40, "budget": 240, "profile": PROFILES["small"], **kw}
    return run_powerloss(spec, jobs=1, **args), run_powerloss(spec, jobs=2, **args)


@pytest.mark.parametrize("name, caught", [
    ("sqlite?synchronous=OFF", {ViolationClass.CORRUPT}),
    ("defects_crashpoints:open_in_place", {ViolationClass.LOST}),
    ("json", set()),
])
def test_two_workers_give_the_serial_report_state_for_state(name: str, caught: set[Any]
                                                            ) -> None:
    serial, parallel = _both(name)
    assert serial.jobs == 1 and parallel.jobs == 2
    assert caught <= set(serial.violations), serial.violations   # the defect is seen at all
    assert bool(caught) == bool(serial.violations)
    assert _summary(parallel) == _summary(serial)
    assert parallel.phases["rematerialise"] > 0 and parallel.phases["recover"] > 0


def _records_only_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make recording the run in any process but this one an error; return this process's
    recordings (one a run)."""
    recorded: list[int] = []
    record = powerloss.record_run

    def here_only(*args: Any, **kw: Any) -> Any:
        if os.getpid() != _RECORDER:
            raise AssertionError(f"process {os.getpid()} recorded the run again")
        recorded.append(1)
        return record(*args, **kw)

    monkeypatch.setattr(powerloss, "record_run", here_only)
    return recorded


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_forked_workers_judge_the_parents_run_of_a_store_that_names_its_writer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the RVF lock names its writer's process: the recovered images of the parent's run hold
    # the lock of a writer that is gone, in a worker as in a serial run (one virtual process),
    # never one of a live process (the parent) that would make the store refuse to reopen
    recorded = _records_only_here(monkeypatch)
    serial, parallel = _both("rvf", ops=120, budget=600)
    assert recorded == [1, 1]   # once a run, in this process: the workers recorded nothing
    assert serial.ok and serial.states_checked > 300, serial.states_checked
    assert parallel.jobs == 2
    assert _summary(parallel) == _summary(serial)


def test_spawned_workers_rebuild_the_run_and_agree() -> None:
    serial, spawned = _both("json", ops=20, budget=64, start_method="spawn")
    assert spawned.jobs == 2
    assert _summary(spawned) == _summary(serial)
    assert spawned.phases["workload"] > serial.phases["workload"]   # recorded again there


def test_spawned_workers_judge_a_store_that_names_its_writer_as_a_serial_run() -> None:
    serial, spawned = _both("rvf", ops=30, budget=120, start_method="spawn")
    assert spawned.jobs == 2
    assert _summary(spawned) == _summary(serial)


def test_a_worker_that_dies_is_an_error_not_a_hang_or_a_pass() -> None:
    spec = resolve("test_crashpool:open_dies_in_worker")
    with pytest.raises(CrashPoolError, match="worker process died.*--jobs 1"):
        run_powerloss(spec, seed=1, ops=20, budget=100, profile=PROFILES["small"], jobs=2)


def test_an_exception_recovery_does_not_catch_reaches_the_parent_naming_the_state() -> None:
    spec = resolve("test_crashpool:open_escapes_in_worker")
    with pytest.raises(Escapes) as info:
        run_powerloss(spec, seed=1, ops=20, budget=100, profile=PROFILES["small"], jobs=2)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "crash-state worker process" in notes and "while checking state #" in notes, notes


def test_a_run_that_cannot_be_rebuilt_in_a_spawned_worker_is_refused() -> None:
    spec = resolve("test_crashpool:open_writes_differently_in_worker")
    serial = run_powerloss(spec, seed=1, ops=20, budget=100, profile=PROFILES["small"], jobs=1)
    assert serial.ok
    with pytest.raises(CrashPoolError, match="did different disk operations.*--jobs 1"):
        run_powerloss(spec, seed=1, ops=20, budget=100, profile=PROFILES["small"], jobs=2,
                      start_method="spawn")


def test_stopping_early_stops_the_workers() -> None:
    spec = resolve("json")
    seen = []

    def stop(done: int, budget: int) -> None:
        seen.append(done)
        raise KeyboardInterrupt   # what Ctrl-C raises in the parent

    with pytest.raises(KeyboardInterrupt):
        run_powerloss(spec, seed=2, ops=30, budget=400, profile=PROFILES["small"], jobs=2,
                      progress=stop)
    assert seen == [100]
    # terminated: they end at once; the bound only keeps a bug from hanging. Polled, because
    # the pool's own thread reaps them too, and a Process polled while that thread reaps it
    # reads as alive for a moment
    deadline = time.monotonic() + 30
    while [c for c in multiprocessing.active_children() if c.is_alive()]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not [c for c in multiprocessing.active_children() if c.is_alive()]


def test_the_default_is_every_core_and_a_share_of_them_under_xdist(monkeypatch) -> None:
    monkeypatch.setattr(crashpool, "available_cores", lambda: 8)
    monkeypatch.delenv(crashpool.XDIST_WORKERS, raising=False)
    assert default_jobs() == 8
    monkeypatch.setenv(crashpool.XDIST_WORKERS, "2")
    assert default_jobs() == 4
    monkeypatch.setenv(crashpool.XDIST_WORKERS, "16")
    assert default_jobs() == 1
    assert valid_jobs(None) == 1 and valid_jobs(3) == 3
    with pytest.raises(ValueError, match="jobs=0"):
        valid_jobs(0)


def test_powerloss_jobs_on_the_command_line(capsys) -> None:
    assert main(["powerloss", "json", "--seed", "3", "--ops", "30", "--states", "150",
                 "--jobs", "2"]) == 0
    parallel = capsys.readouterr().out
    assert "(2 processes)" in parallel, parallel
    assert main(["powerloss", "json", "--seed", "3", "--ops", "30", "--states", "150",
                 "--jobs", "1"]) == 0
    serial = capsys.readouterr().out
    counts = [line.split(" in ")[0] for line in (parallel, serial)]
    assert counts[0] == counts[1]
