"""``crashgate gate``: a stage promotion's go/no-go verdict from evidence (``scenarios.gates``)."""

from __future__ import annotations

import argparse
import json
import random
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from crashgate.backends import resolve
from crashgate.harness.cli import UsageError
from crashgate.harness.gate_evidence import FORMAT, gather
from crashgate.harness.histogram import LatencyHistogram
from crashgate.harness.html_report import gate_html
from crashgate.harness.soak.summary import merge_histograms, union
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.gates import ADR072, ARCH001, GATES, judge_gate

__all__ = ["add_parser", "merge"]

_EXIT = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.UNKNOWN: 2}
_SUMS = ("divergence", "fallbacks", "corruption", "witness", "backup", "cow", "dual_write")


def merge(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Evidence files as one: counts summed; the span from the first start to the last end,
    and the covered ``spans`` unioned; latency ratios from the file with the most samples;
    soaks' latency histograms added bucket by bucket, the query p99 taken from them; peak load
    with the most agents any file had, its violations and ops summed."""
    out: dict[str, Any] = {"format": FORMAT}
    histograms: list[dict[str, Any]] = []
    for doc in documents:
        if doc.get("format") != FORMAT:
            raise UsageError(f"an evidence file has format {doc.get('format')!r}; crashgate "
                             f"reads {FORMAT!r} (what `crashgate gate` and a soak write)")
        for section in _SUMS:
            if isinstance(doc.get(section), dict):
                into = out.setdefault(section, {})
                for k, v in doc[section].items():
                    if isinstance(v, int | float):
                        into[k] = into.get(k, 0) + v
        for key, pick in (("started", min), ("ended", max)):
            if key in doc:
                out[key] = pick(out.get(key, doc[key]), doc[key])
        spans = doc.get("spans") or ([[doc["started"], doc["ended"]]]
                                     if "started" in doc and "ended" in doc else [])
        out["spans"] = union([*out.get("spans", []), *spans])
        if isinstance(doc.get("latency"), dict) and (
                "latency" not in out or _samples(doc["latency"]) > _samples(out["latency"])):
            out["latency"] = dict(doc["latency"])
        if isinstance(doc.get("histograms"), dict):
            histograms.append(doc)
        if isinstance(doc.get("peak_load"), dict):
            got, have = doc["peak_load"], out.get("peak_load", {})
            out["peak_load"] = {"agents": max(int(got.get("agents", 0)),
                                              int(have.get("agents", 0))),
                                "violations": int(got.get("violations", 0))
                                + int(have.get("violations", 0)),
                                "ops": int(got.get("ops", 0)) + int(have.get("ops", 0))}
    if histograms:
        out["histograms"] = merge_histograms(histograms)
        query = out["histograms"].get("query")
        timed = LatencyHistogram.from_json(query) if query else None
        p99 = timed.quantile(0.99) if timed is not None else None
        if timed is not None and p99 is not None:
            out.setdefault("latency", {}).update(query_p99_ms=p99 * 1e3, query_n=timed.count)
    return out


def _samples(latency: dict[str, Any]) -> int:
    """The fewest samples behind any latency ratio of an evidence file (a ratio per operation
    type, or one for all: ``scenarios.gates``); 0 when there is none."""
    ratios = []
    for kind in ("read", "write"):
        data = latency.get(kind)
        if isinstance(data, dict):
            ratios += [data] if "point" in data else [r for r in data.values()
                                                      if isinstance(r, dict)]
    return min((min(int(x) for x in r.get("n", [0])) for r in ratios), default=0)


def _run(args: argparse.Namespace) -> int:
    document = ARCH001 if args.document.lower().startswith("arch") else ADR072
    if (document, args.frm, args.to) not in GATES:
        known = ", ".join(f"{d} --from {a} --to {b}" for d, a, b in GATES)
        raise UsageError(f"no {document} gate from {args.frm} to {args.to}; the gates: {known}")
    spec = resolve(args.adapter)
    if args.evidence:
        docs = []
        for path in args.evidence:
            try:
                docs.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as exc:
                raise UsageError(f"evidence file {path}: {exc}") from None
        evidence = merge(docs)
    else:
        seed = args.seed if args.seed is not None else random.randrange(1 << 32)
        with tempfile.TemporaryDirectory(prefix="crashgate-gate-") as tmp:
            evidence = gather(spec, args.frm, tmp, ops=args.ops, seed=seed,
                              samples=args.samples, fault_every=args.fault_every)
    verdict, judged = judge_gate(document, args.frm, args.to, evidence)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = Path(args.out) / spec.slug / f"gate-{args.frm}-{args.to}-{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"criterion": c.words, "document": c.document, "verdict": j.verdict.value,
             "figure": j.figure, "n": j.n, "missing": j.missing} for c, j in judged]
    (folder / "evidence.json").write_text(json.dumps(evidence, indent=2, sort_keys=True))
    gate = {"gate": f"{document} {args.frm} -> {args.to}", "adapter": spec.label,
            "verdict": verdict.value, "criteria": rows}
    (folder / "gate.json").write_text(json.dumps(gate, indent=2))
    again = shlex.join(["crashgate", "gate", args.adapter, "--from", str(args.frm), "--to",
                        str(args.to), "--document", document, "--evidence",
                        str((folder / "evidence.json").resolve())])
    (folder / "report.html").write_text(gate_html(gate, evidence, reproduce=again))
    lines = [f"# {document} gate {args.frm} -> {args.to}: {spec.label}", "",
             f"**Verdict: {verdict.value.upper()}**", "",
             "| criterion | verdict | figure | n | missing |", "|---|---|---|---|---|"]
    lines += [f"| {r['criterion']} | {r['verdict']} | {r['figure']} | {r['n']} | "
              f"{r['missing']} |" for r in rows]
    (folder / "gate.md").write_text("\n".join(lines) + "\n")
    print(f"{spec.label}: {document} gate {args.frm} -> {args.to}: {verdict.value.upper()}")
    for r in rows:
        print(f"  {r['verdict']:<8} {r['criterion']}")
        print(f"           {r['figure']} (n={r['n']})" + (f"; missing: {r['missing']}"
                                                          if r["missing"] else ""))
    print(f"  gate: {folder / 'gate.md'}")
    return _EXIT[verdict]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gate", help="a stage promotion's go/no-go verdict from evidence",
        description="Judge ADR-072's (or ARCH-001's) go/no-go criteria for promoting ADAPTER "
        "from stage --from to --to: each criterion in the document's words, with its figure, "
        "bound and sample size; unknown, with what is missing, when the evidence is too thin "
        "(criteria over days need evidence that covers them). Without --evidence, gathers it "
        "in one bounded run on real files. Writes gate.json, gate.md, evidence.json and "
        "report.html. Exit 0 "
        "pass, 1 fail, 2 unknown, 3 usage error.")
    p.add_argument("adapter", help="the stage adapter, e.g. stage2 or 'stage2?sync=one'")
    p.add_argument("--from", dest="frm", type=int, required=True, help="the stage it is in")
    p.add_argument("--to", type=int, required=True, help="the stage it would be promoted to")
    p.add_argument("--document", default="ADR-072", choices=["ADR-072", "ARCH-001"],
                   help="whose criteria (default ADR-072)")
    p.add_argument("--evidence", nargs="+", metavar="FILE", default=None,
                   help="evidence files written earlier (by a soak or a gate run), merged; "
                   "default: gather evidence now")
    p.add_argument("--ops", type=int, default=200, help="workload ops when gathering (200)")
    p.add_argument("--samples", type=int, default=200,
                   help="timed calls per store and operation when gathering (200)")
    p.add_argument("--fault-every", type=int, default=10, metavar="N",
                   help="when gathering in stage 2, one shadow write in N fails with an I/O "
                   "error, to be queued and repaired (0: none; default 10)")
    p.add_argument("--seed", type=int, default=None, help="workload seed (default random)")
    p.add_argument("--out", default="reports", help="where gate reports go (default reports/)")
    p.set_defaults(func=_run)
