"""Whether a process still exists, and waiting until killed ones are gone: what both the
harness (which SIGKILLs a server's processes) and a server-backed store (which starts the
server again after a kill) need before they go on.

A zombie counts as existing: Postgres refuses to start while its old postmaster's pid exists
in any state, so "killed" means reaped. A zombie that is this process's own child is reaped
here; any other is reaped by its parent (PID 1 for a daemon's orphaned postmaster).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable

__all__ = ["pid_exists", "wait_gone"]


def pid_exists(pid: int) -> bool:
    """Whether ``pid`` exists (a zombie does; a child of ours is reaped first)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process (e.g. pgserver's own as root)
        return True
    return True


def wait_gone(pids: Iterable[int], timeout: float) -> tuple[int, ...]:
    """Wait until none of ``pids`` exists, at most ``timeout`` seconds; the ones left."""
    left = [p for p in pids if p > 0]
    deadline = time.monotonic() + timeout
    while left:
        left = [p for p in left if pid_exists(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return tuple(left)
