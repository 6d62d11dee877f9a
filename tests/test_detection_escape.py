"""Issue 10: an escape hatch rewritten in place (``tests/defects_escape.py``) is caught by the
``adr072-escape`` row with a reproduction, and the reference stage 4 passes the same row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from crashgate.harness.cli import main


def _row(out: Path) -> dict[str, Any]:
    [path] = out.glob("*/*/certificate.json")
    [row] = json.loads(path.read_text())["rows"]
    return dict(row)


def _certify(backend: str, out: Path) -> tuple[int, dict[str, Any]]:
    code = main(["certify", backend, "--budget", "quick", "--seed", "7", "--scenario",
                 "adr072-escape", "--out", str(out), "--quiet"])
    return code, _row(out)


def test_an_escape_hatch_rewritten_in_place_is_caught_with_a_reproduction(tmp_path: Path,
                                                                           capsys) -> None:
    code, row = _certify("defects_escape:open_escape_in_place", tmp_path)
    capsys.readouterr()
    assert code == 1 and row["verdict"] == "fail", row
    assert "escape hatch changed" in row["summary"], row
    script = row["reproduce"].removeprefix("python ")
    ran = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert ran.returncode != 0 and "escape hatch changed" in ran.stdout + ran.stderr, ran


def test_the_reference_stage4_passes_the_escape_row(tmp_path: Path, capsys) -> None:
    code, row = _certify("stage4", tmp_path)
    capsys.readouterr()
    assert code == 0 and row["verdict"] == "pass", row
    assert row["measured"], row
