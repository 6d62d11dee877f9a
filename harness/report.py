"""Writing a certificate: ``certificate.json`` for machines, ``certificate.md`` for people (the
document's tables with a verdict column, readable as a CI summary), ``report.html`` with plots
(``html_report``), and the attachments (histories, reproductions) beside them."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from crashgate.harness.certify import Certificate, RowResult
from crashgate.harness.html_report import certificate_html
from crashgate.harness.verdict import Verdict

__all__ = ["certificate_dir", "render_markdown", "verdict_table", "write_certificate"]

_MARK = {Verdict.PASS: "pass", Verdict.FAIL: "**FAIL**", Verdict.UNKNOWN: "*unknown*",
         Verdict.NA: "n/a"}


def certificate_dir(out: Path, slug: str, run_id: str) -> Path:
    return out / slug / run_id


CELL = 160   # characters of a failure's evidence cell; the whole text is in Details below


def _cell(text: str, limit: int | None = None) -> str:
    """``text`` as one table cell: one line, pipes escaped, cut at ``limit`` characters."""
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    return text.replace("|", "\\|")


def _finite(value: object) -> object:
    """``value`` with every non-finite float as a string ("nan", "inf"): JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _measured(m: dict[str, object]) -> str:
    # a mapping (e.g. states_by_model) is shown below the table, where it has room
    return ", ".join(f"{k} {v}" for k, v in m.items() if not isinstance(v, Mapping))


def _by_model(r: RowResult) -> list[str]:
    """A row's coverage by crash model, for below its table: every model's count, zeros in
    bold, each zero with the reason the row gave; nothing for a row that builds no crash
    states or did not run."""
    counts = r.evidence.measured.get("states_by_model")
    if r.evidence.verdict is Verdict.NA or not isinstance(counts, Mapping):
        return []
    shown = " · ".join(f"{m} **{n}**" if n == 0 else f"{m} {n}" for m, n in counts.items())
    lines = [f"- #{r.row.number} crash states by model: {shown}"]
    for m, n in counts.items():
        why = next((d for d in r.evidence.details if d.startswith(f"{m}: no crash state")), None)
        if n == 0:
            lines.append(f"  - {why or f'{m}: no crash state (the row gave no reason)'}")
    return lines


def render_markdown(cert: Certificate) -> str:
    d = cert.declaration
    lines = [
        f"# crashgate certificate: `{cert.backend}`",
        "",
        f"**Verdict: {cert.verdict.value.upper()}** · run `{cert.run_id}` · seed {cert.seed} · "
        f"budget {cert.budget} · {cert.seconds:.1f} s",
        "",
        f"Declared: durability **{d.durability.value}**; damage at rest **{d.damage.value}**; "
        f"capabilities {', '.join(sorted(c.value for c in d.capabilities))}"
        + (f"; file format {d.file_format} (wire version {d.wire_version})" if d.file_format
           else "")
        + (f"; search: approximate, {d.recall}" if d.recall is not None else "")
        + ("; keeps no metadata" if not d.metadata else "")
        + (f"; kept by {d.server}" if d.server else "")
        + ("; reads the real clock" if d.real_clock else "")
        + ("; its driver injects I/O errors" if d.injects_io_errors else ""),
        "",
        f"Regenerate: `{cert.command}`",
        "",
        "Ran on: " + " · ".join(f"{k} {v}" for k, v in cert.environment.items()),
        "",
    ]
    tables: dict[str, list] = {}
    for r in cert.results:
        tables.setdefault(r.row.table, []).append(r)
    for table, results in tables.items():
        lines += [f"## {table}", "",
                  "| # | Scenario | Expected Behavior | Verdict | Evidence |",
                  "|---|----------|-------------------|---------|----------|"]
        for r in results:
            ev = r.evidence
            evidence = ev.summary + (f" ({_measured(dict(ev.measured))})" if ev.measured else "")
            # a failure's text can be long: its cell is cut, the whole of it is in Details
            below = ev.verdict in (Verdict.FAIL, Verdict.UNKNOWN)
            cell = _cell(evidence, CELL) + " (details below)" if below else _cell(evidence)
            lines.append(
                f"| {r.row.number} | {_cell(r.row.scenario)} | {_cell(r.row.expected)} | "
                f"{_MARK[ev.verdict]} | {cell} |")
        coverage = [line for r in results for line in _by_model(r)]
        others = [f"#{r.row.number}" for r in results
                  if r.evidence.verdict is not Verdict.NA and not _by_model(r)]
        if others:
            coverage.append(f"- {', '.join(others)}: these rows build no crash states")
        if coverage:
            lines += ["", "Coverage by crash model:", "", *coverage]
        lines.append("")
    failing = [r for r in cert.results if r.evidence.verdict in (Verdict.FAIL, Verdict.UNKNOWN)]
    if failing:
        lines += ["## Details", ""]
        for r in failing:
            ev = r.evidence
            fence = "~~~"   # details may hold backticks; a tilde fence never clashes with them
            lines += [f"### {r.row.table} #{r.row.number}: {ev.verdict.value}", "", ev.summary,
                      "", fence, *ev.details[:40], fence, ""]
            if ev.reproduce:
                lines += ["Reproduce:", "", fence, ev.reproduce, fence, ""]
    return "\n".join(lines)


def verdict_table(cert: Certificate) -> str:
    """The plain-text table printed at the end of a run."""
    w0 = max((len(r.row.key) for r in cert.results), default=3)
    out = [f"{cert.backend}: {cert.verdict.value.upper()}"]
    for r in cert.results:
        ev = r.evidence
        out.append(f"  {r.row.key:<{w0}}  {ev.verdict.value:<7}  {ev.summary}")
        if ev.reproduce and ev.verdict in (Verdict.FAIL, Verdict.UNKNOWN):
            out.append(f"  {'':<{w0}}  {'':<7}  reproduce: {ev.reproduce}")
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
    doc = _finite(cert.to_json())
    assert isinstance(doc, Mapping)   # _finite keeps a mapping a mapping
    (folder / "certificate.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    (folder / "certificate.md").write_text(render_markdown(cert) + "\n")
    (folder / "report.html").write_text(certificate_html(doc))
    for r in cert.results:
        for name, text in r.evidence.attachments.items():
            (folder / name).write_text(text)
        if r.first_run is not None:
            for name, text in r.first_run.attachments.items():
                (folder / f"first-run-{name}").write_text(text)
    return folder
