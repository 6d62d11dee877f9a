"""What a soak found, as documents: ``soak.json`` (its shape is in ``harness.html_report``'s
docstring, the page that renders it), the gate evidence (``scenarios.gates``' format, plus
what a soak adds), the soak's verdict, and shards' documents merged into one.

A soak passes when its checks found no violation, every fault did what its promise says, no
process leaked, and something was checked; it fails on any violation, broken fault promise or
leak; it is unknown when nothing was checked. Merging is exact: counts add, latency
histograms add bucket by bucket, the time spans covered are unioned, lists are concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crashgate.harness.gate_evidence import FORMAT as EVIDENCE
from crashgate.harness.histogram import LatencyHistogram
from crashgate.harness.verdict import Verdict

__all__ = ["FORMAT", "evidence_of", "merge_docs", "merge_histograms", "union", "verdict_of"]

FORMAT = "crashgate-soak/1"
_LIMIT = 50   # violations and problems kept in full in a document; the rest are counted


def union(spans: Iterable[Iterable[float]]) -> list[list[float]]:
    """Time spans ``[start, end]`` merged where they overlap or touch, sorted."""
    out: list[list[float]] = []
    for s, e in sorted((float(a), float(b)) for a, b in spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def verdict_of(doc: Mapping[str, Any]) -> tuple[Verdict, str]:
    """The soak's verdict and its one-line summary, from the counts of ``doc``."""
    v, p, leaks = (int(doc["counts"][k]) for k in ("violations", "problems", "leaks"))
    checked = int(doc["checks"].get("reads", 0))
    ops = int(doc["ops"]["total"])
    rate = ops / doc["elapsed"] if doc.get("elapsed") else 0.0
    figures = (f"{ops:,} ops ({rate:,.0f}/s), {len(doc['faults'])} faults, {checked:,} reads "
               f"checked, {int(doc['checks'].get('recoveries', 0))} recoveries"
               + ("; interrupted by hand before the end" if doc.get("interrupted") else ""))
    if v or p or leaks:
        parts = [f"{n} {what}" for n, what in ((v, "violations"), (p, "broken fault promises"),
                                              (leaks, "leaks")) if n]
        return Verdict.FAIL, f"{', '.join(parts)}; {figures}"
    if checked == 0:
        return Verdict.UNKNOWN, f"no read was checked: nothing was shown; {figures}"
    return Verdict.PASS, f"no violation; {figures}"


def _add_counts(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    for k, v in more.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            into[k] = into.get(k, 0) + v
        elif isinstance(v, Mapping):
            _add_counts(into.setdefault(k, {}), v)


def merge_histograms(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, LatencyHistogram] = {}
    for doc in docs:
        for op, data in (doc.get("histograms") or {}).items():
            h = LatencyHistogram.from_json(data)
            if op in merged:
                merged[op].merge(h)
            else:
                merged[op] = h
    return {op: h.to_json() for op, h in sorted(merged.items())}


def _merge_timelines(docs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Shards' per-second series on one axis of seconds since each shard started: throughput
    adds; a latency quantile is the worst shard's in that second."""
    tls = [d.get("timeline") or {} for d in docs]
    n = max((len(t.get("t", [])) for t in tls), default=0)
    bucket = next((t["bucket_s"] for t in tls if "bucket_s" in t), 1.0)
    out: dict[str, Any] = {"bucket_s": bucket, "t": [i * bucket for i in range(n)],
                           "throughput": {}, "latency_ms": {}}
    for tl in tls:
        for outcome, series in (tl.get("throughput") or {}).items():
            acc = out["throughput"].setdefault(outcome, [0.0] * n)
            for i, x in enumerate(series):
                acc[i] += x
        for op, qs in (tl.get("latency_ms") or {}).items():
            for q, series in qs.items():
                acc = out["latency_ms"].setdefault(op, {}).setdefault(q, [None] * n)
                for i, x in enumerate(series):
                    if x is not None and (acc[i] is None or x > acc[i]):
                        acc[i] = x
    return out


def merge_docs(docs: list[Mapping[str, Any]], command: str) -> dict[str, Any]:
    """Shards' ``soak.json`` documents as one (see the module docstring)."""
    if not docs:
        raise ValueError("nothing to merge")
    targets = {d["target"] for d in docs}
    if len(targets) > 1:
        raise ValueError(f"the shards soaked different targets: {sorted(targets)}")
    seeds = {d["seed"] for d in docs}
    if len(seeds) > 1:
        raise ValueError(f"the shards ran with different seeds {sorted(seeds)}: they are not "
                         "slices of one soak")
    runs = sorted(r for d in docs for r in d["runs"])
    if len(runs) != len(set(runs)):
        raise ValueError(f"runs {sorted({r for r in runs if runs.count(r) > 1})} are in more "
                         "than one shard: merging them would count them twice")
    first = docs[0]
    out: dict[str, Any] = {
        "format": FORMAT, "target": first["target"], "seed": first["seed"], "runs": runs,
        "shard": [1, 1], "merged_from": [d.get("folder", "") for d in docs],
        "agents": max(int(d["agents"]) for d in docs), "command": command,
        "reproduce": first.get("reproduce", ""), "schedule": first.get("schedule"),
        "started": min(d["started"] for d in docs), "ended": max(d["ended"] for d in docs),
        "interrupted": any(d.get("interrupted") for d in docs),
        "spans": union(s for d in docs for s in d.get("spans", [])),
    }
    out["elapsed"] = sum(e - s for s, e in out["spans"])
    for key in ("ops", "checks", "counts", "divergence", "corruption", "fallbacks"):
        acc: dict[str, Any] = {}
        for d in docs:
            _add_counts(acc, d.get(key) or {})
        out[key] = acc
    for key in ("faults", "violations", "problems", "leaks", "resources"):
        out[key] = [x for d in docs for x in d.get(key, [])]
    out["skipped"] = {k: v for d in docs for k, v in (d.get("skipped") or {}).items()}
    out["histograms"] = merge_histograms(docs)
    out["timeline"] = _merge_timelines(docs)
    verdict, summary = verdict_of(out)
    out["verdict"], out["summary"] = verdict.value, summary
    return out


def evidence_of(doc: Mapping[str, Any], stage: int | None) -> dict[str, Any]:
    """The gate evidence a soak gives (``scenarios.gates``' format): shadow divergence and
    corruption from the sweeps and reads, fallbacks, peak load (agents, violations, ops), the
    latency histograms and the query p99 they give, and the spans covered."""
    ev: dict[str, Any] = {"format": EVIDENCE, "adapter": doc["target"], "source": "soak",
                          "seed": doc["seed"], "runs": list(doc["runs"]),
                          "started": doc["started"], "ended": doc["ended"],
                          "spans": [list(s) for s in doc.get("spans", [])]}
    if stage is not None:
        ev["stage"] = stage
    if int((doc.get("divergence") or {}).get("compared", 0)):
        ev["divergence"] = {k: int(v) for k, v in doc["divergence"].items()}
    ev["corruption"] = {k: int(v) for k, v in (doc.get("corruption") or {}).items()}
    if (doc.get("fallbacks") or {}).get("reads") is not None and \
            doc["fallbacks"].get("known", 0):
        ev["fallbacks"] = {"reads": int(doc["fallbacks"]["reads"]),
                           "fallbacks": int(doc["fallbacks"]["fallbacks"])}
    counts = doc["counts"]
    ev["peak_load"] = {"agents": int(doc["agents"]),
                       "violations": int(counts["violations"]) + int(counts["problems"]),
                       "ops": int(doc["ops"]["total"])}
    ev["histograms"] = dict(doc.get("histograms") or {})
    query = ev["histograms"].get("query")
    if query:
        h = LatencyHistogram.from_json(query)
        p99 = h.quantile(0.99)
        if p99 is not None:
            ev["latency"] = {"query_p99_ms": p99 * 1e3, "query_n": h.count}
    return ev
