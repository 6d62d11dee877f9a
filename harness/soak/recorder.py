"""Where every op of a soak goes as it finishes: a line appended to ``history.jsonl`` (flushed
line by line: a soak killed half-way keeps its evidence), the run's checker, the counts by op
and outcome, a latency histogram per op (mergeable across shards), and per-second buckets of
throughput and latency for the plots."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any

from crashgate.harness.histogram import LatencyHistogram
from crashgate.harness.soak.check import Checker, Violation
from crashgate.harness.soak.record import READS, SoakOp

__all__ = ["Recorder"]

BUCKET = 1.0
"""Seconds per timeline bucket."""


class Recorder:
    """Thread-safe: every process's reader thread calls ``add``. ``t0`` is the monotonic time
    the soak started (timeline times are relative to it)."""

    def __init__(self, history: Path, t0: float) -> None:
        self.t0 = t0
        self._file: IO[str] = history.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self.index = 0
        self.checkers: dict[int, Checker] = {}
        self.outcomes: Counter[str] = Counter()
        self.agent_ops = 0
        """Ops the writers' agents ran (not sweeps, readers or faults): a fixed number per run
        with ``--ops``, whatever the faults did."""
        self.by_op: dict[str, Counter[str]] = defaultdict(Counter)
        self.histograms: dict[str, LatencyHistogram] = defaultdict(LatencyHistogram)
        self.buckets: dict[int, Counter[str]] = defaultdict(Counter)
        self.bucket_latency: dict[tuple[int, str], LatencyHistogram] = {}
        self.violations: list[Violation] = []
        self.reads_checked = 0      # by the checkers of finished runs
        self.q_reads_checked = 0
        self.corrupt_reads = 0
        self.reads = 0

    def finish_run(self, run: int) -> list[Violation]:
        """Check everything left of run ``run`` and let its checker go: a run's history is
        held in memory only while the run goes (the file keeps all of it), so a long soak
        split into ``--runs`` holds one run's ops at a time."""
        with self._lock:
            checker = self.checkers.pop(run, None)
            if checker is None:
                return []
            found = checker.finish()
            self.violations += found
            self.reads_checked += checker.reads_checked
            self.q_reads_checked += checker.q_reads_checked
            return found

    def add(self, fields: dict[str, Any]) -> SoakOp:
        with self._lock:
            op = SoakOp(index=self.index, **fields)
            self.index += 1
            self._file.write(op.to_line())
            if op.op == "fault":
                return op
            self.checkers.setdefault(op.run, Checker()).add(op)
            self.outcomes[op.outcome] += 1
            if op.agent is not None and op.process.startswith("writer"):
                self.agent_ops += 1
            self.by_op[op.op][op.outcome] += 1
            bucket = int((op.end - self.t0) // BUCKET)
            self.buckets[bucket][op.outcome] += 1
            if op.outcome == "ok":
                took = max(0.0, op.end - op.start)
                self.histograms[op.op].record(took)
                self.bucket_latency.setdefault((bucket, op.op), LatencyHistogram()).record(took)
            if op.op in READS:
                self.reads += 1
                if op.error and "CorruptStore" in op.error:
                    self.corrupt_reads += 1
            return op

    def fault(self, name: str, start: float, end: float, detail: str, run: int) -> SoakOp:
        return self.add({"process": "nemesis", "agent": None, "op": "fault",
                         "args": {"name": name}, "start": start, "end": end,
                         "outcome": "info", "detail": detail, "run": run})

    def check(self, until: float) -> list[Violation]:
        """Check what can be checked (reads ending before ``until``); the new violations."""
        with self._lock:
            found = [v for c in self.checkers.values() for v in c.check_until(until)]
            self.violations += found
            return found

    def finish(self) -> list[Violation]:
        """``finish_run`` for every run still held."""
        with self._lock:
            runs = list(self.checkers)
        return [v for run in runs for v in self.finish_run(run)]

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def timeline(self) -> dict[str, Any]:
        """The per-second series for the plots (``soak.json``'s ``timeline``)."""
        with self._lock:
            if not self.buckets:
                return {"bucket_s": BUCKET, "t": [], "throughput": {}, "latency_ms": {}}
            last = max(self.buckets)
            ts = list(range(0, last + 1))
            out: dict[str, Any] = {"bucket_s": BUCKET, "t": [t * BUCKET for t in ts]}
            out["throughput"] = {o: [self.buckets[t][o] / BUCKET for t in ts]
                                 for o in ("ok", "fail", "info")}
            lat: dict[str, dict[str, list[float | None]]] = {}
            for op in sorted({op for _, op in self.bucket_latency}):
                series: dict[str, list[float | None]] = {"p50": [], "p99": []}
                for t in ts:
                    h = self.bucket_latency.get((t, op))
                    for q, name in ((0.5, "p50"), (0.99, "p99")):
                        v = h.quantile(q) if h is not None else None
                        series[name].append(None if v is None else round(v * 1e3, 4))
                lat[op] = series
            out["latency_ms"] = lat
            return out
