"""``report.html``: one self-contained page per certificate, gate and soak, opened from disk with
no network (plotly.js and the data inlined, plotly.js once per page): the verdict table first,
then every failure with its reproduction command, then the plots (``harness.plots``) and the
figures behind them. All text from a report is escaped.

A page checks itself, so a test (``tests/browser.py``) can read the verdict off its DOM: the
body carries ``data-plots-expected`` (the figures this module put in), and after load a small
script sets ``data-plots-rendered`` (plot divs in which plotly drew its ``.main-svg``),
``data-errors`` (a JSON list: uncaught errors, unhandled rejections, ``console.error`` calls,
resources that failed to load) and ``data-network`` (a JSON list of any resource loaded from
somewhere other than the page itself: a self-contained page has none).

The soak document (``soak.json``, written by the soak) has the shape::

    {"format": "crashgate-soak/1", "target", "verdict", "summary", "command", "reproduce",
     "seed", "runs", "shard", "agents", "started", "ended", "elapsed",
     "ops": {"total", "ok", "fail", "info", "by_op": {op: {"ok", "fail", "info"}}},
     "faults": [{"name", "start", "end", "detail", "run"}],
     "timeline": {"bucket_s", "t": [...], "throughput": {"ok"|"fail"|"info": [...]},
                  "latency_ms": {op: {"p50": [...], "p99": [...]}}},      # None: no sample
     "resources": [{"process", "pid", "t", "rss_mb", "fds", "cpu_pct"}],
     "leaks": [{"process", "what", "detail"}],
     "violations": [{"kind", "register", "message", "read", "writes": [...]}],
     "problems": [str],                        # broken fault promises
     "counts": {"violations", "problems", "leaks"},   # the lists keep only the first 50
     "schedule": {"name", "interval"}, "skipped": {fault: why not injected},
     "checks": {"reads", "recoveries", "q_reads", ...}, "divergence"|"corruption"|"fallbacks":
     {...}, "evidence": {...}, "gate": gate.json}

with times in ``faults``, ``timeline`` and ``resources`` in seconds since the soak started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import plotly.offline

from crashgate.harness.plots import Plot, certificate_plots, gate_plots, soak_plots

__all__ = ["Failure", "Section", "certificate_html", "gate_html", "page", "soak_html"]

DETAIL_LINES = 40   # of a failure's details; the whole text is in the JSON beside the page
SHOWN = 5           # failures shown open; the rest are folded under <details>


@dataclass(frozen=True)
class Failure:
    """One failure (``verdict`` fail, or unknown): what, why, and the shell command that
    reproduces it."""

    title: str
    summary: str
    reproduce: str
    details: tuple[str, ...] = ()
    verdict: str = "fail"


@dataclass(frozen=True)
class Section:
    """A part of a page: ``html`` is markup this module built (its text already escaped),
    ``plots`` follow it."""

    title: str
    html: str = ""
    plots: tuple[Plot, ...] = field(default=())


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;
color:#212121}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;white-space:nowrap}td.key{white-space:nowrap}
pre{background:#f7f7f7;border:1px solid #e0e0e0;padding:8px;white-space:pre-wrap;
word-break:break-all;margin:4px 0}
.v{font-weight:600;white-space:nowrap}.v-pass{color:#2e7d32}.v-fail{color:#c62828}
.v-unknown{color:#ef6c00}.v-na{color:#9e9e9e}
.banner{font-size:18px;padding:8px 12px;border-radius:4px;background:#f5f5f5;display:inline-block}
.failure{border-left:4px solid #c62828;padding:2px 12px;margin:12px 0}
.failure.unknown{border-left-color:#ef6c00}
summary{cursor:pointer;margin:8px 0;font-weight:600}
.empty{color:#757575;font-style:italic}.facts td:first-child{width:200px;color:#555}
"""

# Runs before plotly.js, so an error while plotly loads is caught too. Chromium's log gives a
# console message without its level (tests/browser.py), so the page records errors itself.
_WATCH = """
(function(){
  var errors = [], net = [];
  function sync(){
    var b = document.body; if (!b) return;
    var divs = document.querySelectorAll('.plotly-graph-div'), drawn = 0;
    for (var i = 0; i < divs.length; i++) if (divs[i].querySelector('.main-svg')) drawn++;
    var res = (performance.getEntriesByType && performance.getEntriesByType('resource')) || [];
    net = [];
    for (var j = 0; j < res.length; j++)
      if (!/^(file|data|blob|about):/.test(res[j].name)) net.push(res[j].name);
    b.dataset.plotDivs = divs.length; b.dataset.plotsRendered = drawn;
    b.dataset.errors = JSON.stringify(errors); b.dataset.network = JSON.stringify(net);
  }
  function note(msg){ errors.push(String(msg)); sync(); }
  window.addEventListener('error', function(e){
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) note('failed to load ' + (t.src || t.href));
    else note((e.message || 'error') + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
  }, true);
  window.addEventListener('unhandledrejection', function(e){
    note('unhandled rejection: ' + (e.reason && e.reason.stack || e.reason));
  });
  var original = console.error;
  console.error = function(){
    note('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
  window.__crashgateSync = sync;
  window.addEventListener('load', function(){
    sync(); setTimeout(sync, 0); setTimeout(sync, 500);
    setTimeout(function(){ sync(); document.body.dataset.checked = '1'; }, 2000);
  });
})();
"""


def page(title: str, verdict: str, sections: Sequence[Section]) -> str:
    """The whole page: ``title`` and ``verdict`` in its heading, then ``sections`` in order."""
    parts, n = [], 0
    for s in sections:
        parts.append(f"<h2>{escape(s.title)}</h2>\n{s.html}")
        for plot in s.plots:
            parts.append(f"<h3>{escape(plot.title)}</h3>")
            if plot.figure is None:
                parts.append(f'<p class="empty">{escape(plot.empty)}</p>')
                continue
            n += 1
            parts.append(plot.figure.to_html(full_html=False, include_plotlyjs=False,
                                             div_id=f"plot-{n}",
                                             config={"displaylogo": False}))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style>"
            f"<script>{_WATCH}</script>"
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head>\n'
            f'<body data-plots-expected="{n}">\n<h1>{escape(title)}</h1>\n'
            f'<p class="banner">Verdict: {_verdict(verdict)}</p>\n' + "\n".join(parts)
            + "\n</body></html>\n")


def _verdict(v: object) -> str:
    text = str(v)
    cls = {"n/a": "na"}.get(text, text if text in ("pass", "fail", "unknown") else "unknown")
    return f'<span class="v v-{cls}">{escape(text.upper())}</span>'


def _table(header: Sequence[str], rows: Sequence[Sequence[object]],
          verdict_col: int | None = None, numeric: Sequence[int] = (),
          nowrap: Sequence[int] = ()) -> str:
    """An HTML table of ``rows`` (cells as text, escaped); column ``verdict_col`` coloured,
    ``numeric`` columns right-aligned, ``nowrap`` columns kept on one line."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i == verdict_col:
                cells.append(f"<td>{_verdict(cell)}</td>")
            else:
                cls = ' class="num"' if i in numeric else ' class="key"' if i in nowrap else ""
                cells.append(f"<td{cls}>{escape('' if cell is None else str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _facts(pairs: Sequence[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in pairs)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def _failures_section(failures: Sequence[Failure], none: str) -> Section:
    """Every failure with its details and its reproduction command; ``none`` when empty."""
    if not failures:
        return Section("Failures", f'<p class="empty">{escape(none)}</p>')
    parts = []
    for i, f in enumerate(failures):
        if i == SHOWN:   # the rest folded, so a long list does not push the plots away
            parts.append(f"<details><summary>{len(failures) - SHOWN} more</summary>")
        details = _pre("\n".join(f.details[:DETAIL_LINES])) if f.details else ""
        kind = "unknown" if f.verdict == "unknown" else "fail"
        parts.append(f'<div class="failure {kind}"><h3>{escape(f.title)}</h3><p>{escape(f.summary)}'
                     f"</p>{details}<p>Reproduce:</p>{_pre(f.reproduce)}</div>")
    if len(failures) > SHOWN:
        parts.append("</details>")
    return Section(f"Failures ({len(failures)})", "\n".join(parts))


# --- the three reports --------------------------------------------------------------------

def certificate_html(cert: Mapping[str, Any]) -> str:
    """The page of a certificate; ``cert`` is what ``Certificate.to_json()`` gives."""
    rows = list(cert.get("rows", ()))
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("verdict"))] = counts.get(str(r.get("verdict")), 0) + 1
    tables: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        tables.setdefault(str(r.get("table", "")), []).append(r)
    verdicts = "<p>" + escape(" · ".join(f"{k} {v}" for k, v in sorted(counts.items()))) + "</p>"
    for name, results in tables.items():
        verdicts += f"<h3>{escape(name)}</h3>" + _table(
            ["#", "row", "scenario", "verdict", "evidence"],
            [[r.get("number"), r.get("key"), r.get("scenario"), r.get("verdict"),
              r.get("summary")] for r in results], verdict_col=3, nowrap=[0, 1])
    command = str(cert.get("command") or "")
    failures = []
    for r in rows:
        if r.get("verdict") not in ("fail", "unknown"):
            continue
        own = r.get("reproduce")
        failures.append(Failure(
            f"{r.get('table')} #{r.get('number')} {r.get('key')}: {r.get('verdict')}",
            str(r.get("summary", "")),
            str(own) if own else f"{command}\n# the whole run: this row recorded no "
                                 "reproduction of its own",
            tuple(str(d) for d in r.get("details", ())), str(r.get("verdict"))))
    decl = cert.get("declaration", {})
    about = _facts([("backend", cert.get("backend")), ("run", cert.get("run_id")),
                   ("seed", cert.get("seed")), ("budget", cert.get("budget")),
                   ("started", cert.get("started")), ("seconds", cert.get("seconds")),
                   ("durability", decl.get("durability")), ("damage", decl.get("damage")),
                   ("capabilities", ", ".join(decl.get("capabilities", ()))),
                   # certificates older than the field have no key: they kept metadata
                   ("metadata", "kept" if decl.get("metadata", True) else "none (declared)")]) \
        + "<p>Regenerate:</p>" + _pre(command) \
        + _facts(sorted((str(k), v) for k, v in (cert.get("environment") or {}).items()))
    return page(f"crashgate certificate: {cert.get('backend')}", str(cert.get("verdict")), [
        Section("Verdicts", verdicts),
        _failures_section(failures, "no row failed and none was unknown"),
        Section("Plots", plots=tuple(certificate_plots(cert))),
        Section("The run", about)])


def gate_html(gate: Mapping[str, Any], evidence: Mapping[str, Any],
              reproduce: str | None = None) -> str:
    """The page of a gate: ``gate`` is gate.json, ``evidence`` the evidence it judged,
    ``reproduce`` the command that judges it again (default: judge ``evidence.json`` beside
    the page)."""
    criteria = list(gate.get("criteria", ()))
    if reproduce is None:
        words = str(gate.get("gate", "")).split()   # "ADR-072 2 -> 3"
        frm, to = (words[1], words[3]) if len(words) == 4 else ("?", "?")
        reproduce = (f"crashgate gate {gate.get('adapter')} --from {frm} --to {to} "
                     f"--document {words[0] if words else 'ADR-072'} --evidence evidence.json")
    failures = [Failure(f"{c.get('criterion')}: {c.get('verdict')}", str(c.get("figure")),
                        reproduce, (f"missing: {c['missing']}",) if c.get("missing") else (),
                        str(c.get("verdict")))
                for c in criteria if c.get("verdict") in ("fail", "unknown")]
    span = _span(evidence)
    counts = [(k, ", ".join(f"{a} {b}" for a, b in v.items() if isinstance(b, int | float)))
              for k, v in sorted(evidence.items()) if isinstance(v, Mapping)]
    counts = [(k, text) for k, text in counts if text]   # sections of figures, not of tables
    about = _facts([("gate", gate.get("gate")), ("adapter", gate.get("adapter")),
                   ("evidence covers", span), *counts])
    return page(f"crashgate gate {gate.get('gate')}: {gate.get('adapter')}",
                str(gate.get("verdict")), [
        Section("Verdicts", _table(["criterion", "document", "verdict", "figure", "n", "missing"],
                                  [[c.get("criterion"), c.get("document"), c.get("verdict"),
                                    c.get("figure"), c.get("n"), c.get("missing")]
                                   for c in criteria], verdict_col=2, numeric=[4])),
        _failures_section(failures, "no criterion failed and none was unknown"),
        Section("Plots", plots=tuple(gate_plots(gate, evidence))),
        Section("Evidence", about + "<p>Judge it again:</p>" + _pre(reproduce))])


def _span(doc: Mapping[str, Any]) -> str:
    """The time the evidence covers: its ``spans`` (merged shards) or started..ended."""
    try:
        spans = doc.get("spans") or [[doc["started"], doc["ended"]]]
        covered = sum(float(b) - float(a) for a, b in spans)
    except (KeyError, TypeError, ValueError):
        return "no time span recorded"
    return f"{covered:.1f} s" + (f" in {len(spans)} spans" if len(spans) > 1 else "")


def soak_html(doc: Mapping[str, Any]) -> str:
    """The page of a soak; ``doc`` is the soak document (shape in this module's docstring)."""
    reproduce = str(doc.get("reproduce") or doc.get("command") or "")
    gate = doc.get("gate") if isinstance(doc.get("gate"), Mapping) else None
    rows: list[list[object]] = [[f"soak of {doc.get('target')}", doc.get("verdict"),
                                 doc.get("summary")]]
    rows += [[c.get("criterion"), c.get("verdict"),
              f"{c.get('figure')} (n={c.get('n')})"
              + (f"; missing: {c['missing']}" if c.get("missing") else "")]
             for c in (gate or {}).get("criteria", ())]
    verdicts = _table(["what", "verdict", "figure"], rows, verdict_col=1)
    if gate:
        verdicts = f"<p>Gate {escape(str(gate.get('gate')))}: {_verdict(gate.get('verdict'))}" \
                   f"</p>" + verdicts
    ops = doc.get("ops") or {}
    faults = list(doc.get("faults") or ())
    skipped = doc.get("skipped") or {}
    detail = _table(["op", "ok", "fail", "info"],
                    [[op, c.get("ok", 0), c.get("fail", 0), c.get("info", 0)]
                     for op, c in sorted((ops.get("by_op") or {}).items())], numeric=[1, 2, 3]) \
        + "<h3>Faults</h3>" + (_table(["fault", "start (s)", "end (s)", "run", "detail"],
                                      [[f.get("name"), f.get("start"), f.get("end"),
                                        f.get("run"), f.get("detail")] for f in faults],
                                      numeric=[1, 2, 3]) if faults
                                else '<p class="empty">no fault was injected</p>') \
        + (_facts([(f"{k}: not injected", v) for k, v in skipped.items()]) if skipped else "") \
        + "<p>Command:</p>" + _pre(str(doc.get("command") or "")) \
        + "<p>Reproduce:</p>" + _pre(reproduce)
    return page(f"crashgate soak: {doc.get('target')}", str(doc.get("verdict")), [
        Section("Verdicts", verdicts), Section("Key figures", _soak_figures(doc)),
        _failures_section(_soak_failures(doc, reproduce),
                          "no violation, no broken fault promise, no leak"),
        Section("Plots", plots=tuple(soak_plots(doc))),
        Section("Ops and faults", detail)])


def _soak_figures(doc: Mapping[str, Any]) -> str:
    ops = doc.get("ops") or {}
    elapsed = float(doc.get("elapsed") or 0)
    counts = doc.get("counts") or {}
    by_name: dict[str, int] = {}
    for f in doc.get("faults") or ():
        by_name[str(f.get("name"))] = by_name.get(str(f.get("name")), 0) + 1

    def found(key: str) -> str:
        listed = len(doc.get(key) or ())
        total = int(counts.get(key, listed))   # a document keeps the first 50 in full
        return f"{total}" + (f" (the first {listed} listed below)" if total > listed else "")

    schedule = doc.get("schedule") or {}
    pairs: list[tuple[str, object]] = [
        ("ops", f"{ops.get('total', 0)} (ok {ops.get('ok', 0)}, fail {ops.get('fail', 0)}, "
                f"info {ops.get('info', 0)})"),
        ("sustained ops/s", f"{ops.get('total', 0) / elapsed:.1f}" if elapsed > 0
         else "no time elapsed"),
        ("elapsed", f"{elapsed:.1f} s"),
        ("faults", f"{sum(by_name.values())}" + (
            " (" + ", ".join(f"{k} {v}" for k, v in by_name.items()) + ")" if by_name else "")
         + (f"; schedule {schedule.get('name')!r} every {schedule.get('interval')} s"
            if schedule else "")),
        ("violations", found("violations")), ("broken fault promises", found("problems")),
        ("leaks", found("leaks")),
        *[(f"checked: {k}", v) for k, v in (doc.get("checks") or {}).items()],
        *[(k, ", ".join(f"{a} {b}" for a, b in doc[k].items()))
          for k in ("divergence", "corruption", "fallbacks") if isinstance(doc.get(k), Mapping)],
        ("agents", doc.get("agents")), ("seed", doc.get("seed")), ("runs", doc.get("runs")),
        ("shard", "/".join(str(x) for x in doc.get("shard") or ()))]
    return _facts(pairs)


def _soak_failures(doc: Mapping[str, Any], reproduce: str) -> list[Failure]:
    """Each violation with the read and the writes it contradicts, each broken fault promise,
    each leak; a failed soak with none of them still shows its summary."""
    failures = [Failure(f"{v.get('kind')} on {v.get('register')}", str(v.get("message")),
                        reproduce, (f"read:   {v.get('read')}",
                                    *[f"writes it contradicts: {w}" if i == 0 else
                                      f"                       {w}"
                                      for i, w in enumerate(v.get("writes") or ())]))
                for v in doc.get("violations") or ()]
    failures += [Failure("broken fault promise", str(p), reproduce)
                 for p in doc.get("problems") or ()]
    failures += [Failure(f"{lk.get('what')} leak in {lk.get('process')}", str(lk.get("detail")),
                         reproduce) for lk in doc.get("leaks") or ()]
    if doc.get("verdict") == "fail" and not failures:
        failures.append(Failure("the soak failed", str(doc.get("summary")), reproduce))
    return failures
