"""What the soak's processes use (memory, open files, CPU), sampled with psutil, and the leaks
in it: memory or open files that keep growing.

``ResourceSampler`` samples every watched process from a daemon thread each ``interval``
seconds; a process that died (or became a zombie, or that we may no longer read) stops being
sampled and keeps its series. Times are seconds since the sampler started; ``started`` is that
moment on ``time.monotonic()``, the clock of the soak's history, so a plot can shade the
faults' windows over the same axis.

``leaks(series)`` flags a series whose memory or open files keep growing. After dropping the
first 20% of its samples (start-up: imports, caches, pools filling), with at least 20 samples
left, all of:

- **monotone**: Kendall's tau of the value against time > 0.6 with p < 0.001. A soak tests
  tens of series, so a false alarm must be rare; tau 0.6 is a strong ordering, not drift.
- **still growing**: the Theil-Sen slope's 95% lower bound is > 0 in both the first and the
  second half of the window. A cache that fills in one step and then stays flat is monotone
  over the whole window (a noiseless step has tau-b 0.71) but is not a leak; it is flat in one
  half.
- **material**: the growth over the window (Theil-Sen slope times its span) is > 10% of the
  starting level and > 8 MB for memory (allocator arenas and page-cache accounting move a
  Python process by a few MB), and > 8 open files (a store may open its WAL, shared-memory and
  journal files lazily, a handful at a time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psutil
from scipy import stats

__all__ = ["Leak", "ResourceSampler", "Series", "leaks"]

WARMUP_FRACTION = 0.2
MIN_SAMPLES = 20
MIN_TAU, MAX_P = 0.6, 0.001
MEMORY_GROWTH_MB, MEMORY_GROWTH_FRACTION = 8.0, 0.10
FDS_GROWTH = 8


@dataclass(frozen=True)
class Series:
    """One process's samples: ``t`` seconds since the sampler started; ``rss_mb`` resident
    memory in MiB, ``fds`` open file descriptors, ``cpu_pct`` CPU since the previous sample
    (100 = one core), all of one length."""

    label: str
    pid: int
    t: tuple[float, ...]
    rss_mb: tuple[float, ...]
    fds: tuple[int, ...]
    cpu_pct: tuple[float, ...]


@dataclass(frozen=True)
class Leak:
    """``resource`` ("memory" or "open files") of ``label`` grew by ``growth`` (MB or files)
    from ``start_level`` over the window ``[t0, t1]``; ``tau``/``p`` of the trend."""

    label: str
    pid: int
    resource: str
    start_level: float
    growth: float
    t0: float
    t1: float
    tau: float
    p: float

    def describe(self) -> str:
        unit = " MB" if self.resource == "memory" else ""
        return (f"{self.label} (pid {self.pid}): {self.resource} kept growing, "
                f"{self.start_level:.0f}{unit} + {self.growth:.0f}{unit} over "
                f"{self.t0:.0f}-{self.t1:.0f} s (Kendall tau {self.tau:.2f}, p={self.p:.1g})")


@dataclass
class _Watched:
    label: str
    pid: int
    proc: psutil.Process | None             # None: gone before it was first sampled
    rows: list[tuple[float, float, int, float]] = field(default_factory=list)


class ResourceSampler:
    """Samples watched processes every ``interval`` seconds from a daemon thread, from
    construction until ``stop()``."""

    def __init__(self, interval: float = 1.0):
        if interval <= 0:
            raise ValueError(f"interval is seconds between samples, > 0; got {interval!r}")
        self.interval = interval
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._active: dict[str, _Watched] = {}
        self._all: list[_Watched] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()

    def watch(self, label: str, pid: int) -> None:
        """Sample ``pid`` as ``label`` (replacing what ``label`` watched before, e.g. a
        restarted writer). A pid that is already gone gives an empty series."""
        proc: psutil.Process | None
        try:
            proc = psutil.Process(pid)
            proc.cpu_percent(None)                  # the first call only sets the baseline
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            proc = None
        entry = _Watched(label, pid, proc)
        with self._lock:
            self._active.pop(label, None)
            self._all.append(entry)
            if proc is not None:
                self._active[label] = entry

    def unwatch(self, label: str) -> None:
        with self._lock:
            self._active.pop(label, None)

    def sample_once(self) -> None:
        """Take one sample of every watched process now (the thread calls this)."""
        with self._lock:
            entries = list(self._active.values())
        now = time.monotonic() - self.started
        for entry in entries:
            proc = entry.proc
            assert proc is not None                 # only live entries are active
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:   # dead, not yet reaped
                        raise psutil.ZombieProcess(proc.pid)
                    row = (now, proc.memory_info().rss / 2**20, proc.num_fds(),
                           proc.cpu_percent(None))
            except (psutil.NoSuchProcess, psutil.AccessDenied):   # ZombieProcess included
                with self._lock:
                    if self._active.get(entry.label) is entry:
                        del self._active[entry.label]
                continue
            with self._lock:
                entry.rows.append(row)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """End sampling (idempotent); the series stay readable."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def series(self) -> list[Series]:
        """Every process ever watched, in the order watched."""
        with self._lock:
            snapshot = [(e, list(e.rows)) for e in self._all]
        return [Series(e.label, e.pid, tuple(r[0] for r in rows),
                       tuple(r[1] for r in rows), tuple(r[2] for r in rows),
                       tuple(r[3] for r in rows)) for e, rows in snapshot]


def leaks(series: Sequence[Series]) -> list[Leak]:
    """The series whose memory or open files keep growing (the module docstring gives the
    rule and its thresholds); ``[]`` for series too short to judge."""
    out = []
    for s in series:
        for resource, values in (("memory", s.rss_mb), ("open files", s.fds)):
            leak = _leak(s, resource, np.asarray(s.t, float), np.asarray(values, float))
            if leak is not None:
                out.append(leak)
    return out


def _leak(s: Series, resource: str, t: np.ndarray, y: np.ndarray) -> Leak | None:
    skip = int(len(t) * WARMUP_FRACTION)
    t, y = t[skip:], y[skip:]
    if len(t) < MIN_SAMPLES or np.ptp(y) == 0:
        return None
    tau, p = stats.kendalltau(t, y)
    if not (tau > MIN_TAU and p < MAX_P):
        return None
    half = len(t) // 2
    for part in (slice(0, half), slice(half, None)):
        if np.ptp(y[part]) == 0 or stats.theilslopes(y[part], t[part]).low_slope <= 0:
            return None
    slope = stats.theilslopes(y, t).slope
    growth, level = float(slope * (t[-1] - t[0])), float(np.median(y[: max(3, len(y) // 10)]))
    material = (growth > MEMORY_GROWTH_MB and growth > MEMORY_GROWTH_FRACTION * level
                if resource == "memory" else growth > FDS_GROWTH)
    if not material:
        return None
    return Leak(s.label, s.pid, resource, level, growth, float(t[0]), float(t[-1]),
                float(tau), float(p))
