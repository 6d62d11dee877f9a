"""I/O errors through the process driver: a child told to inject them (``open``'s ``io_error``,
backends/PROTOCOL.md) fails its store's file operations as ``IOErrors`` does in process; the
I/O-error row runs through it and gives the in-process verdict, and catches a defect through
the child too."""

from __future__ import annotations

import dataclasses
import errno
import shlex
import sys
from pathlib import Path

import pytest
from procedure_helpers import assert_caught

from crashgate.backends import BadOption, resolve
from crashgate.backends import proc_protocol as wire
from crashgate.harness.certify import probe_declaration
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_ioerrors import check_io_error, io_errors
from crashgate.scenarios.table import BUDGETS, RowContext

HOST = f"proc:{shlex.quote(sys.executable)} -m crashgate.harness.driver.python_host"
TESTS = str(Path(__file__).parent)


@pytest.mark.parametrize(("text", "want"), [
    ("count", {"count": True}),
    ("EIO@3", {"kind": "EIO", "at": 3, "persistent": False}),
    ("ENOSPC@12+", {"kind": "ENOSPC", "at": 12, "persistent": True}),
])
def test_the_option_reads_as_the_open_argument(text: str, want: dict[str, object]) -> None:
    assert wire.io_error_from_option(text, label="x") == want


@pytest.mark.parametrize("text", ["EIO", "EIO@0", "EPERM@3", "EIO@x", "EIO@3++", ""])
def test_a_bad_option_names_the_forms(text: str) -> None:
    with pytest.raises(BadOption) as info:
        wire.io_error_from_option(text, label="proc:x")
    assert "ENOSPC@3+" in str(info.value)


def _fresh() -> SimDisk:
    return SimDisk(DiskImage.empty("/data"))


def test_the_child_fails_the_nth_operation_and_reports_it() -> None:
    spec = resolve(f"{HOST} json")
    assert spec.open("/data/s", sim_env(_fresh())).declaration.injects_io_errors
    counting = spec.open("/data/s", sim_env(_fresh()), io_error="count")
    counting.put("a", b"1")
    clean = counting.fs_ops()
    assert clean.mutating_ops > 0 and clean.fired == ()
    counting.close()
    assert counting.fs_ops_at_close is not None
    assert counting.fs_ops_at_close.mutating_ops >= clean.mutating_ops

    failing = spec.open("/data/s", sim_env(_fresh()), io_error=f"EIO@{clean.mutating_ops}+")
    with pytest.raises(OSError) as info:
        failing.put("a", b"1")
    assert info.value.errno == errno.EIO and "injected by crashgate" in str(info.value)
    report = failing.fs_ops()
    assert len(report.fired) >= 1 and report.fired[0].startswith("EIO at op")
    failing.close()


def test_a_driver_that_does_not_declare_io_errors_refuses_the_option(tmp_path: Path) -> None:
    fake = shlex.join([sys.executable, str(Path(TESTS) / "proc_fakes.py"), "no-io"])
    with pytest.raises(BadOption) as info:
        resolve(f"proc:{fake}").open(str(tmp_path / "s"), sim_env(_fresh()), io_error="EIO@1")
    assert "io_errors" in str(info.value)


def _context(name: str, workdir: Path, cases: int) -> RowContext:
    """The quick budget cut to ``cases`` cases: each case through the driver starts two
    children (the faulty one, the recovery)."""
    spec = resolve(name)
    budget = dataclasses.replace(BUDGETS["quick"], crash_states=cases)
    return RowContext(spec, probe_declaration(spec), budget, 11, workdir)


@pytest.mark.parametrize("name", ["json", "sqlite"])
def test_the_row_through_the_child_gives_the_in_process_verdict(name: str,
                                                                  tmp_path: Path) -> None:
    inproc = io_errors(_context(name, tmp_path, 16))
    driven = io_errors(_context(f"{HOST} {name}", tmp_path, 16))
    assert inproc.verdict is driven.verdict is Verdict.PASS, driven.summary
    # the same workload, the same count of mutating operations, the same cases
    for key in ("mutating_ops", "cases", "ops", "n_values"):
        assert driven.measured[key] == inproc.measured[key], key
    assert any("injected by the store's driver" in d for d in driven.details)


def test_a_store_that_swallows_a_failed_write_is_caught_through_the_child(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", TESTS)   # the child (and the reproduction) import it too
    name = "faulty_backends:open_ignores_write_errors"
    # EIO at the 7th operation (the write of the second put's file): swallowed, yet the put
    # is acknowledged, and the file renamed into place is corrupt
    for spec in (resolve(name), resolve(f"{HOST} {name}")):
        ev = check_io_error(spec, kind="EIO", at=7, persistent=False, seed=3, ops=6)
        assert ev.verdict is Verdict.FAIL and "CorruptStore" in ev.summary, ev.summary
    assert "by a new child" in ev.summary
    # the row finds it through the child, and its reproduction fails again through a child
    assert_caught(io_errors(_context(f"{HOST} {name}", tmp_path, 8)))
