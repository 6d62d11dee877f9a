"""Figures from report data (plotly ``graph_objects``), for the HTML reports
(``harness.html_report``): crash states checked per certificate row, latency-ratio intervals
against the gate thresholds, a gate's sample sizes, and a soak's latency quantiles, throughput,
memory and open files over time with the fault windows shaded (as Jepsen draws them).

Every function returns ``Plot``s: a figure, or, when there is no data for it, no figure and the
one line that says so. A plot is never drawn from zero samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from crashgate.harness.soak.record import WRITES
from crashgate.harness.store_latency import READ, WRITE, Gate

__all__ = ["Plot", "certificate_plots", "gate_plots", "soak_plots"]

_VERDICT_COLOUR = {"pass": "#2e7d32", "fail": "#c62828", "unknown": "#ef6c00", "n/a": "#9e9e9e"}
_OUTCOME_COLOUR = {"ok": "#2e7d32", "fail": "#c62828", "info": "#ef6c00"}
_FAULT_COLOURS = ("#e53935", "#8e24aa", "#1e88e5", "#fb8c00", "#00897b", "#6d4c41", "#546e7a")
_TIME_AXIS = "seconds since the soak started"
_TOP = {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0}   # a legend above the axes


@dataclass(frozen=True)
class Plot:
    """One plot of a report: ``title``, and ``figure`` or, without data, ``empty`` (why not)."""

    title: str
    figure: go.Figure | None = None
    empty: str = ""


def _layout(fig: go.Figure, height: int, **kw: Any) -> go.Figure:
    kw.setdefault("margin", {"l": 10, "r": 10, "t": 30, "b": 10})
    fig.update_layout(template="plotly_white", height=height, **kw)
    fig.update_yaxes(automargin=True)
    fig.update_xaxes(automargin=True)
    return fig


# --- certificates -------------------------------------------------------------------------

def certificate_plots(cert: Mapping[str, Any]) -> list[Plot]:
    """``cert``: what ``Certificate.to_json()`` gives. The crash states each row checked, and
    the latency-ratio intervals of the rows that measured latency, one plot per gate."""
    rows = [r for r in cert.get("rows", ()) if r.get("verdict") != "n/a"]
    plots = [_crash_states(rows)]
    for gate in (READ, WRITE):
        entries = [(f"{r['key']} · {op}", fig) for r in rows
                   for op, fig in _ratios(r.get("measured", {})) if op in gate.ops]
        plots.append(_ratio_plot(gate, entries))
    return plots


def _crash_states(rows: Sequence[Mapping[str, Any]]) -> Plot:
    """A horizontal bar per row that built crash states, stacked by crash model where the row
    counted them by model."""
    title = "Crash states checked per row"
    counted: list[tuple[str, Mapping[str, int]]] = []
    for r in rows:
        m = r.get("measured", {})
        by_model = m.get("states_by_model")
        label = f"{r['key']} ({r.get('verdict')})"
        if isinstance(by_model, Mapping):
            counted.append((label, {str(k): int(v) for k, v in by_model.items()}))
        elif isinstance(m.get("crash_states"), int):
            counted.append((label, {"(model not recorded)": int(m["crash_states"])}))
    if not counted:
        return Plot(title, empty="no row of this certificate built crash states")
    models = list(dict.fromkeys(model for _, by in counted for model in by))
    labels = [label for label, _ in counted]
    fig = go.Figure([go.Bar(name=model, orientation="h", y=labels,
                            x=[by.get(model, 0) for _, by in counted]) for model in models])
    totals = [sum(by.values()) for _, by in counted]
    # the total at the end of each bar: a row's small count stays readable beside a big one
    fig.add_trace(go.Scatter(x=totals, y=labels, mode="text", text=[str(t) for t in totals],
                             textposition="middle right", showlegend=False, hoverinfo="skip"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="crash states checked")
    return Plot(title, _layout(fig, 130 + 24 * len(labels), barmode="stack",
                               legend={**_TOP, "traceorder": "normal"},
                               margin={"l": 10, "r": 10, "t": 50, "b": 10}))


def _ratios(measured: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """The per-operation ratios of a latency measurement (``store_latency.measure``)."""
    for op, fig in measured.items():
        if isinstance(fig, Mapping) and all(k in fig for k in ("point", "low", "high")):
            yield op, fig


def _ratio_plot(gate: Gate, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> Plot:
    """Each ratio with its interval and its A/A ratio, against ``gate``'s threshold."""
    title = f"{gate.kind.capitalize()} latency ratio (candidate / baseline) vs {gate.threshold}x"
    # a ratio of zero samples, or one whose figures are not finite, is no data to draw
    entries = [(label, r) for label, r in entries
               if min(_n(r), default=1) > 0 and _finite(r, "point", "low", "high")]
    if not entries:
        return Plot(title, empty=f"no {gate.kind} latency was measured")
    labels = [label for label, _ in entries]
    fig = go.Figure()
    for name, pick, colour in (("ratio", lambda r: r, "#1565c0"),
                               ("A/A (baseline / baseline: the noise)",
                                lambda r: r.get("aa"), "#9e9e9e")):
        got = [(label, pick(r)) for label, r in entries
               if isinstance(pick(r), Mapping) and _finite(pick(r), "point", "low", "high")]
        if not got:
            continue
        pts = [float(r["point"]) for _, r in got]
        fig.add_trace(go.Scatter(
            name=name, mode="markers", y=[label for label, _ in got], x=pts,
            marker={"color": colour, "size": 9},
            error_x={"type": "data", "symmetric": False,
                     "array": [float(r["high"]) - p for (_, r), p in zip(got, pts, strict=True)],
                     "arrayminus": [p - float(r["low"]) for (_, r), p in zip(got, pts,
                                                                            strict=True)]},
            hovertemplate="%{y}: %{x:.3f}<extra>" + name.split(" ")[0] + "</extra>"))
    top = max([gate.threshold] + [float(r["high"]) for _, r in entries]
              + [float(r["aa"]["high"]) for _, r in entries if isinstance(r.get("aa"), Mapping)
                 and _finite(r["aa"], "high")])
    fig.add_vline(x=gate.threshold, line_dash="dash", line_color="#c62828",
                  annotation_text=f"threshold {gate.threshold}x", annotation_position="top")
    fig.add_vline(x=1.0, line_dash="dot", line_color="#757575")
    fig.update_xaxes(title_text="ratio of medians, 95% interval", range=[0, top * 1.1])
    fig.update_yaxes(autorange="reversed")
    return Plot(title, _layout(fig, 150 + 30 * len(labels), legend=_TOP,
                               margin={"l": 10, "r": 10, "t": 60, "b": 10}))


def _finite(data: Mapping[str, Any], *keys: str) -> bool:
    try:
        return all(math.isfinite(float(data[k])) for k in keys)
    except (KeyError, TypeError, ValueError):
        return False


def _n(ratio: Mapping[str, Any]) -> list[int]:
    n = ratio.get("n")
    return [int(x) for x in n] if isinstance(n, list | tuple) else []


# --- gates --------------------------------------------------------------------------------

def gate_plots(gate: Mapping[str, Any], evidence: Mapping[str, Any]) -> list[Plot]:
    """``gate``: gate.json (``criteria``: criterion, verdict, figure, n, missing); ``evidence``:
    the evidence document it judged (``scenarios.gates``). The latency ratios against their
    thresholds, and each criterion's sample size."""
    latency = evidence.get("latency")
    plots = []
    for g in (READ, WRITE):
        data = latency.get(g.kind) if isinstance(latency, Mapping) else None
        entries: list[tuple[str, Mapping[str, Any]]] = []
        if isinstance(data, Mapping) and "point" in data:
            entries = [(f"all {g.kind} operations", data)]
        elif isinstance(data, Mapping):
            entries = list(_ratios(data))
        plots.append(_ratio_plot(g, entries))
    plots.append(_criteria_n(gate.get("criteria", ())))
    return plots


def _criteria_n(criteria: Sequence[Mapping[str, Any]]) -> Plot:
    title = "Sample size behind each criterion"
    if not criteria:
        return Plot(title, empty="the gate judged no criterion")
    labels = [_short(str(c.get("criterion", "")), 70) for c in criteria]
    ns = [int(c.get("n") or 0) for c in criteria]
    fig = go.Figure(go.Bar(
        orientation="h", y=labels, x=ns, text=[f"n={n}" for n in ns], textposition="outside",
        marker_color=[_VERDICT_COLOUR.get(str(c.get("verdict")), "#9e9e9e") for c in criteria],
        customdata=[str(c.get("verdict")) for c in criteria],
        hovertemplate="%{y}<br>n=%{x} (%{customdata})<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="n (observations); bar colour is the verdict",
                     range=[0, max(ns + [1]) * 1.2])
    return Plot(title, _layout(fig, 100 + 34 * len(labels)))


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


# --- soaks --------------------------------------------------------------------------------

def soak_plots(doc: Mapping[str, Any]) -> list[Plot]:
    """``doc``: a soak document (``crashgate-soak/1``, shape in ``harness.html_report``). Times
    are seconds since the soak started."""
    timeline = doc.get("timeline") or {}
    faults = [f for f in doc.get("faults") or () if isinstance(f.get("start"), int | float)]
    t = list(timeline.get("t") or ())
    end = float(doc.get("elapsed") or (t[-1] + float(timeline.get("bucket_s", 1)) if t else 0))
    latency = timeline.get("latency_ms") or {}
    # reads and writes apart: one figure of every op's two quantiles is a tangle of lines
    return [_latency_over_time("Write", t, {k: v for k, v in latency.items() if k in WRITES},
                               faults, end),
            _latency_over_time("Read", t, {k: v for k, v in latency.items()
                                           if k not in WRITES}, faults, end),
            _throughput(t, timeline.get("throughput") or {}, faults, end),
            *_resources(doc.get("resources") or (), faults, end)]


def _shade(fig: go.Figure, faults: Sequence[Mapping[str, Any]], end: float) -> None:
    """Each fault's window as a shaded band, one colour (and one legend entry) per fault name;
    a fault without a window (an instant) as a line."""
    colours: dict[str, str] = {}
    for f in faults:
        name = str(f.get("name", "fault"))
        colour = colours.setdefault(name, _FAULT_COLOURS[len(colours) % len(_FAULT_COLOURS)])
        start = float(f["start"])
        stop = float(f["end"]) if isinstance(f.get("end"), int | float) else end
        if stop > start:
            fig.add_vrect(x0=start, x1=stop, fillcolor=colour, opacity=0.15, line_width=0,
                          layer="below")
        else:
            fig.add_vline(x=start, line_color=colour, opacity=0.6, line_width=1)
    for name, colour in colours.items():
        # a legend entry for the fault's colour: the bands themselves have none
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"fault: {name}",
                                 marker={"symbol": "square", "size": 12, "color": colour,
                                         "opacity": 0.4}, hoverinfo="skip"))


def _has_samples(values: Sequence[Any]) -> bool:
    return any(isinstance(v, int | float) for v in values)


def _latency_over_time(kind: str, t: Sequence[float], latency: Mapping[str, Any],
                       faults: Sequence[Mapping[str, Any]], end: float) -> Plot:
    """``latency``: op -> {"p50"|"p99": one value per bucket of ``t``, None without sample}."""
    title = f"{kind} latency over time per operation (p50 solid, p99 dashed)"
    fig = go.Figure()
    palette = ("#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#4e342e",
               "#283593", "#558b2f", "#c62828", "#37474f", "#f9a825", "#5d4037")
    drawn = 0
    for i, (op, q) in enumerate(sorted(latency.items())):
        colour = palette[i % len(palette)]
        for quantile, dash in (("p50", "solid"), ("p99", "dash")):
            ys = list((q or {}).get(quantile) or ())
            if len(ys) != len(t) or not _has_samples(ys):
                continue
            drawn += 1
            fig.add_trace(go.Scatter(x=t, y=ys, mode="lines", name=f"{op} {quantile}",
                                     legendgroup=op, line={"color": colour, "dash": dash},
                                     connectgaps=False))
    if not drawn:
        return Plot(title, empty=f"no {kind.lower()} op recorded a latency sample")
    _shade(fig, faults, end)
    fig.update_xaxes(title_text=_TIME_AXIS, range=[0, end])
    # 1-2-5 ticks: plotly's default log ticks label every digit and crowd a short range
    fig.update_yaxes(title_text="latency (ms, log scale)", type="log",
                     tickvals=[m * 10.0 ** e for e in range(-3, 6) for m in (1, 2, 5)])
    # tall enough for the legend (a line per op and quantile, a square per fault) to fit
    names = len({str(f.get("name")) for f in faults})
    return Plot(title, _layout(fig, max(400, 100 + 24 * (drawn + names) + 6 * len(latency)),
                               legend={"tracegroupgap": 4}))


def _throughput(t: Sequence[float], throughput: Mapping[str, Any],
                faults: Sequence[Mapping[str, Any]], end: float) -> Plot:
    title = "Throughput over time (ops/s by outcome)"
    series = {o: list(throughput.get(o) or ()) for o in ("ok", "fail", "info")}
    series = {o: ys for o, ys in series.items() if len(ys) == len(t) and _has_samples(ys)}
    if not t or not series:
        return Plot(title, empty="no op was recorded, so there is no throughput to draw")
    fig = go.Figure([go.Scatter(x=t, y=ys, mode="lines", name=o, line_shape="hv",
                                line={"color": _OUTCOME_COLOUR[o]}) for o, ys in series.items()])
    _shade(fig, faults, end)
    fig.update_xaxes(title_text=_TIME_AXIS, range=[0, end])
    fig.update_yaxes(title_text="ops/s", rangemode="tozero")
    return Plot(title, _layout(fig, 340))


def _resources(resources: Sequence[Mapping[str, Any]], faults: Sequence[Mapping[str, Any]],
               end: float) -> list[Plot]:
    """Memory (RSS) and open files of every sampled process over time."""
    plots = []
    for key, what, unit in (("rss_mb", "Memory (RSS) per process", "MB"),
                            ("fds", "Open files per process", "open files")):
        fig = go.Figure()
        for r in resources:
            t, ys = list(r.get("t") or ()), list(r.get(key) or ())
            if len(t) == len(ys) and _has_samples(ys):
                fig.add_trace(go.Scatter(x=t, y=ys, mode="lines+markers", marker={"size": 3},
                                         name=f"{r.get('process')} (pid {r.get('pid')})"))
        if not fig.data:
            plots.append(Plot(what, empty=f"no process was sampled for {unit}"))
            continue
        _shade(fig, faults, end)
        fig.update_xaxes(title_text=_TIME_AXIS, range=[0, end])
        fig.update_yaxes(title_text=unit, rangemode="tozero")
        plots.append(Plot(what, _layout(fig, 320)))
    return plots
