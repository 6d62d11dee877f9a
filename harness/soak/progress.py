"""The soak's live progress line (elapsed, ops/s, faults, violations, divergence, fallbacks),
redrawn once a second on a terminal and silent otherwise (a CI log gets the summary at the
end, not a line a second)."""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from crashgate.harness.soak.run import SoakRun

__all__ = ["Progress"]


class Progress:
    def __init__(self, stream: IO[str] | None = None, *, force: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.live = force or self.stream.isatty()
        self._last = 0.0
        self._ops_then = (time.monotonic(), 0)

    def __call__(self, run: SoakRun) -> None:
        now = time.monotonic()
        if not self.live or now - self._last < 1.0:
            return
        self._last = now
        rec = run.recorder
        total = rec.index
        then, ops_then = self._ops_then
        rate = (total - ops_then) / max(now - then, 1e-9)
        self._ops_then = (now, total)
        res = run.result
        elapsed = int(now - rec.t0)
        line = (f"run {run.run}  {elapsed // 60}:{elapsed % 60:02d}  ops {total:,} "
                f"({rate:,.0f}/s)  faults {len(res.faults)}  violations "
                f"{len(rec.violations) + len(res.problems)}  divergence "
                f"{res.divergence['mismatches']}/{res.divergence['compared']:,}  fallbacks "
                f"{'-' if res.fallbacks is None else res.fallbacks}")
        self.stream.write("\r" + line.ljust(100))
        self.stream.flush()

    def done(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
