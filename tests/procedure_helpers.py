"""Building a row's context for a backend, for the procedure tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from crashgate.backends import resolve
from crashgate.harness.certify import probe_declaration
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import BUDGETS, RowContext


def context(name: str, workdir: Path, seed: int = 11) -> RowContext:
    spec = resolve(name)
    return RowContext(spec, probe_declaration(spec), BUDGETS["quick"], seed, workdir)


def assert_caught(ev: Evidence) -> None:
    """A failure with a reproduction script that fails again, and a replay that fails again."""
    assert ev.verdict is Verdict.FAIL, ev
    assert ev.measured
    assert ev.reproduce and ev.reproduce.startswith("python ")
    script = ev.reproduce.removeprefix("python ")
    assert Path(script).is_file()
    assert ev.replay is not None and ev.replay().verdict is Verdict.FAIL
    done = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("fail:")
