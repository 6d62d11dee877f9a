"""The Postgres servers crashgate starts (``reference/postgres/server.py``): kill and restart
with crash recovery, one session killed, stop, and no server or directory left behind after
Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pgserver", reason="pip install 'crashgate[postgres]'")
psycopg = pytest.importorskip("psycopg", reason="pip install 'crashgate[postgres]'")

from crashgate.backends import BackendMissing  # noqa: E402
from crashgate.reference.postgres import server as srv  # noqa: E402


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def own(postgres_server: Any) -> Any:
    """A second server of this test's own (the session's one is shared by other tests)."""
    server = srv.PostgresServer()
    try:
        yield server
    finally:
        server.stop()


def test_kill_all_then_restart_keeps_committed_data(own: Any) -> None:
    with psycopg.connect(own.url, autocommit=True) as db:
        db.execute("CREATE TABLE t (v int)")
        db.execute("INSERT INTO t VALUES (7)")
    pids = own.pids()
    assert len(pids) >= 2 and pids[0] == own.postmaster_pid()
    killed = own.kill_all()   # a session's backend may come or go meanwhile: not pids exactly
    assert killed and killed[0] == pids[0]
    assert not any(_alive(p) for p in (*pids, *killed))
    assert not own.is_running() and own.pids() == ()
    own.ensure_running()
    assert own.is_running() and own.postmaster_pid() not in pids
    with psycopg.connect(own.url, autocommit=True) as db:
        assert db.execute("SELECT v FROM t").fetchall() == [(7,)]


def test_kill_backend_ends_one_session_and_the_server_survives(own: Any) -> None:
    db = psycopg.connect(own.url, autocommit=True)
    postmaster = own.postmaster_pid()
    session = db.info.backend_pid
    own.kill_backend(session)
    with pytest.raises(psycopg.OperationalError):
        db.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):   # at once, the connection is closed
        db.execute("SELECT 1")
    db.close()
    own.ensure_running()
    assert own.postmaster_pid() == postmaster
    with pytest.raises(ValueError, match="kill_backend"):
        own.kill_backend(postmaster)


def test_stop_removes_processes_and_directory(postgres_server: Any) -> None:
    server = srv.PostgresServer()
    pids, data_dir = server.pids(), server.data_dir
    server.stop()
    server.stop()   # idempotent
    assert not os.path.exists(data_dir)
    assert not any(_alive(p) for p in pids)
    with pytest.raises(ValueError, match="was stopped"):
        server.ensure_running()


def test_missing_pgserver_is_backend_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)   # import pgserver -> ImportError
    with pytest.raises(BackendMissing, match=r"pip install 'crashgate\[postgres\]'"):
        srv.PostgresServer()


def test_a_server_that_fails_to_start_names_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    import pgserver
    made: list[str] = []

    def fail(pgdata: str, cleanup_mode: Any = None) -> Any:
        made.append(pgdata)
        raise subprocess.CalledProcessError(1, ["pg_ctl", "start"])

    monkeypatch.setattr(pgserver, "get_server", fail)
    with pytest.raises(srv.ServerFailed, match="did not start") as info:
        srv.PostgresServer()
    assert "log" in str(info.value)
    assert made and not os.path.exists(made[0])   # its temporary directory is removed


def test_a_tmpdir_too_long_for_a_socket_puts_the_server_in_tmp(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Postgres's unix socket lives in the data directory and its path has at most 107 bytes:
    under a long TMPDIR (pytest's own are long) pgserver found no socket path at all."""
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    server = srv.PostgresServer()
    try:
        assert os.path.dirname(server.data_dir) == "/tmp"
        with psycopg.connect(server.url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert not os.path.exists(server.data_dir)


_CHILD = textwrap.dedent("""
    import json, sys, time
    from crashgate.reference.postgres import local_server
    server = local_server()
    print(json.dumps({"dir": server.data_dir, "pids": list(server.pids())}), flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_process_leaves_no_server_and_no_directory(postgres_server: Any,
                                                               sig: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else ""
        started = json.loads(line)
        assert os.path.isdir(started["dir"]) and started["pids"]
        child.send_signal(sig)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    assert not os.path.exists(started["dir"])
    deadline = time.monotonic() + 30   # the stop waited for the postmaster; reaping may lag
    while any(_alive(p) for p in started["pids"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in started["pids"])


def test_a_reopen_right_after_a_bare_sigkill_waits_for_the_dying_server(own: Any) -> None:
    """Found building the rows: the postmaster killed by a plain ``os.kill`` (no wait) still
    existed when ``ensure_running`` looked, which took it for a live server and waited for
    connections that never came."""
    with psycopg.connect(own.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
    for pid in own.pids():
        os.kill(pid, signal.SIGKILL)
    own.ensure_running()
    with psycopg.connect(own.url, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
