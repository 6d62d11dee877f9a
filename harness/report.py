"""Writing a certificate: ``certificate.json`` for machines, ``certificate.md`` for people (the
document's tables with a verdict column, readable as a CI summary), and the attachments
(histories, reproductions) beside them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from crashgate.harness.certify import Certificate, RowResult
from crashgate.harness.verdict import Verdict

__all__ = ["certificate_dir", "render_markdown", "verdict_table", "write_certificate"]

_MARK = {Verdict.PASS: "pass", Verdict.FAIL: "**FAIL**", Verdict.UNKNOWN: "*unknown*",
         Verdict.NA: "n/a"}


def certificate_dir(out: Path, slug: str, run_id: str) -> Path:
    return out / slug / run_id


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _measured(m: dict[str, object]) -> str:
    # a mapping (e.g. states_by_model) is shown below the table, where it has room
    return ", ".join(f"{k} {v}" for k, v in m.items() if not isinstance(v, Mapping))


def _by_model(r: RowResult) -> list[str]:
    """Lines below a table for a row that counted crash states per model: every model, zeros
    in bold, each zero with the reason the row gave."""
    counts = r.evidence.measured.get("states_by_model")
    if not isinstance(counts, Mapping):
        return []
    shown = " · ".join(f"{m} **{n}**" if n == 0 else f"{m} {n}" for m, n in counts.items())
    lines = [f"- #{r.row.number} crash states by model: {shown}"]
    for m, n in counts.items():
        why = next((d for d in r.evidence.details if d.startswith(f"{m}: no crash state")), None)
        if n == 0 and why:
            lines.append(f"  - {why}")
    return lines


def render_markdown(cert: Certificate) -> str:
    d = cert.declaration
    lines = [
        f"# crashgate certificate: `{cert.backend}`",
        "",
        f"**Verdict: {cert.verdict.value.upper()}** · run `{cert.run_id}` · seed {cert.seed} · "
        f"budget {cert.budget} · {cert.seconds:.1f} s",
        "",
        f"Declared: durability **{d.durability.value}**; capabilities "
        f"{', '.join(sorted(c.value for c in d.capabilities))}"
        + (f"; file format {d.file_format} (wire version {d.wire_version})" if d.file_format
           else ""),
        "",
    ]
    tables: dict[str, list] = {}
    for r in cert.results:
        tables.setdefault(r.row.table, []).append(r)
    for table, results in tables.items():
        lines += [f"## {table}", "",
                  "| # | Scenario | Expected Behavior | Verdict | Evidence | Reproduce |",
                  "|---|----------|-------------------|---------|----------|-----------|"]
        for r in results:
            ev = r.evidence
            evidence = ev.summary + (f" ({_measured(dict(ev.measured))})" if ev.measured else "")
            repro = f"`{ev.reproduce}`" if ev.reproduce else ""
            lines.append(
                f"| {r.row.number} | {_cell(r.row.scenario)} | {_cell(r.row.expected)} | "
                f"{_MARK[ev.verdict]} | {_cell(evidence)} | {_cell(repro)} |")
        lines.append("")
        below = [line for r in results for line in _by_model(r)]
        if below:
            lines += [*below, ""]
    failing = [r for r in cert.results if r.evidence.verdict in (Verdict.FAIL, Verdict.UNKNOWN)]
    if failing:
        lines += ["## Details", ""]
        for r in failing:
            ev = r.evidence
            fence = "~~~"   # details may hold backticks; a tilde fence never clashes with them
            lines += [f"### {r.row.table} #{r.row.number}: {ev.verdict.value}", "", ev.summary,
                      "", fence, *ev.details[:40], fence, ""]
            if ev.reproduce:
                lines += [f"Reproduce: `{ev.reproduce}`", ""]
    return "\n".join(lines)


def verdict_table(cert: Certificate) -> str:
    """The plain-text table printed at the end of a run."""
    rows = [(r.row.key, r.evidence.verdict.value,
             r.evidence.summary) for r in cert.results]
    w0 = max((len(r[0]) for r in rows), default=3)
    out = [f"{cert.backend}: {cert.verdict.value.upper()}"]
    out += [f"  {a:<{w0}}  {b:<7}  {c}" for a, b, c in rows]
    return "\n".join(out)


def _relocate(cert: Certificate, folder: Path) -> None:
    """A reproduction named by a path in the run's scratch directory points, from now on, at
    its copy beside the certificate (the scratch directory is gone after the run)."""
    for i, r in enumerate(cert.results):
        ev = r.evidence
        if not ev.reproduce:
            continue
        fixed = ev.reproduce
        for name in ev.attachments:
            fixed = re.sub(r"(?<![\w/.-])[^\s'\"]*/" + re.escape(name),
                           str(folder / name).replace("\\", "\\\\"), fixed)
        if fixed != ev.reproduce:
            cert.results[i] = replace(r, evidence=replace(ev, reproduce=fixed))


def write_certificate(cert: Certificate, out: Path, slug: str) -> Path:
    """Write everything for one run; returns the run's folder."""
    folder = certificate_dir(out, slug, cert.run_id).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _relocate(cert, folder)
    (folder / "certificate.json").write_text(json.dumps(cert.to_json(), indent=2) + "\n")
    (folder / "certificate.md").write_text(render_markdown(cert) + "\n")
    for r in cert.results:
        for name, text in r.evidence.attachments.items():
            (folder / name).write_text(text)
        if r.first_run is not None:
            for name, text in r.first_run.attachments.items():
                (folder / f"first-run-{name}").write_text(text)
    return folder
