"""A soak's documents on disk: ``soak.json``, ``evidence.json``, ``soak.md`` (readable as a CI
summary) and ``report.html``, in the soak's folder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crashgate.harness.html_report import soak_html

__all__ = ["markdown", "write_documents"]


def write_documents(doc: dict[str, Any], evidence: Mapping[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_text(json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    (out / "soak.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "soak.md").write_text(markdown(doc) + "\n")
    (out / "report.html").write_text(soak_html(doc), encoding="utf-8")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(doc: Mapping[str, Any]) -> str:
    ops = doc["ops"]
    lines = [f"# crashgate soak: `{doc['target']}`", "",
             f"**Verdict: {doc['verdict'].upper()}**: {doc['summary']}", "",
             f"Seed {doc['seed']} · runs {doc['runs']} · shard {doc['shard'][0]}/"
             f"{doc['shard'][1]} · {doc['agents']} agents · {doc['elapsed']:.0f} s · schedule "
             f"{doc['schedule']['name']!r} every {doc['schedule']['interval']:g} s", "",
             f"Reproduce: `{doc['reproduce']}`", ""]
    gate = doc.get("gate")
    if gate:
        lines += [f"## {gate['gate']}: {gate['verdict'].upper()}", "",
                  "| criterion | verdict | figure | n | missing |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(c['criterion'])} | {c['verdict']} | {_cell(c['figure'])} | "
                  f"{c['n']} | {_cell(c['missing'])} |" for c in gate["criteria"]]
        lines.append("")
    lines += ["## Ops", "", "| op | ok | fail | info |", "|---|---|---|---|"]
    lines += [f"| {op} | {c.get('ok', 0)} | {c.get('fail', 0)} | {c.get('info', 0)} |"
              for op, c in ops["by_op"].items()]
    lines += ["", f"Total {ops['total']:,}: ok {ops.get('ok', 0):,}, fail {ops.get('fail', 0):,}"
              f", info {ops.get('info', 0):,}.", "", "## Faults", ""]
    by_name: dict[str, int] = {}
    for f in doc["faults"]:
        by_name[f["name"]] = by_name.get(f["name"], 0) + 1
    lines += [f"- {name}: {n}" for name, n in by_name.items()] or ["- none injected"]
    lines += [f"- {name}: not injected: {why}" for name, why in doc.get("skipped", {}).items()]
    ch = doc["checks"]
    lines += ["", "## Checks", "",
              f"- reads checked against the history: {ch.get('reads', 0):,} (Q-value reads "
              f"{ch.get('q_reads', 0):,})",
              f"- recoveries: {ch.get('recoveries', 0)}, sweeps of every record: "
              f"{ch.get('sweeps', 0)}",
              f"- shadow comparisons: {doc['divergence'].get('compared', 0):,}, mismatches "
              f"{doc['divergence'].get('mismatches', 0)}; divergences repaired "
              f"{ch.get('repaired', 0)}; records reconciled at a reopen "
              f"{ch.get('reconciled', 0)}",
              f"- corruption: {doc['corruption'].get('incidents', 0)} incidents in "
              f"{doc['corruption'].get('checks', 0):,} checks",
              f"- fallbacks: {doc['fallbacks'].get('fallbacks', 0)} in "
              f"{doc['fallbacks'].get('reads', 0):,} reads", ""]
    if doc["violations"] or doc["problems"] or doc["leaks"]:
        lines += ["## Violations", ""]
        fence = "~~~"
        for v in doc["violations"]:
            lines += [f"### {v['kind']}: {v['register']}", "", v["message"], "", fence,
                      f"read:  {v['read']}", *[f"write: {w}" for w in v["writes"]], fence, ""]
        total = doc["counts"]["violations"]
        if total > len(doc["violations"]):
            lines += [f"... and {total - len(doc['violations'])} more violations", ""]
        lines += [f"- broken fault promise: {p}" for p in doc["problems"]]
        lines += [f"- leak: {leak['process']}: {leak['what']}: {leak['detail']}"
                  for leak in doc["leaks"]]
        lines += ["", f"Reproduce: `{doc['reproduce']}`", ""]
    return "\n".join(lines)
