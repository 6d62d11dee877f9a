"""Where a certification came from: what it ran on, and the command that runs it again."""

from __future__ import annotations

import importlib.metadata
import platform
import shlex
from collections.abc import Sequence

__all__ = ["environment", "regenerate_command"]


def environment() -> dict[str, str]:
    """What the run ran on: crashgate, Python, apsw and the SQLite it links, hypothesis, numpy,
    the OS. A package that is not installed says so."""

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        import apsw
        sqlite = str(apsw.sqlitelibversion())
    except ImportError:
        sqlite = "not installed (apsw missing)"
    return {"crashgate": version("crashgate"),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "apsw": version("apsw"), "sqlite": sqlite, "hypothesis": version("hypothesis"),
            "numpy": version("numpy"), "os": platform.platform()}


def regenerate_command(label: str, *, seed: int, budget: str, scenarios: Sequence[str] = (),
                       migrator: str | None = None, pythonpath: str | None = None,
                       pattern_migrator: str | None = None) -> str:
    """The shell command that runs the same certification again (``scenarios`` empty: every
    row); ``pythonpath`` the directory a user's backend module imports from."""
    words = [f"PYTHONPATH={pythonpath}"] if pythonpath else []
    words += ["crashgate", "certify", label]
    for key in scenarios:
        words += ["--scenario", key]
    words += ["--seed", str(seed), "--budget", budget]
    if migrator:
        words += ["--migrator", migrator]
    if pattern_migrator:
        words += ["--pattern-migrator", pattern_migrator]
    return shlex.join(words)
