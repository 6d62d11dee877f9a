"""The HTML reports' structure, on synthetic inputs (``report_samples``): a failure shows its
reproduction command, the page loads nothing from the network, every plot div has its figure,
text from a report is escaped, and no plot is drawn without data. Rendering in a real browser is
``test_report_browser.py``."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import plotly.offline
import pytest
import report_samples as samples

from crashgate.backends import Capability, Declaration, Durability
from crashgate.harness.certify import Certificate, RowResult
from crashgate.harness.cli import main
from crashgate.harness.html_report import certificate_html, gate_html, soak_html
from crashgate.harness.plots import certificate_plots, gate_plots, soak_plots
from crashgate.harness.report import write_certificate
from crashgate.harness.store_latency import READ, WRITE
from crashgate.harness.verdict import Evidence, Verdict


class _Page(HTMLParser):
    """Every tag's attributes, the text of every <pre>, and each plot div's id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self.pres: list[str] = []
        self.plot_divs: list[str] = []
        self._in_pre = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.attrs.append((tag, a))
        if tag == "pre":
            self._in_pre = True
            self.pres.append("")
        if tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.plot_divs.append(a.get("id") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        if self._in_pre:
            self.pres[-1] += data


def _pages() -> dict[str, str]:
    return {"certificate": certificate_html(samples.certificate()),
            "gate": gate_html(*samples.gate()), "soak": soak_html(samples.soak())}


PAGES = _pages()


def test_a_failing_row_shows_its_reproduction_command_in_a_pre() -> None:
    page = _Page(PAGES["certificate"])
    assert samples.FAIL_REPRODUCE in page.pres
    failures = PAGES["certificate"][PAGES["certificate"].index("Failures ("):]
    # the failing rows and the unknown one are there; the passing ones are not
    assert "adr032-3: fail" in failures and "adr072-write-latency: fail" in failures
    assert "adr032-4: unknown" in failures and "adr032-1: pass" not in failures
    # a row without a reproduction of its own points at the command of the whole run
    whole = [p for p in page.pres if p.startswith(samples.certificate()["command"])]
    assert whole and "this row recorded no reproduction" in whole[0]


def test_every_soak_violation_shows_its_read_the_writes_and_the_reproduction() -> None:
    page = _Page(PAGES["soak"])
    [violation] = samples.soak()["violations"]
    details = next(p for p in page.pres if violation["read"] in p)
    assert all(w in details for w in violation["writes"])
    assert samples.SOAK_REPRODUCE in page.pres
    gate_page = _Page(PAGES["gate"])
    assert any(p.startswith("crashgate gate stage3 --from 3 --to 4") for p in gate_page.pres)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_page_is_self_contained(name: str) -> None:
    html = PAGES[name]
    page = _Page(html)
    loads = [(tag, a[k]) for tag, a in page.attrs for k in ("src", "href")
             if a.get(k) is not None]
    remote = [x for x in loads if re.match(r"^(https?:)?//", str(x[1]).strip(), re.I)]
    assert remote == [], remote
    assert not [a for tag, a in page.attrs if tag in ("script", "link") and
                (a.get("src") or a.get("href"))]
    # plotly.js inlined, and only once
    assert html.count(plotly.offline.get_plotlyjs()[:400]) == 1


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_plot_div_has_its_figure(name: str) -> None:
    html = PAGES[name]
    page = _Page(html)
    expected = int(re.search(r'<body data-plots-expected="(\d+)"', html).group(1))
    assert expected == len(page.plot_divs) > 0
    assert len(set(page.plot_divs)) == len(page.plot_divs)
    for div in page.plot_divs:
        assert len(re.findall(r"Plotly\.newPlot\(\s*\"" + re.escape(div) + "\"", html)) == 1, div


@pytest.mark.parametrize("name", sorted(PAGES))
def test_report_text_is_escaped(name: str) -> None:
    html = PAGES[name]
    assert samples.EVIL not in html
    assert "&lt;script&gt;document.body.dataset.pwned" in html
    # the only <script> tags are the page's own: the watcher, plotly.js and one per plot
    assert html.count("<script") == 2 + len(_Page(html).plot_divs)


def test_no_plot_without_data() -> None:
    cert = samples.certificate()
    for r in cert["rows"]:
        r["measured"] = {"seed": 1}
    plots = certificate_plots(cert)
    assert [p.figure for p in plots] == [None, None, None]
    assert all(p.empty for p in plots)
    html = certificate_html(cert)
    assert '<body data-plots-expected="0">' in html and _Page(html).plot_divs == []
    assert "no row of this certificate built crash states" in html
    # a ratio of zero samples is no data, not a point at zero
    zero = {"point": 0.0, "low": 0.0, "high": 0.0, "n": [0, 0]}
    assert all(p.figure is None for p in gate_plots(
        {"criteria": []}, {"latency": {"read": zero, "write": {"put": zero}}}))
    empty_soak = {**samples.soak(), "timeline": {"bucket_s": 1.0, "t": [], "throughput": {},
                                                 "latency_ms": {}}, "resources": []}
    assert [p.figure for p in soak_plots(empty_soak)] == [None] * 5
    html = soak_html(empty_soak)
    assert "no read op recorded a latency sample" in html and _Page(html).plot_divs == []


def test_the_latency_plots_hold_each_ratio_against_its_gates_threshold() -> None:
    _, read, write = certificate_plots(samples.certificate())
    for plot, gate in ((read, READ), (write, WRITE)):
        assert plot.figure is not None
        lines = [s.x0 for s in plot.figure.layout.shapes if s.line.dash == "dash"]
        assert lines == [gate.threshold]
        ratio = plot.figure.data[0]
        assert all(label.split(" · ")[1] in gate.ops for label in ratio.y)
    # writes and reads apart; an op never sampled is left out rather than drawn flat
    writes, reads = (p.figure for p in soak_plots(samples.soak())[:2])
    assert writes is not None and reads is not None
    assert {t.legendgroup for t in writes.data if t.legendgroup} == {"put", "q_update"}
    assert {t.legendgroup for t in reads.data if t.legendgroup} == {"get", "query"}
    # every fault window is shaded: four bands and one instant
    assert len([s for s in reads.layout.shapes if s.type == "rect"]) == 4
    assert len([s for s in reads.layout.shapes if s.type == "line"]) == 1


def test_writing_a_certificate_writes_its_page(tmp_path: Path) -> None:
    row = SimpleNamespace(key="adr032-1", table="ADR-032", number="1", scenario="Power loss",
                          expected="whole")
    cert = Certificate("x", "run", 1, "quick", Declaration(Durability.POWER_LOSS,
                                                           frozenset({Capability.KV})),
                       "now", command="crashgate certify x")
    cert.results.append(RowResult(row, Evidence(Verdict.FAIL, "lost", {"crash_states": 3,
                                                                       "ratio": float("nan")},
                                                reproduce="crashgate powerloss x"), 1, 0.1))
    folder = write_certificate(cert, tmp_path, "x")
    html = (folder / "report.html").read_text()
    assert "crashgate powerloss x" in _Page(html).pres
    assert json.loads((folder / "certificate.json").read_text())["rows"][0]["key"] in html


def test_the_gate_command_writes_its_page(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, evidence = samples.gate()
    path = tmp_path / "evidence-in.json"
    path.write_text(json.dumps(evidence))
    main(["gate", "stage3", "--from", "3", "--to", "4", "--evidence", str(path),
          "--out", str(tmp_path / "out")])
    capsys.readouterr()
    [folder] = (tmp_path / "out").glob("stage3/gate-3-4-*")
    page = _Page((folder / "report.html").read_text())
    gate = json.loads((folder / "gate.json").read_text())
    assert len(page.plot_divs) == 3
    failing = [c for c in gate["criteria"] if c["verdict"] in ("fail", "unknown")]
    again = [p for p in page.pres if p.startswith("crashgate gate stage3 --from 3 --to 4")]
    # every failing or unknown criterion shows the command, which judges the evidence again
    assert failing and len(again) == len(failing) + 1
    assert all(str(folder / "evidence.json") in p for p in again)
