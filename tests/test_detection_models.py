"""Issue 7, point 6: every crash model gets its share of the standard budget, and a defect that
only the garbage model shows (``tests/defects_models.py``) is caught with a reproduction."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from crashgate.harness.cli import main
from crashgate.harness.crashcheck import ViolationClass
from crashgate.harness.crashstates import CrashModel

TESTS = Path(__file__).parent


def test_garbage_in_a_torn_tail_is_caught_and_every_model_got_states(tmp_path: Path,
                                                                      capsys) -> None:
    code = main(["certify", "defects_models:open_zero_check_log", "--budget", "standard",
                 "--seed", "42", "--scenario", "adr032-1", "--out", str(tmp_path), "--quiet"])
    capsys.readouterr()
    [path] = tmp_path.glob("*/*/certificate.json")
    [row] = json.loads(path.read_text())["rows"]
    assert code == 1 and row["verdict"] == "fail", row
    assert ViolationClass.TORN.value in row["summary"], row["summary"]
    by_model = row["measured"]["states_by_model"]
    assert set(by_model) == {m.value for m in CrashModel}
    assert all(n > 0 for n in by_model.values()), by_model
    # the first violation is a garbage state: the torn (zeros) model cannot show this defect
    assert ":garbage:" in row["reproduce"], row["reproduce"]
    argv = shlex.split(row["reproduce"])
    argv = argv[next(i for i, a in enumerate(argv) if "=" not in a):]   # after PYTHONPATH=...
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run([sys.executable, "-m", "crashgate.harness.cli", *argv[1:]],
                           cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(TESTS)},
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 1, again.stdout + again.stderr
    md = (path.parent / "certificate.md").read_text()
    assert "crash states by model" in md
