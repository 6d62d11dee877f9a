"""A virtual clock: time moves only when the harness (or a store's ``sleep``) moves it.

Lease tests need time to pass without waiting and to jump: ``advance`` moves both clocks,
``set`` jumps the wall clock (forward or backward, as NTP or a user changing the date does)
while ``monotonic`` never goes back. ``sleep`` advances instead of sleeping, so a store that
polls a lease every second costs nothing in real time.
"""

from __future__ import annotations

import math
import threading

__all__ = ["DEFAULT_EPOCH", "VirtualClock"]

DEFAULT_EPOCH = 1_700_000_000.0  # 2023-11-14T22:13:20Z: fixed, so runs replay exactly


class VirtualClock:
    """A ``Clock`` (backends.env protocol) under the harness's control. Thread-safe."""

    def __init__(self, start: float = DEFAULT_EPOCH, monotonic_start: float = 1_000.0) -> None:
        self._wall = _finite("start", start)
        self._mono = _finite("monotonic_start", monotonic_start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []  # every sleep a store asked for, in order

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        """Advance both clocks by ``seconds`` at once; no real waiting."""
        if _finite("seconds", seconds) < 0:
            raise ValueError(f"sleep length must be non-negative, got {seconds}")
        with self._lock:
            self.sleeps.append(seconds)
            self._wall += seconds
            self._mono += seconds

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of time pass (both clocks)."""
        if _finite("seconds", seconds) < 0:
            raise ValueError(f"advance({seconds}): time only moves forward; use set(t) to jump "
                             "the wall clock backward")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def set(self, t: float) -> None:
        """Jump the wall clock to ``t`` (either way); the monotonic clock does not move."""
        with self._lock:
            self._wall = _finite("t", t)

    def __repr__(self) -> str:
        return f"VirtualClock(time={self._wall!r}, monotonic={self._mono!r})"


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")
    return value
