"""The soak's fault schedule: which fault, when. A schedule has a name (``--faults all``), or is
a comma list of fault names, and prints as the list of times it would inject (``crashgate soak
TARGET --print-schedule``), so a run's faults can be read before it starts.

The faults (what each does is in ``soak.faults``):

=============== ==========================================================================
kill-writer     SIGKILL the writer process mid-op, restart it, check every record
second-writer   a second process opens the store for writing while the writer holds it
lease-expiry    the writer frozen (SIGSTOP) while a new writer, its clock 60 s ahead, opens
skew-reader     readers of an older and a newer wire version open the live store
io-error        the writer's next file writes or syncs fail with EIO, then it restarts
disk-full       the same with ENOSPC (disk full)
=============== ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAULTS", "SCHEDULES", "Schedule", "parse_schedule"]

FAULTS = ("kill-writer", "second-writer", "lease-expiry", "skew-reader", "io-error",
          "disk-full")
SCHEDULES: dict[str, tuple[str, ...]] = {
    "all": FAULTS,
    "kills": ("kill-writer",),
    "writers": ("second-writer", "lease-expiry"),
    "io": ("io-error", "disk-full"),
    "none": (),
}
"""Named schedules: each cycles through its faults, one every interval."""


@dataclass(frozen=True)
class Schedule:
    """``faults`` in turn, the first after ``interval`` seconds, then one every ``interval``; a
    fault that runs longer than an interval delays the ones after it (none is skipped)."""

    name: str
    faults: tuple[str, ...]
    interval: float

    def at(self, elapsed: float) -> tuple[int, str] | None:
        """The number and name of the fault due by ``elapsed`` seconds into a run
        (``None`` before the first or with no faults): fault ``n`` is due at
        ``(n + 1) * interval``."""
        if not self.faults or elapsed < self.interval:
            return None
        n = int(elapsed // self.interval) - 1
        return n, self.faults[n % len(self.faults)]

    def nth(self, n: int) -> str:
        """The name of fault number ``n`` (from 0)."""
        return self.faults[n % len(self.faults)]

    def describe(self, duration: float | None) -> list[str]:
        """One line per fault the schedule injects in ``duration`` seconds (the first cycle
        when no duration is given)."""
        if not self.faults:
            return [f"schedule {self.name!r}: no faults"]
        count = (int(duration // self.interval) if duration is not None
                 else len(self.faults))
        lines = [f"schedule {self.name!r}: {', '.join(self.faults)}, one every "
                 f"{self.interval:g} s"]
        lines += [f"  {(n + 1) * self.interval:8.1f} s  {self.faults[n % len(self.faults)]}"
                  for n in range(count)]
        if duration is None:
            lines.append("  ... and so on until the run ends")
        return lines


def parse_schedule(text: str, interval: float) -> Schedule:
    """``--faults``: a schedule's name or a comma list of fault names; a ValueError that
    names the known ones otherwise."""
    if interval <= 0:
        raise ValueError(f"--fault-interval {interval:g}: give a number of seconds above 0")
    if text in SCHEDULES:
        return Schedule(text, SCHEDULES[text], interval)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FAULTS]
    if unknown or not names:
        raise ValueError(
            f"--faults {text!r}: {', '.join(repr(u) for u in unknown) or 'nothing'} is not a "
            f"schedule or a fault; schedules: {', '.join(SCHEDULES)}; faults: "
            f"{', '.join(FAULTS)} (a comma list of faults is a schedule too)")
    return Schedule(text, names, interval)
