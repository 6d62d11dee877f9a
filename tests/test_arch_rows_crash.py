"""Issue 13: ARCH-001's crash rows (``scenarios/procedures_arch_crash.py``) pass on every phase
adapter, and the adapters with one defect each (``tests/defects_arch.py``) are caught by their
row with a reproduction that reproduces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import resolve
from crashgate.harness.cli import main
from crashgate.harness.powerloss import run_powerloss
from crashgate.harness.workload import PROFILES

ROWS = ("arch001-integrity", "arch001-compat", "arch001-reversible")


def _certify(tmp_path: Path, backend: str, *scenarios: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / backend.replace(":", "_")
    args = ["certify", backend, "--budget", "quick", "--seed", "3", "--out", str(out), "--quiet"]
    for s in scenarios:
        args += ["--scenario", s]
    code = main(args)
    [path] = out.glob("*/*/certificate.json")
    return code, {row["key"]: row for row in json.loads(path.read_text())["rows"]}


@pytest.mark.parametrize("phase", [1, 2, 3, 4])
def test_every_phase_adapter_passes_the_crash_rows(tmp_path: Path, capsys, phase: int) -> None:
    code, rows = _certify(tmp_path, f"arch-phase{phase}", *ROWS)
    capsys.readouterr()
    assert sorted(rows) == sorted(ROWS)
    for key, row in rows.items():
        assert row["verdict"] == "pass", (key, row["summary"], row["details"])
        crashes = row["measured"].get("crashes", row["measured"].get("crash_states", 0))
        assert crashes >= 40, (key, row["measured"])
    assert code == 0


@pytest.mark.parametrize(("backend", "scenario", "says"), [
    # the legacy file renamed before its import committed: the mission is in neither place
    ("defects_arch:open_importer_renames_first", "arch001-compat",
     "is not in the store in phase 3: an old session's state lost"),
    # the export overwrites JSON documents in place: a crash leaves one cut, and the rollback
    # can no longer be completed
    ("defects_arch:open_exporter_writes_in_place", "arch001-reversible",
     "completed after the crash: raised CorruptStore"),
])
def test_a_defective_adapter_is_caught_with_a_reproduction(tmp_path: Path, capsys, backend: str,
                                                           scenario: str, says: str) -> None:
    code, rows = _certify(tmp_path, backend, scenario)
    capsys.readouterr()
    row = rows[scenario]
    assert code == 1 and row["verdict"] == "fail", row
    assert says in row["summary"], row["summary"]
    script = row["reproduce"].removeprefix("python ")
    ran = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 1 and says in ran.stdout, ran


def test_the_integrity_row_sees_a_mission_document_cut_by_a_crash() -> None:
    # the in-place writer is the JSON side of every phase-1 write too: a crash between its
    # truncate and its write leaves a document that is neither the old nor the new one; the
    # row is the power-loss run with the missions profile
    spec = resolve("defects_arch:open_exporter_writes_in_place")
    report = run_powerloss(spec, seed=1, ops=40, budget=300, profile=PROFILES["missions"],
                           jobs=1)
    assert report.violations, report
    first = min(report.first.values(), key=lambda v: v.state.position)
    assert "mission" in first.detail, first.detail
