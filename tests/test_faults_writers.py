"""DuplicateWriter's processes: they open, write, report and die as told."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from crashgate.backends import os_env, resolve
from crashgate.harness.faults import DuplicateWriter
from crashgate.harness.faults.writer_proc import OffsetClock, key_for, value_for
from crashgate.harness.faults.writers import child_pythonpath


def test_child_pythonpath_carries_this_process_import_roots() -> None:
    here = str(Path(__file__).parent)
    assert here in child_pythonpath().split(os.pathsep)
    assert child_pythonpath(["/definitely/not/a/dir"]).split(os.pathsep)[0] != "/definitely"


def test_offset_clock_runs_ahead() -> None:
    c = OffsetClock(31.0)
    import time
    assert c.time() - time.time() > 30.0


def test_a_writer_process_writes_until_stopped_and_a_second_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with DuplicateWriter("rvf", path) as dw:
        a = dw.writer("A")
        assert a.opened().kind == "READY"
        assert a.wait_acks(2, 30)
        b = dw.writer("B")
        refused = b.opened()
        assert refused.kind == "LOCKHELD"
        assert "LockHeld" in refused.types and str(a.pid) in refused.info["holder"]
        assert a.stop()
        acks = a.acks()
    assert len(dw.processes) == 2 and all(p.proc.poll() is not None for p in dw.processes)
    store = resolve("rvf").open(path, os_env())
    try:
        assert acks == [key_for("A", i) for i in range(len(acks))]
        assert all(store.get(k) == value_for("A", i) for i, k in enumerate(acks))
    finally:
        store.close()


def test_heal_kills_whatever_is_still_running(tmp_path: Path) -> None:
    dw = DuplicateWriter("rvf", str(tmp_path / "store"))
    a = dw.writer("A")
    assert a.opened().kind == "READY"
    dw.heal()
    assert a.proc.poll() is not None


def test_a_writer_pauses_resumes_and_ages_its_clock_as_told(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with DuplicateWriter("rvf", path) as dw:
        a = dw.writer("A")
        assert a.opened().kind == "READY" and a.wait_acks(2, 30)
        assert a.command("pause", "PAUSED") == "PAUSED"
        paused = len(a.acks())
        b = dw.writer("B", clock_offset=31.0)  # A idle and its lock 31 s old for B: refused
        refused = b.opened()
        assert refused.kind == "LOCKHELD" and str(a.pid) in refused.info["holder"]
        assert len(a.acks()) <= paused + 1  # at most the write in flight when told
        assert a.command("resume", "RESUMED") == "RESUMED"
        assert a.command("age 3", "AGED") == "AGED 3"
        assert a.wait_acks(paused + 5, 30)
        assert a.stop()
    assert dw.processes[1].proc.returncode == 3


def test_a_command_to_a_writer_that_exited_gets_no_answer(tmp_path: Path) -> None:
    with DuplicateWriter("rvf", str(tmp_path / "store")) as dw:
        a = dw.writer("A")
        assert a.opened().kind == "READY"
        dw.kill(a)
        assert a.command("pause", "PAUSED", timeout=5) is None


def test_killing_a_writer_kills_the_process_its_store_lives_in(tmp_path: Path) -> None:
    """A proc: store lives in a child of the writer: SIGKILL of the writer is SIGKILL of that
    child too (its process group). The fake driver here outlives a closed stdin, so only the
    kill can end it."""
    import psutil

    fake = Path(__file__).with_name("proc_fakes.py")
    with DuplicateWriter(f"proc:{sys.executable} {fake} linger", str(tmp_path / "s")) as dw:
        a = dw.writer("A")
        assert a.opened().kind == "READY"
        [store_child] = psutil.Process(a.pid).children()
        dw.kill(a)
        gone, alive = psutil.wait_procs([store_child], timeout=20)
        for p in alive:   # the old way: left running
            p.kill()
        assert gone, "the store's process outlived the writer's SIGKILL"
