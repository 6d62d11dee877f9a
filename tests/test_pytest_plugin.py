"""The pytest plugin: ``--crashgate-backend`` adds one test per row, the same verdicts serially
and under pytest-xdist, and the ``crashgate_model`` fixture for a user's own factory."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from crashgate.scenarios.adr032 import all_rows

USER_TEST = '''
def test_my_store(crashgate_model):
    crashgate_model("crashgate.reference.memory:open_memory")
'''


def _run(tmp: Path, *extra: str) -> tuple[int, dict[str, str], str]:
    report = tmp / f"junit{len(list(tmp.glob('junit*')))}.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp),
         "--crashgate-backend", "rvf", "--crashgate-budget", "quick", f"--junitxml={report}",
         *extra, str(tmp)],
        capture_output=True, text=True, timeout=900, cwd=tmp)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = child.tag
        outcomes[case.get("name", "")] = kind
    return proc.returncode, outcomes, proc.stdout + proc.stderr


LATENCY_ROWS = ("adr072-read-latency", "adr072-write-latency")


def test_rows_as_tests_serial_and_under_xdist_agree(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    code, serial, out = _run(tmp_path)
    rows = {n: k for n, k in serial.items() if n.startswith("crashgate[rvf]")}
    assert len(rows) == len(all_rows()), serial
    # the latency rows measure this machine (RVF's writes against SQLite's): their verdict is a
    # figure of the run, not of the code, so only the others are held to an outcome here
    steady = {n: k for n, k in serial.items() if not any(r in n for r in LATENCY_ROWS)}
    assert all(k in ("passed", "skipped") for k in steady.values()), steady
    assert code == (1 if "failure" in serial.values() else 0), out
    assert rows["crashgate[rvf][adr032-6]"] == "skipped"   # n/a: no heartbeat lease
    assert rows["crashgate[rvf][adr032-1]"] == "passed"
    assert serial["test_my_store"] == "passed"
    code, parallel, out = _run(tmp_path, "-n", "2")
    assert code == (1 if "failure" in parallel.values() else 0), out
    assert {n: k for n, k in parallel.items() if not any(r in n for r in LATENCY_ROWS)} \
        == steady


def test_a_bad_backend_name_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--crashgate-backend", "rvff", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Did you mean 'rvf'" in proc.stdout + proc.stderr


def test_crashgate_jobs_below_one_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--crashgate-backend", "json", "--crashgate-jobs", "0", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "argument --crashgate-jobs: '0' is not a number of worker processes" in proc.stderr


def test_crashgate_jobs_checks_a_row_in_workers(tmp_path: Path) -> None:
    code, outcomes, out = _run(tmp_path, "--crashgate-scenario", "adr032-1",
                               "--crashgate-jobs", "2")
    assert code == 0, out
    assert outcomes == {"crashgate[rvf][adr032-1]": "passed"}, outcomes
