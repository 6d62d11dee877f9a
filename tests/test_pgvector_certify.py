"""``crashgate certify pgvector`` as a user runs it: it starts its own Postgres, certifies it,
stops it, and leaves no server process and no temporary directory behind, also when a Ctrl-C
interrupts it half-way (issue 15's done-when)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

pytest.importorskip("pgserver", reason="pip install 'crashgate[postgres]'")
pytest.importorskip("psycopg", reason="pip install 'crashgate[postgres]'")


def _default_sigint() -> None:
    # a terminal's Ctrl-C reaches a process whose SIGINT is at its default, whatever the shell
    # running the tests did with it (a background job of a shell without job control ignores it)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _certify(tmp: Path, out: Path, *scenarios: str) -> subprocess.Popen[str]:
    """``crashgate certify pgvector`` in a child whose temporary files all go under ``tmp``."""
    tmp.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "crashgate.harness.cli", "certify", "pgvector",
            "--budget", "quick", "--seed", "7", "--out", str(out)]
    for key in scenarios:
        args += ["--scenario", key]
    return subprocess.Popen(args, env=dict(os.environ, TMPDIR=str(tmp)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_default_sigint)


def _servers_under(tmp: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose command line names a directory under ``tmp``
    (the postmaster names its data directory with -D; its children are found through it)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
            if str(tmp) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE \
                    and "crashgate.harness.cli" not in cmdline:
                found.append(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _left_behind(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.glob("crashgate-pg-*"))


def _wait_until_clean(tmp: Path, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout   # the stop waited for the postmaster; reaping may lag
    while (left := _servers_under(tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def short_tmp() -> Any:
    """A TMPDIR of the child's own, short enough for the server's socket to live under it
    (107 bytes at most: pytest's own directories are longer, and the server would go to /tmp,
    where the test could not tell its leftovers from other runs')."""
    path = Path(tempfile.mkdtemp(prefix="cg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_certify_pgvector_starts_and_stops_its_own_server(postgres_server: Any, tmp_path: Path,
                                                          short_tmp: Path) -> None:
    tmp, out = short_tmp, tmp_path / "out"
    child = _certify(tmp, out, "model", "server-crash", "damage")
    text, _ = child.communicate(timeout=600)
    assert child.returncode == 0, text
    certificate = json.loads(next(out.glob("pgvector/*/certificate.json")).read_text())
    verdicts = {row["key"]: row["verdict"] for row in certificate["rows"]}
    assert verdicts == {"model": "pass", "server-crash": "pass", "damage": "n/a"}, verdicts
    assert _left_behind(tmp) == [], "a temporary directory of the server was left behind"
    assert _wait_until_clean(tmp) == [], "a server process was left running"


def test_certify_pgvector_interrupted_by_ctrl_c_leaves_no_server(postgres_server: Any,
                                                                 tmp_path: Path,
                                                                 short_tmp: Path) -> None:
    tmp, out = short_tmp, tmp_path / "out"
    child = _certify(tmp, out, "model", "server-crash", "server-clients")
    try:
        deadline = time.monotonic() + 120
        while not _servers_under(tmp):   # its own server is up: the certification is under way
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "no server started within 120 s"
            time.sleep(0.1)
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        text, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode != 0, text
    assert _left_behind(tmp) == [], "a temporary directory of the server was left behind"
    assert _wait_until_clean(tmp) == [], "a server process was left running after Ctrl-C"
