"""Failpoints the harness arms: a store calls ``env.failpoints.hit(name)`` at named points, and
an armed name fires its action there (by default a ``SimulatedCrash``).

Unarmed, they only count: ``hits`` and ``trace`` tell the harness which points a store passes
through, and in what order, so it can arm each in turn.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from crashgate.backends.env import SimulatedCrash

__all__ = ["Action", "ArmedFailpoints", "crash"]

Action = Callable[[str], None]


def crash(name: str) -> None:
    """The default action: the process dies here."""
    raise SimulatedCrash(name)


@dataclass
class _Arming:
    after_hits: int
    action: Action
    times: int | None
    seen: int = 0
    fired: int = 0


class ArmedFailpoints:
    """A ``Failpoints`` (backends.env protocol) with arming. Thread-safe."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.trace: list[str] = []
        self.fired: list[str] = []  # names whose action ran, in order
        self._armed: dict[str, _Arming] = {}
        self._lock = threading.Lock()

    def arm(self, name: str, *, after_hits: int = 0, action: Action = crash,
            times: int | None = 1) -> None:
        """Fire ``action(name)`` at ``name``'s hit number ``after_hits + 1`` counted from now,
        then on following hits until it has fired ``times`` times (``None``: every time)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"failpoint name must be a non-empty str, got {name!r}")
        if after_hits < 0:
            raise ValueError(f"after_hits must be >= 0, got {after_hits}")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None (always), got {times}")
        with self._lock:
            self._armed[name] = _Arming(after_hits, action, times)

    def disarm(self, name: str | None = None) -> None:
        """Disarm ``name`` (no error if it was not armed), or every failpoint."""
        with self._lock:
            if name is None:
                self._armed.clear()
            else:
                self._armed.pop(name, None)

    @property
    def armed(self) -> frozenset[str]:
        return frozenset(self._armed)

    def hit(self, name: str) -> None:
        with self._lock:
            self.hits[name] += 1
            self.trace.append(name)
            arming = self._armed.get(name)
            if arming is None:
                return
            arming.seen += 1
            if arming.seen <= arming.after_hits:
                return
            arming.fired += 1
            if arming.times is not None and arming.fired >= arming.times:
                del self._armed[name]
            self.fired.append(name)
        arming.action(name)  # outside the lock: the action may raise or call back in

    def __repr__(self) -> str:
        return f"ArmedFailpoints(armed={sorted(self._armed)}, hits={dict(self.hits)})"
