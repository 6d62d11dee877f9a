"""Reproductions that run anywhere: every reproduce command a failing certificate prints runs
from a clean shell in another directory (no PYTHONPATH but what the command sets, no file of
the run's deleted scratch directory) and fails again; the console shows every one of them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CRASHGATE = shutil.which("crashgate", path=str(BIN))

STORES = ["defects_verdicts:open_lazy_tombstones", "defects_crashpoints:open_in_place",
          "defects_locks:open_rvf_steals_old_lock"]


def _clean_env() -> dict[str, str]:
    """A fresh shell's environment: crashgate's interpreter on PATH, no PYTHONPATH."""
    return {"PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}


def test_every_printed_reproduction_fails_again_from_a_clean_shell_elsewhere(
        tmp_path: Path) -> None:
    assert CRASHGATE, "the crashgate command is not installed beside this interpreter"
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    proc = subprocess.run(
        [CRASHGATE, "certify", *STORES, "--scenario", "adr032-1", "--scenario", "adr032-3",
         "--scenario", "model", "--seed", "42", "--budget", "standard", "--out", "reports",
         "--quiet"],
        cwd=run, env={**_clean_env(), "PYTHONPATH": str(TESTS)}, capture_output=True,
        text=True, timeout=900, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    printed = [line.split("reproduce: ", 1)[1] for line in proc.stdout.splitlines()
               if "reproduce: " in line]
    failed = []
    for path in sorted(run.glob("reports/*/*/certificate.json")):
        cert = json.loads(path.read_text())
        assert cert["command"].startswith(f"PYTHONPATH={TESTS} crashgate certify "), cert
        failed += [r for r in cert["rows"] if r["verdict"] in ("fail", "unknown")]
    assert len(failed) >= 3, failed   # one or more rows of every store
    for row in failed:
        assert row["reproduce"] in printed, (row["reproduce"], proc.stdout)
    for command in printed:
        assert "/crashgate-defects" not in command, command   # the run's scratch directory
        again = subprocess.run(["sh", "-c", command], cwd=elsewhere, env=_clean_env(),
                               capture_output=True, text=True, timeout=600, check=False)
        out = again.stdout + again.stderr
        assert again.returncode == 1, (command, out)
        assert "ModuleNotFoundError" not in out and "No such file" not in out, (command, out)
        assert ("VIOLATION" in out or out.startswith("fail:") or "AssertionError" in out
                or "FAIL" in out), (command, out)
