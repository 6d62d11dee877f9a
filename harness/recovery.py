"""Reopening a store after a crash the way its user would.

After a process crash or power loss the dead writer's lock or lease is still on disk. A store
that follows ADR-032's lease rule refuses a new writer while that lease is fresh ("a stale
lease (heartbeat older than 30 seconds) is recoverable by a new writer"), so reopening at once
and counting the ``LockHeld`` as "cannot be opened" would fail a store for keeping the rule.
A user in that position waits the lease out, or opens read-only; so does the harness:

1. open as a writer;
2. on ``LockHeld`` from a store that declares a writer lock or a lease, move the env's virtual
   clock past the stale interval (no real waiting) and open as a writer again;
3. still ``LockHeld`` (the lock names a holder the store sees alive, e.g. this very process),
   open read-only when the backend has ``readonly=true``.

Anything else a reopen raises is the store's answer, and the caller judges it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crashgate.backends import BadOption, Capability, Declaration, Env, LockHeld
from crashgate.harness.clock import VirtualClock

__all__ = ["STALE_AFTER", "Reopened", "let_lease_go_stale", "reopen_after_crash"]

STALE_AFTER = 30.0   # ADR-032: "a stale lease (heartbeat older than 30 seconds)"


@dataclass(frozen=True)
class Reopened:
    """The reopened store, how it was reached (``"writer"``, ``"writer after the stale
    interval"`` or ``"reader"``) and whether it is read-only."""

    store: Any
    how: str

    @property
    def readonly(self) -> bool:
        return self.how == "reader"


def let_lease_go_stale(env: Env) -> bool:
    """Let a dead writer's lock or lease go stale as a user would wait it out: move the env's
    virtual clock past the stale interval. False on a real clock (nothing is waited for)."""
    if not isinstance(env.clock, VirtualClock):
        return False
    env.clock.advance(STALE_AFTER + 1.0)
    return True


def reopen_after_crash(open_store: Callable[..., Any], path: str, env: Env,
                       declaration: Declaration, **options: str) -> Reopened:
    """Open ``path`` with ``open_store(path, env, **options)`` after a crash (see the module
    docstring). Raises what the last attempt raised when none succeeds; a ``FileNotFoundError``
    from the read-only attempt (nothing was ever created) is raised as is."""
    try:
        return Reopened(open_store(path, env, **options), "writer")
    except LockHeld as held:
        if not (declaration.has(Capability.WRITER_LOCK) or declaration.has(Capability.LEASE)):
            raise
        first = held
    if let_lease_go_stale(env):
        try:
            return Reopened(open_store(path, env, **options), "writer after the stale interval")
        except LockHeld as held:
            first = held
    try:
        return Reopened(open_store(path, env, **{**options, "readonly": "true"}), "reader")
    except BadOption:
        raise first from None
