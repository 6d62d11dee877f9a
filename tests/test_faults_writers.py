"""DuplicateWriter's processes: they open, write, report and die as told."""

from __future__ import annotations

import os
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
