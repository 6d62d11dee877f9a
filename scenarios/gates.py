"""The go/no-go gates of ADR-072 (stage 2 -> 3, 3 -> 4) and ARCH-001 (its phases), as data: each
criterion in the document's own words, its threshold, the evidence it reads, and how it is
judged. Judging is honest about thin evidence: a count with no observations, a rate whose bound
straddles the threshold, a ratio whose interval does, and a time criterion ("over 7 consecutive
days") on evidence covering less time are all ``unknown``, with what is missing.

Evidence is one JSON document (``crashgate gate`` gathers it, a soak writes it)::

    {"format": "crashgate-evidence/1", "adapter": str, "started": t, "ended": t,
     "divergence": {"compared": n, "mismatches": k},        # shadow reads compared
     "fallbacks":  {"reads": n, "fallbacks": k},
     "corruption": {"checks": n, "incidents": k},
     "witness":    {"verified": n, "invalid": k},
     "backup":     {"cycles": n, "failures": k},
     "cow":        {"checks": n, "failures": k},
     "dual_write": {"writes": n, "errors": k},
     "peak_load":  {"agents": n, "violations": k, "ops": n},
     "latency":    {"read": {op: ratio}, "write": {op: ratio}, "query_p99_ms": x,
                    "query_n": n, "query": what was timed (optional)},
     "spans":      [[start, end], ...],        # a soak's: the times it covered, unioned
     "histograms": {op: LatencyHistogram JSON}}  # a soak's latencies, mergeable
     # ratio: {"point", "low", "high", "n": [c, b], "aa": {"point", "low", "high"}}
     # ("read"/"write" may also be one ratio for all types)

Times are seconds since the epoch (UTC). A section that is missing is evidence not gathered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from crashgate.harness.divergence import rate_verdict
from crashgate.harness.latency import Ratio, ratio_verdict
from crashgate.harness.store_latency import READ, WRITE
from crashgate.harness.verdict import Verdict

__all__ = ["GATES", "Criterion", "Judged", "judge_gate"]

DAY = 86_400.0


@dataclass(frozen=True)
class Judged:
    """One criterion judged: the figure, its bound, the sample size and what is missing."""

    verdict: Verdict
    figure: str
    n: int
    missing: str = ""


@dataclass(frozen=True)
class Criterion:
    document: str
    words: str                       # the document's own words
    judge: Callable[[Mapping[str, Any]], Judged]


def _span(ev: Mapping[str, Any]) -> float:
    """The longest time the evidence covers without a gap: the longest of its ``spans`` when
    it has them (merged soaks: a gap between two soaks is time nobody watched), else from
    ``started`` to ``ended``."""
    try:
        spans = ev.get("spans")
        if spans:
            return max(max(0.0, float(e) - float(s)) for s, e in spans)
        return max(0.0, float(ev["ended"]) - float(ev["started"]))
    except (KeyError, TypeError, ValueError):
        return 0.0


def _over(days: float, inner: Callable[[Mapping[str, Any]], Judged]
          ) -> Callable[[Mapping[str, Any]], Judged]:
    """``inner``, and the evidence must cover ``days``: a pass on less is ``unknown``."""
    def judge(ev: Mapping[str, Any]) -> Judged:
        got = inner(ev)
        span = _span(ev)
        if got.verdict is Verdict.FAIL or span >= days * DAY:
            return got
        covered = f"{span:.0f} s" if span < DAY else f"{span / DAY:.1f} days"
        short = f"the evidence covers {covered} of the {days:g} days the criterion asks for"
        return Judged(Verdict.UNKNOWN, got.figure, got.n,
                      f"{got.missing}; {short}" if got.missing else short)
    return judge


def _zero(section: str, total: str, bad: str, what: str
          ) -> Callable[[Mapping[str, Any]], Judged]:
    """A "zero <bad>" criterion: pass with observations and none bad, fail with any bad."""
    def judge(ev: Mapping[str, Any]) -> Judged:
        data = ev.get(section)
        if not isinstance(data, Mapping):
            return Judged(Verdict.UNKNOWN, "no evidence", 0, f"no {section} evidence gathered")
        n, k = int(data.get(total, 0)), int(data.get(bad, 0))
        figure = f"{k} {bad} in {n} {total}"
        if k:
            return Judged(Verdict.FAIL, figure, n)
        if n == 0:
            return Judged(Verdict.UNKNOWN, figure, 0, f"no {what} observed")
        return Judged(Verdict.PASS, figure, n)
    return judge


def _divergence(threshold: float) -> Callable[[Mapping[str, Any]], Judged]:
    def judge(ev: Mapping[str, Any]) -> Judged:
        data = ev.get("divergence")
        if not isinstance(data, Mapping):
            return Judged(Verdict.UNKNOWN, "no evidence", 0, "no shadow reads compared")
        n, k = int(data.get("compared", 0)), int(data.get("mismatches", 0))
        got = rate_verdict(k, n, threshold)
        missing = got.summary if got.verdict is Verdict.UNKNOWN else ""
        return Judged(got.verdict, f"{k}/{n} mismatches, rate < {got.upper:.4%} (95%)", n,
                      missing)
    return judge


def _ratio(kind: str, threshold: float) -> Callable[[Mapping[str, Any]], Judged]:
    """"Within ``threshold``x for all operation types": each type's ratio judged by its
    interval (``ratio_verdict``); the worst decides, and a type whose A/A ratio is not within
    the threshold is unknown (noise alone moves it that far)."""
    def one(op: str, data: Mapping[str, Any]) -> tuple[Verdict, str, int, str]:
        n = tuple(int(x) for x in data.get("n", (0, 0)))
        ratio = Ratio(float(data["point"]), float(data["low"]), float(data["high"]), 0.95,
                      (n[0], n[1]))
        verdict, why = ratio_verdict(ratio if min(n) > 0 else None, threshold, f"{op} latency")
        aa = data.get("aa")
        figure = f"{op} {ratio.describe()}"
        if isinstance(aa, Mapping):
            figure += f" (A/A {float(aa['point']):.2f}, {float(aa['low']):.2f}-" \
                      f"{float(aa['high']):.2f})"
            if verdict is not Verdict.UNKNOWN and float(aa["high"]) > threshold:
                verdict, why = Verdict.UNKNOWN, f"{op}: the A/A ratio is not within {threshold}x"
        return verdict, figure, min(n), why if verdict is Verdict.UNKNOWN else ""

    def judge(ev: Mapping[str, Any]) -> Judged:
        data = (ev.get("latency") or {}).get(kind)
        if not isinstance(data, Mapping) or not data:
            verdict, why = ratio_verdict(None, threshold, f"{kind} latency")
            return Judged(verdict, "no evidence", 0, why)
        per_op = {"all": data} if "point" in data else data   # one ratio, or one per type
        got = [one(op, d) for op, d in sorted(per_op.items()) if isinstance(d, Mapping)]
        verdicts = {v for v, *_ in got}
        verdict = (Verdict.FAIL if Verdict.FAIL in verdicts else
                   Verdict.UNKNOWN if Verdict.UNKNOWN in verdicts or not got else Verdict.PASS)
        return Judged(verdict, "; ".join(f for _, f, _, _ in got), min(n for *_, n, _ in got),
                      "; ".join(m for *_, m in got if m))
    return judge


def _query_p99(limit_ms: float) -> Callable[[Mapping[str, Any]], Judged]:
    def judge(ev: Mapping[str, Any]) -> Judged:
        lat = ev.get("latency") or {}
        if "query_p99_ms" not in lat:
            return Judged(Verdict.UNKNOWN, "no evidence", 0, "no query latency measured")
        p99, n = float(lat["query_p99_ms"]), int(lat.get("query_n", 0))
        verdict = Verdict.UNKNOWN if n == 0 else Verdict.PASS if p99 < limit_ms else Verdict.FAIL
        what = f" ({lat['query']})" if isinstance(lat.get("query"), str) else ""
        return Judged(verdict, f"query p99 {p99:.1f} ms{what}", n,
                      "no queries timed" if n == 0 else "")
    return judge


def _peak(agents: int) -> Callable[[Mapping[str, Any]], Judged]:
    def judge(ev: Mapping[str, Any]) -> Judged:
        data = ev.get("peak_load")
        if not isinstance(data, Mapping) or int(data.get("agents", 0)) < agents:
            seen = int(data.get("agents", 0)) if isinstance(data, Mapping) else 0
            return Judged(Verdict.UNKNOWN, f"{seen} agents", 0,
                          f"needs a soak with {agents} concurrent agents (crashgate soak)")
        k = int(data.get("violations", 0))
        return Judged(Verdict.FAIL if k else Verdict.PASS,
                      f"{k} violations with {int(data['agents'])} agents",
                      int(data.get("ops", 0)))
    return judge


ADR072 = "ADR-072"
ARCH001 = "ARCH-001"
GATES: dict[tuple[str, int, int], tuple[Criterion, ...]] = {
    (ADR072, 2, 3): (
        Criterion(ADR072, "Shadow divergence rate below 0.01% over 7 consecutive days",
                  _over(7, _divergence(1e-4))),
        Criterion(ADR072, "RVF read latency within 2x of SQLite for all query types",
                  _ratio(READ.kind, READ.threshold)),
        Criterion(ADR072, "Zero data corruption incidents in shadow copy",
                  _zero("corruption", "checks", "incidents", "shadow-copy checks")),
        Criterion(ADR072, "Witness chain verification passes with zero invalid entries",
                  _zero("witness", "verified", "invalid", "witness-chain verification")),
        Criterion(ADR072, "Backup/restore cycle validated for RVF",
                  _zero("backup", "cycles", "failures", "backup/restore cycle")),
    ),
    (ADR072, 3, 4): (
        Criterion(ADR072, "RVF serving 100% of reads with zero fallbacks over 14 consecutive "
                  "days", _over(14, _zero("fallbacks", "reads", "fallbacks", "reads"))),
        Criterion(ADR072, "RVF write latency within 1.5x of SQLite for all operation types",
                  _ratio(WRITE.kind, WRITE.threshold)),
        Criterion(ADR072, "Full backup/restore cycle validated",
                  _zero("backup", "cycles", "failures", "backup/restore cycle")),
        Criterion(ADR072, "COW branching validated for non-vector data (Q-values, GOAP plans)",
                  _zero("cow", "checks", "failures", "copy-on-write check")),
        Criterion(ADR072, "Witness chain recording validated for all mutation types",
                  _zero("witness", "verified", "invalid", "witness-chain verification")),
        Criterion(ADR072, "Performance under peak load (15 agents) validated", _peak(15)),
    ),
    (ARCH001, 1, 2): (
        Criterion(ARCH001, "No errors in dual-write mode (1 week stable)",
                  _over(7, _zero("dual_write", "writes", "errors", "dual writes"))),
    ),
    (ARCH001, 2, 3): (
        Criterion(ARCH001, "Zero JSON fallbacks logged (SQLite 100% hit rate)",
                  _zero("fallbacks", "reads", "fallbacks", "reads")),
        Criterion(ARCH001, "Performance benchmarks meet targets (<100ms queries)",
                  _query_p99(100.0)),
    ),
}


def judge_gate(document: str, frm: int, to: int, evidence: Mapping[str, Any]
               ) -> tuple[Verdict, list[tuple[Criterion, Judged]]]:
    """Every criterion of the gate judged; the gate fails if any fails, is unknown if any is
    unknown, and passes only when all pass."""
    criteria = GATES.get((document, frm, to))
    if criteria is None:
        known = ", ".join(f"{d} {a}->{b}" for d, a, b in GATES)
        raise ValueError(f"{document} has no gate from {frm} to {to}; the gates are: {known}")
    judged = [(c, c.judge(evidence)) for c in criteria]
    verdicts = {j.verdict for _, j in judged}
    overall = (Verdict.FAIL if Verdict.FAIL in verdicts else
               Verdict.UNKNOWN if Verdict.UNKNOWN in verdicts else Verdict.PASS)
    return overall, judged
