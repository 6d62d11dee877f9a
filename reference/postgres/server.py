"""The Postgres servers the ``pgvector`` store talks to: one crashgate starts itself (pgserver's
bundled Postgres 16 + pgvector, data directory in a fresh temporary directory), or an existing
one named by URL, which crashgate never kills and never stops.

``PostgresServer`` is the lifecycle of a server crashgate started: its processes (for the
harness's SIGKILLs), ``kill_all`` / ``kill_backend``, ``ensure_running`` (after a kill: wait
until the old processes are gone, start again, Postgres runs crash recovery) and ``stop``
(which also removes the temporary directory). ``local_server(fsync)`` is this process's own
server, started on first use and stopped at exit (atexit, which a Ctrl-C's KeyboardInterrupt
and, once a server is running, SIGTERM also reach). A server started with ``fsync=off`` is a
second server: ``fsync`` is a server-wide setting, and one store's option must not change what
another store on the same server promises.

Facts this relies on (pgserver 0.1.4, seen here): the postmaster runs in a session of its own
(``setsid``), so a Ctrl-C at a terminal does not reach it and only our ``stop`` ends it; as root
pgserver runs it as a user it creates (root may still signal it); after a SIGKILL, Postgres
refuses to start while the old postmaster's pid exists (even as a zombie) or while an old
process still holds the shared memory, so a restart first waits until every old pid is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from crashgate.backends import BackendMissing, CrashgateError
from crashgate.backends.pids import pid_exists, wait_gone

__all__ = ["INSTALL", "PostgresServer", "ServerFailed", "import_driver", "local_server",
           "own_server_for", "stop_local_servers"]

INSTALL = "pip install 'crashgate[postgres]'"
_GONE_TIMEOUT = 60.0      # seconds to wait for killed processes to vanish (PID 1 reaps them)
_READY_TIMEOUT = 30.0     # seconds to wait for a started server to accept connections
# Postgres puts its unix socket (.s.PGSQL.5432) in the data directory: a socket path has at
# most 107 bytes on Linux (sun_path), so a long TMPDIR cannot hold it
_SOCKET_PATH_MAX = 107
_DATA_DIR_NAME = "crashgate-pg-" + "x" * 8 + "/.s.PGSQL.5432"


def _data_dir_parent() -> str:
    """Where the data directory goes: the temporary directory (``TMPDIR``), or ``/tmp`` when
    a socket in a directory under ``TMPDIR`` would have too long a path."""
    for parent in dict.fromkeys((tempfile.gettempdir(), "/tmp")):
        if (len(os.path.join(parent, _DATA_DIR_NAME).encode()) <= _SOCKET_PATH_MAX
                and os.access(parent, os.W_OK | os.X_OK)):
            return parent
    raise ValueError(f"no directory for the Postgres server's socket: TMPDIR="
                     f"{tempfile.gettempdir()!r} makes its path longer than "
                     f"{_SOCKET_PATH_MAX} bytes and /tmp cannot be written; set TMPDIR to a "
                     "short writable directory")


class ServerFailed(CrashgateError):
    """A Postgres server crashgate started would not start or come back; carries its log tail."""

    def __init__(self, data_dir: str, what: str, log_tail: str) -> None:
        self.data_dir = data_dir
        super().__init__(
            f"the Postgres server in {data_dir} {what}.\n  Its log ends with:\n{log_tail}\n"
            "  Fix: read the log above; a leftover server from a killed run can be stopped with "
            f"'pg_ctl -D {data_dir} stop' (pgserver's bin directory)")


def import_driver() -> Any:
    """The ``psycopg`` module, or ``BackendMissing`` with the install command."""
    try:
        import psycopg
    except ImportError as exc:
        raise BackendMissing("pgvector", INSTALL, f"psycopg: {exc}") from exc
    return psycopg


def _import_pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime directory at import: without
            # XDG_RUNTIME_DIR (a container, a CI job) it falls back to one under TMPDIR and
            # warns, on every crashgate command that opens a pgvector store; the fallback is
            # all pgserver needs (a lock file beside nothing of ours)
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pgserver
    except ImportError as exc:
        raise BackendMissing("pgvector", INSTALL, f"pgserver: {exc}") from exc
    return pgserver


def _wait_gone(pids: Iterable[int], timeout: float = _GONE_TIMEOUT) -> None:
    left = wait_gone(pids, timeout)
    if left:
        raise TimeoutError(f"Postgres processes {list(left)} still exist {timeout:g} s after "
                           "SIGKILL; is PID 1 reaping zombies?")


class PostgresServer:
    """A server crashgate started in the temporary directory ``data_dir`` (its PGDATA; the unix
    socket is there too). ``url`` is a libpq URL (``postgresql://postgres:@/postgres?host=...``)."""

    def __init__(self, fsync: bool = True) -> None:
        pgserver = _import_pgserver()
        import_driver()
        self.fsync = fsync
        self.data_dir = tempfile.mkdtemp(prefix="crashgate-pg-", dir=_data_dir_parent())
        self._stopped = False
        self._lock = threading.RLock()
        self._last_pids: tuple[int, ...] = ()
        try:
            # cleanup_mode=None: pgserver's own atexit hook then does nothing; stop() is ours
            self._pg = pgserver.get_server(self.data_dir, cleanup_mode=None)
        except BaseException as exc:
            # a failed start, or a Ctrl-C in the middle of it: the postmaster may be up already
            # (in a session of its own, so the Ctrl-C never reached it), and nothing else
            # knows this directory yet
            tail = self.log_tail()
            self._kill_leftovers()
            self._remove_dir()
            if isinstance(exc, (subprocess.CalledProcessError, subprocess.TimeoutExpired,
                                OSError, AssertionError, RuntimeError)):
                # RuntimeError: pgserver's own refusals (e.g. no socket path)
                raise ServerFailed(self.data_dir, f"did not start ({exc})", tail) from exc
            raise
        self.url: str = self._pg.get_uri()
        if not fsync:
            self._set_system("fsync", "off")
        self._last_pids = self.pids()

    # -- what the harness sees ----------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, or None when no server runs."""
        try:
            first = (Path(self.data_dir) / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        return pid if pid_exists(pid) else None

    def pids(self) -> tuple[int, ...]:
        """The postmaster first, then its children (checkpointer, backends ...); () when down."""
        import psutil
        pid = self.postmaster_pid()
        if pid is None:
            return ()
        try:
            children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return ()
        found = (pid, *sorted(children))
        self._last_pids = tuple(dict.fromkeys((*self._last_pids, *found)))
        return found

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def kill_all(self) -> tuple[int, ...]:
        """SIGKILL every server process (as a crash of the machine's Postgres would be, minus the
        page cache) and wait until they are gone; the pids killed."""
        with self._lock:
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(pids)
            return pids

    def kill_backend(self, pid: int) -> None:
        """SIGKILL one of this server's child processes (e.g. a session's backend). Postgres
        then resets every session and recovers; the postmaster survives."""
        pids = self.pids()
        if pid not in pids[1:]:
            raise ValueError(f"kill_backend(pid={pid}): not a child of this server's postmaster "
                             f"(its processes are {list(pids)}); pass a session_pid()")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def ensure_running(self) -> None:
        """Bring the server back after a kill: wait until every old process is gone, start it
        (Postgres replays its WAL: crash recovery), wait until it accepts connections. A
        postmaster that exists but does not answer may be dying (killed a moment ago, not yet
        reaped) or starting: it is waited for until it answers or is gone."""
        if self._stopped:
            raise ValueError(f"the Postgres server in {self.data_dir} was stopped and its "
                             "directory removed; start a new PostgresServer()")
        with self._lock:
            deadline = time.monotonic() + _READY_TIMEOUT
            while not self._accepts():
                if not self.is_running():
                    self._start_again()
                    deadline = time.monotonic() + _READY_TIMEOUT
                elif time.monotonic() > deadline:
                    raise ServerFailed(self.data_dir, f"does not accept connections "
                                       f"{_READY_TIMEOUT:g} s after its start", self.log_tail())
                else:
                    time.sleep(0.05)
            self.pids()

    def _start_again(self) -> None:
        _wait_gone(self._last_pids)
        self._last_pids = ()
        try:
            with self._pg._lock:   # pgserver's interprocess lock around pg_ctl start
                self._pg.ensure_postgres_running()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired,
                AssertionError, RuntimeError) as exc:
            raise ServerFailed(self.data_dir, f"did not restart ({exc})",
                               self.log_tail()) from exc
        self.url = self._pg.get_uri()

    def stop(self) -> None:
        """Stop the server (fast shutdown; SIGKILL if that fails), wait until its processes are
        gone, and remove its temporary directory. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            pids = self.pids()
            if pids:
                # pgserver makes its command functions at import: no attribute a type checker
                # sees, with or without pgserver installed
                pg_ctl = importlib.import_module("pgserver._commands").pg_ctl
                try:
                    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir,
                           user=self._pg.system_user, timeout=30)
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
                    for pid in self.pids():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    _wait_gone(pids, 10.0)
            self._kill_leftovers()   # e.g. a restart that a Ctrl-C interrupted half-way
            with contextlib.suppress(Exception):
                atexit.unregister(self._pg._cleanup)
                type(self._pg)._instances.pop(self._pg.pgdata, None)
            self._remove_dir()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (Path(self.data_dir) / "log").read_text(errors="replace")
        except OSError:
            return "    (no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    # -- internals ------------------------------------------------------------------------

    def _accepts(self) -> bool:
        psycopg = import_driver()
        try:
            with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def _set_system(self, name: str, value: str) -> None:
        psycopg = import_driver()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")

    def _kill_leftovers(self) -> None:
        """SIGKILL every process whose command line names this data directory (a postmaster
        started with ``-D <data_dir>`` that ``postmaster.pid`` does not name yet, or no
        longer), and wait until they are gone; its children end when it does."""
        import psutil
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if proc.pid != os.getpid() and self.data_dir in " ".join(
                        proc.info["cmdline"] or ()):
                    proc.kill()
                    found.append(proc.pid)
        with contextlib.suppress(TimeoutError):
            _wait_gone(found, 10.0)

    def _remove_dir(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"PostgresServer(data_dir={self.data_dir!r}, fsync={self.fsync}, " \
               f"running={self.is_running()})"


# -- this process's own servers ----------------------------------------------------------------

_LOCAL: dict[bool, PostgresServer] = {}
_local_owner = os.getpid()
_LOCAL_LOCK = threading.Lock()
_HOOKED = False


def local_server(fsync: bool = True) -> PostgresServer:
    """This process's own server (one per ``fsync`` setting), started on first use and running
    (restarted if it was killed); stopped and its directory removed when the process exits."""
    global _local_owner
    with _LOCAL_LOCK:
        if _local_owner != os.getpid():   # a forked child: the parent's servers are not its own
            _LOCAL.clear()
            _local_owner = os.getpid()
        server = _LOCAL.get(fsync)
        if server is None:
            _hook_exit()
            server = _LOCAL[fsync] = PostgresServer(fsync=fsync)
    server.ensure_running()
    return server


def own_server_for(url: str) -> PostgresServer | None:
    """The server of this process that ``url`` names, or None (another process's, or external)."""
    if _local_owner != os.getpid():
        return None
    return next((s for s in list(_LOCAL.values()) if s.url == url or s.data_dir in url), None)


def stop_local_servers() -> None:
    """Stop this process's own servers (only in the process that started them)."""
    if _local_owner != os.getpid():
        return
    while _LOCAL:
        _, server = _LOCAL.popitem()
        server.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds like Ctrl-C's KeyboardInterrupt, so atexit stops the servers
    raise SystemExit(128 + signum)


def _hook_exit() -> None:
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    atexit.register(stop_local_servers)
    # only where nobody else handles SIGTERM, and only the main thread may set handlers
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _on_sigterm)
