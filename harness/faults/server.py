"""A process crash of a server-backed store (``Declaration.server``): SIGKILL of the server's
processes from outside, as the OOM killer or a power cut of the database host's processes
would, never by reaching into the store.

Two kills (``ServerKill(kind)``):

- ``server``: every process of the server (``ServerBacked.server_pids()``, the postmaster
  first), at once; the store's factory starts it again and the server's crash recovery runs;
- ``session``: only the server process serving the store's own connection
  (``ServerBacked.session_pid()``). Postgres then restarts every backend itself (a backend
  that dies by a signal may have left shared memory inconsistent), so this too loses what
  was only in shared memory.

Both wait until the killed processes are gone, so a caller's next open meets a dead server,
not a dying one. ``disk_rows_reason`` is the n/a reason of the rows that need crashgate's
simulated disk, which a server's files never pass through.
"""

from __future__ import annotations

import contextlib
import os
import signal

from crashgate.backends import Declaration
from crashgate.backends.contract import ServerBacked
from crashgate.backends.pids import wait_gone
from crashgate.harness.faults.base import Fault

__all__ = ["KILLS", "ServerKill", "disk_rows_reason", "killable"]

KILLS = ("server", "session")
GONE_TIMEOUT = 60.0
"""Seconds to wait for killed processes to vanish (reaped, not zombies)."""


def disk_rows_reason(decl: Declaration, what: str) -> str | None:
    """None for a store that does its I/O through ``env.fs``; for a server-backed store, why a
    row needing the simulated disk (``what`` it does there) is n/a."""
    if decl.server is None:
        return None
    return (f"server-backed store ({decl.server}): its data never passes through crashgate's "
            f"simulated disk, so {what} cannot be measured here; its process crashes are the "
            "server-crash row (SIGKILL of the server's processes)")


def killable(store: object) -> str | None:
    """None when crashgate may kill ``store``'s server (a ``ServerBacked`` store naming server
    processes), else why not."""
    if not isinstance(store, ServerBacked):
        return (f"{type(store).__name__} declares a server but does not implement ServerBacked "
                "(server_pids, session_pid): crashgate cannot find the processes to kill")
    if not store.server_pids():
        return ("the server is not one crashgate started (server_pids() is empty, e.g. url=): "
                "crashgate never kills a server it did not start")
    return None


class ServerKill(Fault):
    """SIGKILL of a server-backed store's ``server`` (every process) or ``session`` (the
    process of its own connection)."""

    levers = frozenset({"process"})

    def __init__(self, kind: str = "server") -> None:
        if kind not in KILLS:
            raise ValueError(f"ServerKill kind={kind!r}: give one of {list(KILLS)}")
        self.kind = kind
        self._events: list[str] = []

    @property
    def name(self) -> str:
        return f"ServerKill({self.kind})"

    def needs(self, decl: Declaration) -> str | None:
        if decl.server is None:
            return ("not a server-backed store (Declaration.server is None): its process "
                    "crashes are the simulated disk's")
        return None

    def fire(self, store: object) -> tuple[int, ...]:
        """Kill now; returns the pids killed (after they are gone). Raises ``RuntimeError``
        when ``store`` cannot be killed (``killable``) or a process outlives the timeout."""
        reason = killable(store)
        if reason is not None:
            raise RuntimeError(f"ServerKill({self.kind}): {reason}")
        assert isinstance(store, ServerBacked)
        pids = tuple(store.server_pids()) if self.kind == "server" else (store.session_pid(),)
        for pid in pids:   # the postmaster first: it can fork no replacement after
            # an auxiliary process may have ended on its own meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        left = wait_gone(pids, GONE_TIMEOUT)
        if left:
            raise RuntimeError(f"ServerKill({self.kind}): processes {list(left)} still run "
                               f"{GONE_TIMEOUT:g} s after SIGKILL")
        self._events.append(f"SIGKILL {self.kind}: pids {list(pids)}")
        return pids

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(self._events)
