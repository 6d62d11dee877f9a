"""Issue 7, point 5: verdicts that say what happened, on test stores with the defect
(``tests/defects_verdicts.py``) at the standard budget."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from crashgate.harness.cli import main
from crashgate.harness.crashcheck import ViolationClass

TESTS = Path(__file__).parent


def _rows(out: Path) -> dict[str, Any]:
    [path] = out.glob("*/*/certificate.json")
    return {r["key"]: r for r in json.loads(path.read_text())["rows"]}


def _certify(tmp_path: Path, backend: str, *scenarios: str) -> dict[str, Any]:
    args = ["certify", backend, "--budget", "standard", "--seed", "42", "--out", str(tmp_path),
            "--quiet"]
    for s in scenarios:
        args += ["--scenario", s]
    assert main(args) == 1
    return _rows(tmp_path)


def _run_elsewhere(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A printed ``crashgate ...`` command, run from another directory with the test backends
    on the import path, as a user with the backend installed would."""
    argv = shlex.split(command)
    argv = argv[next(i for i, a in enumerate(argv) if "=" not in a):]   # after PYTHONPATH=...
    assert argv[0] == "crashgate", command
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "crashgate.harness.cli", *argv[1:]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_lost_delete_is_called_a_lost_delete(tmp_path: Path, capsys) -> None:
    row = _certify(tmp_path, "defects_verdicts:open_lazy_tombstones", "adr032-1")["adr032-1"]
    capsys.readouterr()
    assert row["verdict"] == "fail", row
    assert ViolationClass.LOST_DELETE.value in row["summary"], row["summary"]
    assert ViolationClass.BATCH.value not in row["summary"], row["summary"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = _run_elsewhere(row["reproduce"], elsewhere)
    assert again.returncode == 1, again.stdout + again.stderr


def test_a_loss_that_does_not_repeat_is_a_failure_with_its_rate(tmp_path: Path,
                                                                   capsys) -> None:
    rows = _certify(tmp_path, "defects_verdicts:open_flaky_flush", "adr032-1", "model")
    capsys.readouterr()
    for key in ("adr032-1", "model"):
        row = rows[key]
        assert row["verdict"] == "fail", row
        assert "replays_failed" in row["measured"], row
        assert row["reproduce"], row
