"""A soak, or one shard of it: its runs one after the other, every op into one history file,
the processes' resources sampled, then ``soak.json``, ``soak.md``, ``evidence.json`` and
``report.html`` written to the output folder (``summary.py`` has the formats).

A soak is ``runs`` runs (default 1), run ``r`` seeded from the soak's seed and ``r``; a shard
``i/n`` runs the runs ``r`` with ``r % n == i - 1``, so the shards of one soak are disjoint and
together are the soak (``crashgate merge`` puts their documents together)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashgate.harness.certify import probe_declaration
from crashgate.harness.soak.recorder import Recorder
from crashgate.harness.soak.resources import ResourceSampler, leaks
from crashgate.harness.soak.run import RunResult, SoakRun, SoakSettings
from crashgate.harness.soak.summary import FORMAT, union, verdict_of

__all__ = ["PARENT", "Shard", "parse_shard", "run_soak", "runs_of"]

PARENT = "soak (parent)"
"""The parent is sampled (its memory is plotted) but never called a leak: it holds the whole
history for the checker, so its memory grows with the ops by design."""


@dataclass(frozen=True)
class Shard:
    index: int    # from 1
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``--shard i/n`` with 1 <= i <= n; a ValueError saying so otherwise."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: give i/n with 1 <= i <= n, e.g. 1/2 and 2/2 for "
                         "the two halves of a soak")
    return Shard(i, n)


def runs_of(total: int, shard: Shard) -> list[int]:
    """The runs shard ``shard`` of a soak of ``total`` runs does."""
    return [r for r in range(total) if r % shard.count == shard.index - 1]


def run_soak(settings: SoakSettings, runs: list[int], shard: Shard, out: Path, command: str,
             reproduce: str, progress: Callable[[SoakRun], None] | None = None,
             scratch: str | None = None) -> dict[str, Any]:
    """Run ``runs``, the history going into ``out``; returns ``soak.json``'s content (the
    caller judges the gate and writes the documents: ``report.write_documents``)."""
    if not runs:
        raise ValueError(f"shard {shard} of a soak of that many runs has no run to do: give "
                         "--runs at least the number of shards")
    decl = probe_declaration(settings.spec)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    recorder = Recorder(out / "history.jsonl", t0)
    sampler = ResourceSampler(interval=1.0)
    sampler.watch(PARENT, os.getpid())
    work = tempfile.mkdtemp(prefix="crashgate-soak-", dir=scratch)
    results: list[RunResult] = []
    started = time.time()
    try:
        for r in runs:
            directory = os.path.join(work, f"run-{r}")
            os.makedirs(directory)
            results.append(SoakRun(settings, r, directory, recorder, sampler, decl,
                                   progress).execute())
            recorder.finish_run(r)
            if results[-1].interrupted:
                break
    finally:
        sampler.stop()
        recorder.finish()
        recorder.close()
        shutil.rmtree(work, ignore_errors=True)
    doc = _document(settings, decl, runs, shard, recorder, sampler, results, started,
                    command, reproduce, t0)
    doc["folder"] = str(out)
    doc["stage"] = next((res.stage for res in results if res.stage is not None), None)
    doc["migration"] = decl.migration   # whose gates the stage is judged by (None: ADR-072)
    return doc


def _document(settings: SoakSettings, decl: Any, runs: list[int], shard: Shard,
              recorder: Recorder, sampler: ResourceSampler, results: list[RunResult],
              started: float, command: str, reproduce: str, t0: float) -> dict[str, Any]:
    series = sampler.series()
    found = leaks([s for s in series if s.label != PARENT])
    problems = [p for res in results for p in res.problems]
    problems += [f"a reader could not open the store while the writer wrote: {f}"
                 for res in results for f in res.reader_open_failures]
    known = [res.fallbacks for res in results]
    doc: dict[str, Any] = {
        "format": FORMAT, "target": settings.spec.label, "seed": settings.seed,
        "runs": [res.run for res in results],
        "interrupted": any(res.interrupted for res in results),
        "shard": [shard.index, shard.count], "agents": settings.agents,
        "schedule": {"name": settings.schedule.name, "faults": list(settings.schedule.faults),
                     "interval": settings.schedule.interval},
        "command": command, "reproduce": reproduce,
        "started": started, "ended": time.time(),
        "spans": union([res.started, res.ended] for res in results),
        "elapsed": time.monotonic() - t0,
        "declaration": {"durability": decl.durability.value,
                        "capabilities": sorted(c.value for c in decl.capabilities)},
        "ops": {"total": sum(recorder.outcomes.values()), "agents": recorder.agent_ops,
                **dict(recorder.outcomes),
                "by_op": {op: dict(c) for op, c in sorted(recorder.by_op.items())}},
        "faults": [f for res in results for f in res.faults],
        "skipped": {k: v for res in results for k, v in res.skipped.items()},
        "checks": {"reads": recorder.reads_checked, "q_reads": recorder.q_reads_checked,
                   "recoveries": sum(res.recoveries for res in results),
                   "sweeps": sum(res.sweeps for res in results),
                   "repaired": sum(res.repaired for res in results),
                   "reconciled": sum(res.reconciled for res in results),
                   "io_errors_injected": sum(res.io_errors for res in results)},
        "divergence": {k: sum(res.divergence[k] for res in results)
                       for k in ("compared", "mismatches")},
        "corruption": {"checks": recorder.reads + sum(r.corruption["checks"] for r in results),
                       "incidents": recorder.corrupt_reads
                       + sum(r.corruption["incidents"] for r in results)},
        "fallbacks": {"reads": recorder.reads, "fallbacks": sum(k or 0 for k in known),
                      "known": sum(1 for k in known if k is not None)},
        "violations": [v.to_json() for v in recorder.violations[:50]],
        "problems": problems[:50],
        "leaks": [{"process": leak.label, "what": leak.resource, "detail": leak.describe()}
                  for leak in found],
        "counts": {"violations": len(recorder.violations), "problems": len(problems),
                   "leaks": len(found)},
        "resources": [{"process": s.label, "pid": s.pid,
                       "t": [round(x + sampler.started - t0, 2) for x in s.t],
                       "rss_mb": [round(x, 2) for x in s.rss_mb], "fds": list(s.fds),
                       "cpu_pct": [round(x, 1) for x in s.cpu_pct]} for s in series],
        "histograms": {op: h.to_json() for op, h in sorted(recorder.histograms.items())},
        "timeline": recorder.timeline(),
    }
    verdict, summary = verdict_of(doc)
    doc["verdict"], doc["summary"] = verdict.value, summary
    return doc
