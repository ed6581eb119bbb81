"""The batch report as one HTML page, from ``templates/report.html`` (the dashboard's way: a
:class:`string.Template` file, every value escaped before it is placed).

The page embeds plotly.js inline (from the ``plotly`` package, no CDN), so it opens on a machine
with no network and prints cleanly. Every text that came from a controller or a config file
(program and feature names, alert messages) goes through :func:`html.escape`; the chart data is
JSON made safe inside a ``<script>`` element.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from monitor.detect.capability import CapabilityResult
from monitor.model import PositionFeature
from monitor.report.data import AlertOutcome, BatchReport, FeatureReport, when_text

__all__ = ["render_html"]


@cache
def _template(name: str) -> Template:
    return Template(resources.files("monitor.report").joinpath("templates", name).read_text(encoding="utf-8"))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _index(cap: CapabilityResult | None, name: str) -> str:
    iv = getattr(cap, name) if cap is not None else None
    if iv is None:
        return "–"
    return f"{iv.value:.2f} <span class=ci>[{iv.lo:.2f}, {iv.hi:.2f}]</span>"


def _row(*cells: str) -> str:
    """A table row of ready (escaped) cells: ``("<td ...>", ...)``."""
    return "<tr>" + "".join(cells) + "</tr>"


def render_html(report: BatchReport) -> str:
    """The whole report as one HTML document with plotly.js inline: opens offline, prints cleanly."""
    from plotly.offline import get_plotlyjs

    counts = report.status_counts()
    figures: list[dict[str, Any]] = []
    sections = [_feature_section(report, i, f, figures) for i, f in enumerate(report.features)]
    return _template("report.html").substitute(
        title=_e(f"Batch report — program {report.program}"),
        plotly=get_plotlyjs(),
        site=_e(report.site),
        machines=_e(", ".join(report.machines)),
        span=_e(f"parts {report.first_part}–{report.last_part}"),
        generated=_e(when_text(report.generated)),
        parts=len(report.parts),
        complete=counts["complete"],
        incomplete=counts["incomplete"],
        aborted=counts["aborted"],
        not_observed=_not_observed(report, counts["not_observed"]),
        summary_rows="\n".join(_summary_row(f) for f in report.features),
        features="\n".join(sections),
        alerts=_alerts(report.alerts),
        tools=_tools(report),
        feature_headers="".join(f"<th>{_e(f.name)}</th>" for f in report.features),
        part_rows=_part_rows(report),
        figures=_script_json(figures),
    )


def _not_observed(report: BatchReport, count: int) -> str:
    """The parts the controller counted while their data did not reach us, run by run: why and when."""
    if not count:
        return ""
    rows = []
    for run, note in report.not_observed():
        first, last = run[0], run[-1]
        numbers = str(first.part_number) if len(run) == 1 else f"{first.part_number}–{last.part_number}"
        counters = str(first.counter) if len(run) == 1 else f"{first.counter}–{last.counter}"
        rows.append(
            _row(
                f"<td class=num>{_e(numbers)}</td><td class=num>{_e(counters)}</td><td>{_e(first.machine)}</td>",
                f"<td>{_e(note.removeprefix('not observed: '))}</td>",
            )
        )
    return (
        f"<p class=meta><b class=bad>{count} parts not observed</b> (data lost): the controller's part counter moved "
        "through them while their data did not reach the monitor; they have no measurements.</p>"
        "<h2>Parts not observed</h2><table><tr><th>parts</th><th>counter</th><th>machine</th>"
        "<th>why and when (controller clock)</th></tr>" + "".join(rows) + "</table>"
    )


def _summary_row(f: FeatureReport) -> str:
    st = f.stats()
    limits = f.limits_text()
    oot = len(f.out_of_tolerance)
    return _row(
        f"<td><a href='#feature-{_e(_anchor(f.name))}'>{_e(f.name)}</a></td>",
        f"<td>{f.kind}</td><td>{_e(limits)}</td><td class=num>{st['n']}</td>",
        f"<td class=num>{_fmt(st['mean'])}</td><td class=num>{_fmt(st['sd'], 5)}</td>",
        f"<td class=num>{_fmt(st['min'])}</td><td class=num>{_fmt(st['max'])}</td>",
        f"<td class='num {'bad' if oot else 'ok'}'>{oot}</td><td class=num>{_index(f.capability, 'cp')}</td>",
        f"<td class=num>{_index(f.capability, 'cpk')}</td><td class=num>{_index(f.capability, 'ppk')}</td>",
    )


def _feature_section(report: BatchReport, i: int, f: FeatureReport, figures: list[dict[str, Any]]) -> str:
    """One feature: description, charts (their figures appended to ``figures``), capability, out of tolerance."""
    chart_id = f"chart-{i}"
    figures.append({"id": chart_id, "fig": _figure(report, f)})
    if isinstance(f.feature, PositionFeature):
        axes = ", ".join(f"{a} {r.nominal:.4f} ({r.signal})" for a, r in f.feature.axes)
        description = f"Position, true-position tolerance {_e(f.limits_text())}; nominal {_e(axes)}."
    elif f.kind == "attribute":
        description = f"Go / no-go check{_e(_signal_text(f.feature.signal))}: each part passes or fails."
    else:
        kind = {"size": "Size", "angle": "Angle", "one_sided": "One-sided characteristic"}.get(f.kind, f.kind)
        description = f"{kind}{_e(_signal_text(f.feature.signal))}: nominal {f.nominal:.4f}, limits {_e(f.limits_text())}."
    axes_chart = ""
    axes_fig = _axes_figure(f)
    if axes_fig is not None:
        figures.append({"id": f"{chart_id}-axes", "fig": axes_fig})
        axes_chart = f"<div id='{chart_id}-axes' class='chart axes-chart' data-feature='{_e(f.name)}'></div>"
    cap = f.capability
    if cap is not None and cap.n >= 2:
        capability = (
            f"Capability over {cap.n} parts: σ within (moving range) {_fmt(cap.sigma_within, 5)},"
            f" σ overall {_fmt(cap.sigma_overall, 5)}; Cp {_index(cap, 'cp')}, Cpk {_index(cap, 'cpk')},"
            f" Pp {_index(cap, 'pp')}, Ppk {_index(cap, 'ppk')} ({cap.confidence:.0%} intervals)."
        )
        if cap.signals:
            capability += f" <b class=bad>Not stable: the indices are not meaningful</b> ({_e('; '.join(cap.signals))})."
    elif f.kind == "attribute":
        fails = len(f.out_of_tolerance)
        capability = f"{fails} of {len(f.values)} parts failed."
    else:
        capability = "Capability needs at least two measured parts."
    deviation = ""
    if isinstance(f.feature, PositionFeature) and f.values:
        devs = ", ".join(
            f"{axis} {statistics.fmean(v.deviations[axis] for v in f.values) * 1000:+.1f} µm" for axis, _ in f.feature.axes
        )
        deviation = f"<p class=meta>Mean deviation from nominal: {_e(devs)}.</p>"
    if f.out_of_tolerance:
        rows = "".join(
            _row(
                f"<td class=num>{v.part_number}</td><td>{_e(v.machine)}</td><td class='num bad'>{v.value:.4f}</td>",
                f"<td>{_e(_limit_text(f, v.value))}</td>",
            )
            for v in f.out_of_tolerance
        )
        head = "<h3>Out of tolerance</h3><table><tr><th>part</th><th>machine</th><th>value (mm)</th><th>limit</th></tr>"
        out = f"{head}{rows}</table>"
    else:
        out = "<p class=ok>No part out of tolerance.</p>"
    missing = ""
    if f.missing_parts:
        missing = f"<p class=meta>Not measured on complete parts: {_e(', '.join(map(str, f.missing_parts)))}.</p>"
    return _template("feature.html").substitute(
        anchor=_e(_anchor(f.name)),
        name=_e(f.name),
        description=description,
        chart_id=chart_id,
        axes_chart=axes_chart,
        capability=capability,
        deviation=deviation,
        out_of_tolerance=out,
        missing=missing,
    )


def _alerts(outcomes: tuple[AlertOutcome, ...]) -> str:
    if not outcomes:
        return "<p class=ok>No alert was raised on these parts.</p>"
    rows = []
    for o in outcomes:
        a = o.alert
        offset = (
            f"{o.offset_register} {o.offset_change_mm:+.4f} mm" if o.offset_register and o.offset_change_mm is not None else "–"
        )
        rows.append(
            _row(
                f"<td>{_e(when_text(o.raised_at))}</td><td class=num>{o.raised_part}</td><td>{_e(a.machine)}</td>",
                f"<td>{_e(a.feature)}</td><td>{_e(a.kind.value)}</td>",
                f"<td class='sev-{_e(a.severity.value)}'>{_e(a.severity.value)}</td><td>{_e(a.message)}</td>",
                f"<td>{_e(offset)}</td><td>{_e(o.action())}</td>",
            )
        )
    head = (
        "<table><tr><th>raised</th><th>part</th><th>machine</th><th>feature</th><th>kind</th><th>severity</th>"
        "<th>message</th><th>suggested offset</th><th>what was done</th></tr>"
    )
    return head + "\n".join(rows) + "</table>"


def _tools(report: BatchReport) -> str:
    if not report.tools:
        return "<p class=meta>No tool data was recorded with these parts.</p>"
    rows = [
        _row(
            f"<td>{_e(t.tool)}</td><td class=num>{t.parts}</td><td class=num>{t.first_part}</td>",
            f"<td class=num>{t.last_part}</td><td class=num>{_fmt(t.life_first, 1)}</td>",
            f"<td class=num>{_fmt(t.life_last, 1)}</td><td class=num>{t.cutting_time_s:.0f}</td>",
        )
        for t in report.tools
    ]
    head = (
        "<table><tr><th>tool</th><th>parts</th><th>first part</th><th>last part</th><th>life at first part</th>"
        "<th>life at last part</th><th>cutting time (s)</th></tr>"
    )
    return head + "\n".join(rows) + "</table>"


def _part_rows(report: BatchReport) -> str:
    values = {(f.name, v.part_key): v for f in report.features for v in f.values}
    rows = []
    for p in report.parts:
        cells = [
            f"<td class=num>{p.part_number}</td><td>{_e(p.machine)}</td><td>{_e(p.status.value)}</td>",
            f"<td>{_e(when_text(p.end))}</td>",
        ]
        for f in report.features:
            fv = values.get((f.name, p.key))
            cls = "num" if fv is None or fv.in_tolerance else "num bad"
            cells.append(f"<td class='{cls}'>{_fmt(fv.value if fv else None)}</td>")
        rows.append(_row(*cells))
    return "\n".join(rows)


def _figure(report: BatchReport, f: FeatureReport) -> dict[str, Any]:
    """The plotly figure of one feature as a plain dict (traces, tolerance band, alert markers)."""
    traces: list[dict[str, Any]] = []
    machines = sorted({v.machine for v in f.values})
    for machine in machines:
        vs = [v for v in f.values if v.machine == machine]
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": machine if len(machines) > 1 else f.name,
                "x": [v.part_number for v in vs],
                "y": [v.value for v in vs],
                "marker": {"size": 6, "color": ["#c0392b" if not v.in_tolerance else "#1f5fa8" for v in vs]},
                "line": {"width": 1, "color": "#1f5fa8"},
                "hovertemplate": "part %{x}<br>%{y:.4f} mm<extra></extra>",
            }
        )
    alert_parts = [o for o in report.alerts if o.alert.feature == f.name]
    top = f.upper if f.upper is not None else max((v.value for v in f.values), default=f.nominal)
    if alert_parts:
        ys = [top] * len(alert_parts)
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "alerts",
                "x": [o.raised_part for o in alert_parts],
                "y": ys,
                "marker": {"symbol": "triangle-down", "size": 11, "color": "#e67e22"},
                "text": [f"{o.alert.severity.value} {o.alert.kind.value}: {o.alert.message}" for o in alert_parts],
                "hovertemplate": "part %{x}<br>%{text}<extra></extra>",
            }
        )
    shapes: list[dict[str, Any]] = []
    lines = [("nominal", f.nominal, "#7f8c8d", "dash")] if f.kind != "attribute" else []
    lines += [(name, y, "#c0392b", "solid") for name, y in (("upper", f.upper), ("lower", f.lower)) if y is not None]
    if f.upper is not None:
        shapes.append(
            {
                "type": "rect",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": f.lower if f.lower is not None else 0,
                "y1": f.upper,
                "fillcolor": "rgba(39,174,96,0.08)",
                "line": {"width": 0},
                "layer": "below",
            }
        )
    for _label, y, color, dash in lines:
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": y,
                "y1": y,
                "line": {"color": color, "width": 1, "dash": dash},
            }
        )
    ylabel = {"position": "true position (mm)", "attribute": "failed (1) / passed (0)", "angle": "measured (°)"}.get(
        f.kind, "measured (mm)"
    )
    return {
        "data": traces,
        "layout": {
            "height": 320,
            "margin": {"l": 70, "r": 20, "t": 30, "b": 45},
            "xaxis": {"title": {"text": "part number"}},
            "yaxis": {"title": {"text": ylabel}, "tickformat": ".4f"},
            "shapes": shapes,
            "showlegend": len(traces) > 1,
            "plot_bgcolor": "#ffffff",
            "title": {"text": "", "font": {"size": 13}},
        },
    }


def _axes_figure(f: FeatureReport) -> dict[str, Any] | None:
    """Deviation of each axis of a position feature by part: which way the hole wanders, for the offset.

    The lines at +-tolerance/2 bound one axis when the others sit on nominal.
    """
    if not isinstance(f.feature, PositionFeature) or not f.values:
        return None
    colors = {"x": "#1f5fa8", "y": "#8e44ad", "z": "#16a085"}
    traces = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": f"d{axis}",
            "x": [v.part_number for v in f.values],
            "y": [v.deviations[axis] for v in f.values],
            "marker": {"size": 5, "color": colors.get(axis, "#555")},
            "line": {"width": 1, "color": colors.get(axis, "#555")},
            "hovertemplate": f"part %{{x}}<br>d{axis} %{{y:.4f}} mm<extra></extra>",
        }
        for axis, _ in f.feature.axes
    ]
    half = f.feature.tolerance / 2
    shapes = [
        {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y, "line": {"color": color, "width": 1, "dash": dash}}
        for y, color, dash in ((half, "#c0392b", "dot"), (-half, "#c0392b", "dot"), (0.0, "#7f8c8d", "dash"))
    ]
    return {
        "data": traces,
        "layout": {
            "height": 240,
            "margin": {"l": 70, "r": 20, "t": 20, "b": 40},
            "showlegend": True,
            "xaxis": {"title": {"text": "part number"}},
            "yaxis": {"title": {"text": "deviation (mm)"}, "tickformat": ".4f"},
            "shapes": shapes,
        },
    }


def _script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element (no ``</script>``, no HTML comment openers)."""
    text = json.dumps(obj, allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _anchor(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _signal_text(signal: str | None) -> str:
    return f" ({signal})" if signal else ""


def _limit_text(f: FeatureReport, value: float) -> str:
    if f.kind == "attribute":
        return "failed"
    if f.kind == "position":
        return f"TP > {f.upper:.4f}"
    if f.lower is not None and value < f.lower:
        return f"< lower {f.lower:.4f}"
    return f"> upper {f.upper:.4f}"
