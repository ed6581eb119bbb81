"""The batch report as one HTML page, from ``templates/report.html`` (the dashboard's way: a
:class:`string.Template` file, every value escaped before it is placed).

What a first-article or PPAP review reads: the part, drawing, revision and lot; an overview of
every feature by balloon number with each measurement source and its verdict; per feature (each
on its own printed page) the measurement systems with their resolution and repeatability study,
a run chart with the tolerance and control limits and a histogram with the same limits per
source, the capability and how it was computed, the probe-vs-CMM bias, the out-of-tolerance
parts with their disposition (what became of each part, what was done to the process); the alerts
and what was done, every action taken during the batch, the tools, every part, and the sign-off
lines.

The page embeds plotly.js inline (from the ``plotly`` package, no CDN), so it opens on a machine
with no network; charts have fixed sizes that fit an A4 or Letter page, and the print style
starts each feature on a new page and never breaks a chart. Every text that came from a
controller, a result file or a config file goes through :func:`html.escape`; the chart data is
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

from monitor.codec import action_text
from monitor.detect.attribute import wilson_interval
from monitor.detect.capability import CONFIDENCE, METHOD, CapabilityResult
from monitor.model import ActionKind, PositionFeature
from monitor.report.data import AlertOutcome, BatchReport, FeatureReport, when_text
from monitor.report.sources import FeatureValue, SourceReport
from monitor.report.verdict import Verdict, VerdictLevel

__all__ = ["CHART_WIDTH", "render_html"]

CHART_WIDTH = 700
"""CSS pixels every chart row spans: the printable width of A4 (or Letter) with 12 mm margins."""
_RUN_W, _HIST_W, _CHART_H = 440, 255, 250


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


def _verdict(v: Verdict | None) -> str:
    if v is None:
        return "–"
    cls = "ok" if v.level.accepted else ("muted" if v.level is VerdictLevel.NO_VERDICT else "bad")
    return f"<span class='verdict {cls}' title='{_e(v.reason)}'>{_e(v.level.upper())}</span>"


def render_html(report: BatchReport) -> str:
    """The whole report as one HTML document with plotly.js inline: opens offline, prints cleanly."""
    from plotly.offline import get_plotlyjs

    counts = report.status_counts()
    h = report.header
    figures: list[dict[str, Any]] = []
    sections = [_feature_section(report, i, f, figures) for i, f in enumerate(report.features)]
    index = "Ppk" if h.required_index == "ppk" else "Cpk"
    title = h.customer_part_number or report.program
    return _template("report.html").substitute(
        title=_e(f"Batch inspection report — {title}"),
        plotly=get_plotlyjs(),
        header_rows=_header_rows(report),
        rule=_e(
            f"each measured feature: {index} ≥ {h.required:g} from at least 10 parts of a stable process and no part out "
            "of tolerance; each go/no-go feature: no part failed. The worst source decides a feature."
        ),
        overall=_overall(report),
        parts=len(report.parts),
        complete=counts["complete"],
        incomplete=counts["incomplete"],
        aborted=counts["aborted"],
        not_observed=_not_observed(report, counts["not_observed"]),
        inspection=_inspection_note(report),
        summary_rows="\n".join(_summary_rows(f) for f in report.features),
        method=_e(METHOD.format(level=CONFIDENCE)),
        features="\n".join(sections),
        dispositions=_dispositions(report),
        alerts=_alerts(report.alerts),
        actions=_actions(report),
        offsets=_offsets(report),
        tools=_tools(report),
        feature_headers=_part_headers(report),
        part_rows=_part_rows(report),
        sign_off=_sign_off(report),
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


def _header_rows(report: BatchReport) -> str:
    h = report.header
    drawing = " rev. ".join(x for x in (h.drawing, h.revision) if x) or None
    lot = h.lot or (", ".join(report.lots) if report.lots else None)
    rows = [
        ("Customer", h.customer),
        ("Customer part number", h.customer_part_number),
        ("Part", h.part_name),
        ("Drawing and revision", drawing),
        ("Lot / batch", lot),
        ("Part program", report.program),
        ("Site and machine(s)", f"{report.site} · {', '.join(report.machines)}"),
        ("Parts", f"{report.first_part}–{report.last_part}"),
        ("Generated", when_text(report.generated)),
    ]
    return "\n".join(f"<tr><th>{_e(k)}</th><td>{_e(v) if v else '<span class=blank>not given</span>'}</td></tr>" for k, v in rows)


def _overall(report: BatchReport) -> str:
    levels = [f.verdict.level for f in report.features if f.verdict is not None]
    counts = {level: levels.count(level) for level in VerdictLevel if levels.count(level)}
    text = ", ".join(f"{n} {level}" for level, n in counts.items()) or "no feature"
    accepted = bool(levels) and all(level.accepted for level in levels)
    word = "<b class=ok>ALL FEATURES ACCEPTED</b>" if accepted else "<b class=bad>NOT ALL FEATURES ACCEPTED</b>"
    return f"{word} — {len(report.features)} features: {_e(text)}."


def _inspection_note(report: BatchReport) -> str:
    if not report.unmatched:
        return ""
    return (
        f"<p class=meta>{report.unmatched} inspection result(s) in the store matched no part and are not in this report "
        "(<code>monitor inspections --unmatched</code>).</p>"
    )


def _summary_rows(f: FeatureReport) -> str:
    """One row per measurement source of the feature (a feature without a source: one row)."""
    sources = f.sources or ()
    anchor = f"<a href='#feature-{_e(_anchor(f.name))}'>{_e(f.name)}</a>"
    lead = (
        f"<td rowspan={max(1, len(sources))}>{_e(f.balloon or '–')}</td><td rowspan={max(1, len(sources))}>{anchor}</td>"
        f"<td rowspan={max(1, len(sources))}>{_e(f.kind)}</td><td rowspan={max(1, len(sources))}>{_e(f.limits_text())}</td>"
    )
    if not sources:
        return _row(lead, "<td colspan=9 class=muted>no measurement source</td>", f"<td>{_verdict(f.verdict)}</td>")
    rows = []
    for i, s in enumerate(sources):
        cap = s.capability
        oot = len(s.out_of_tolerance)
        stable = "–" if cap is None or cap.n < 2 else ("yes" if cap.stable else "<b class=bad>no</b>")
        cells = [
            lead if i == 0 else "",
            f"<td>{_e(s.source)}</td><td class=num>{len(s.values)}</td>",
            f"<td class='num {'bad' if oot else 'ok'}'>{oot}</td>",
            f"<td class=num>{_index(cap, 'cp')}</td><td class=num>{_index(cap, 'cpk')}</td>",
            f"<td class=num>{_index(cap, 'pp')}</td><td class=num>{_index(cap, 'ppk')}</td>",
            f"<td>{stable}</td><td>{_verdict(s.verdict)}</td>",
            f"<td rowspan={len(sources)}>{_verdict(f.verdict)}</td>" if i == 0 else "",
        ]
        rows.append(_row(*cells))
    return "\n".join(rows)


def _feature_section(report: BatchReport, i: int, f: FeatureReport, figures: list[dict[str, Any]]) -> str:
    """One feature on its own printed page: systems, charts per source, capability, bias, bad parts."""
    if isinstance(f.feature, PositionFeature):
        axes = ", ".join(f"{a} {r.nominal:.4f} ({r.signal})" for a, r in f.feature.axes)
        description = f"Position, true-position tolerance {_e(f.limits_text())}; nominal {_e(axes)}."
    elif f.kind == "attribute":
        description = f"Go / no-go check{_e(_signal_text(f.feature.signal))}: each part passes or fails."
    else:
        kind = {"size": "Size", "angle": "Angle", "one_sided": "One-sided characteristic"}.get(f.kind, f.kind)
        description = f"{kind}{_e(_signal_text(f.feature.signal))}: nominal {f.nominal:.4f}, limits {_e(f.limits_text())}."
    systems = "".join(
        _row(
            f"<td>{_e(s.source)}</td><td>{_e(s.gauge_text())}</td><td class=num>{len(s.values)}</td>",
            f"<td class=num>{s.remeasured}</td><td>{_verdict(s.verdict)} <span class=meta>{_e(s.verdict.reason)}</span></td>",
        )
        for s in f.sources
    )
    blocks = []
    for k, s in enumerate(f.sources):
        if not s.values:
            blocks.append(f"<p class=meta>{_e(s.source)}: no value for these parts yet.</p>")
            continue
        chart_id = f"chart-{i}-{k}"
        figures.append({"id": chart_id, "fig": _run_figure(report, f, s)})
        charts = f"<div id='{chart_id}' class='chart run-chart' data-feature='{_e(f.name)}' data-source='{_e(s.source)}'></div>"
        if f.kind != "attribute":
            figures.append({"id": f"{chart_id}-hist", "fig": _histogram(f, s)})
            charts += f"<div id='{chart_id}-hist' class='chart histogram' data-feature='{_e(f.name)}'></div>"
        blocks.append(f"<h3>{_e(s.source)}</h3><div class=charts>{charts}</div><p class=meta>{_capability_text(f, s)}</p>")
    axes_chart = ""
    axes_fig = _axes_figure(f)
    if axes_fig is not None:
        figures.append({"id": f"chart-{i}-axes", "fig": axes_fig})
        axes_chart = (
            f"<div class=charts><div id='chart-{i}-axes' class='chart axes-chart' data-feature='{_e(f.name)}'></div></div>"
        )
    deviation = ""
    if isinstance(f.feature, PositionFeature) and f.values:
        devs = ", ".join(
            f"{axis} {statistics.fmean(v.deviations[axis] for v in f.values) * 1000:+.1f} µm" for axis, _ in f.feature.axes
        )
        deviation = f"<p class=meta>Probe: mean deviation from nominal {_e(devs)}.</p>"
    unit = "°" if f.unit == "deg" else f.unit
    bias = "".join(f"<li>{_e(b.text(unit))}</li>" for b in f.biases)
    bias = f"<h3>Probe against inspection (correlation of the in-process gauge)</h3><ul>{bias}</ul>" if bias else ""
    bad = [(s, v) for s in f.sources for v in s.out_of_tolerance]
    if bad:
        rows = "".join(
            _row(
                f"<td class=num>{v.part_number}</td><td>{_e(v.machine)}</td><td>{_e(s.source)}</td>",
                f"<td class='num bad'>{_value_text(f, v)}</td><td>{_e(_limit_text(f, v.value))}</td>",
                f"<td class=disposition data-part-key='{_e(v.part_key)}'>{_e(_disposition(report, f, s, v))}</td>",
            )
            for s, v in bad
        )
        head = (
            "<h3>Out of tolerance</h3><table><tr><th>part</th><th>machine</th><th>source</th><th>value</th><th>limit</th>"
            "<th>disposition</th></tr>"
        )
        out = f"{head}{rows}</table>"
    else:
        out = "<p class=ok>No part out of tolerance.</p>"
    missing = ""
    if f.missing_parts and f.feature.signals:
        missing = f"<p class=meta>Not measured by the probe on complete parts: {_e(', '.join(map(str, f.missing_parts)))}.</p>"
    return _template("feature.html").substitute(
        anchor=_e(_anchor(f.name)),
        balloon=_e(f"Balloon {f.balloon} · " if f.balloon else ""),
        name=_e(f.name),
        verdict=_verdict(f.verdict),
        verdict_reason=_e(f.verdict.reason if f.verdict else ""),
        description=description,
        systems=systems,
        sources="\n".join(blocks) + axes_chart + deviation,
        bias=bias,
        out_of_tolerance=out,
        missing=missing,
    )


def _capability_text(f: FeatureReport, s: SourceReport) -> str:
    if f.kind == "attribute":
        fails = len(s.out_of_tolerance)
        lo, hi = wilson_interval(fails, len(s.values), CONFIDENCE)
        return f"{fails} of {len(s.values)} parts failed; failing rate {lo:.1%} to {hi:.1%} ({CONFIDENCE:.0%} Wilson interval)."
    cap = s.capability
    if cap is None or cap.n < 2:
        return "Capability needs at least two measured parts."
    unit = "°" if f.unit == "deg" else f.unit
    text = (
        f"Capability over {cap.n} parts: mean {_fmt(cap.mean)} {unit}, σ within (moving range) {_fmt(cap.sigma_within, 5)},"
        f" σ overall {_fmt(cap.sigma_overall, 5)}; Cp {_index(cap, 'cp')}, Cpk {_index(cap, 'cpk')},"
        f" Pp {_index(cap, 'pp')}, Ppk {_index(cap, 'ppk')} ({cap.confidence:.0%} intervals)."
    )
    if cap.normality_p is not None:
        text += f" Shapiro-Wilk p = {cap.normality_p:.2f}" + (
            "." if cap.normal else " <b class=bad>: not normal, the indices misjudge the tails</b>."
        )
    if cap.signals:
        text += f" <b class=bad>Not stable: the indices are not meaningful</b> ({_e('; '.join(cap.signals))})."
    return text


def _value_text(f: FeatureReport, v: FeatureValue) -> str:
    return "failed" if f.kind == "attribute" else f"{v.value:.4f}"


def _disposition(report: BatchReport, f: FeatureReport, s: SourceReport, v: FeatureValue) -> str:
    """What was done with an out-of-tolerance part (its own actions) and to the process (the
    condition's offsets and tool changes), with who and when."""
    return report.disposition(f.name, s.source, v.part_key).text()


def _dispositions(report: BatchReport) -> str:
    """Every out-of-tolerance value: what became of the part, and what was done to the process."""
    rows = []
    for f in report.features:
        for s in f.sources:
            for v in s.out_of_tolerance:
                d = report.disposition(f.name, s.source, v.part_key)
                part = d.part_text() or ("no disposition recorded" if not d.process_actions else "none recorded")
                process = d.process_text() or "–"
                if not d.part_actions and not d.process_actions:
                    part = d.text()
                rows.append(
                    _row(
                        f"<td class=num>{v.part_number}</td><td>{_e(v.machine)}</td><td>{_e(f.balloon or '–')}</td>",
                        f"<td>{_e(f.name)}</td><td>{_e(s.source)}</td><td class='num bad'>{_value_text(f, v)}</td>",
                        f"<td class=part-disposition data-part-key='{_e(v.part_key)}'>{_e(part)}</td>",
                        f"<td class=process>{_e(process)}</td>",
                    )
                )
    if not rows:
        return "<p class=ok>No part was out of tolerance.</p>"
    head = (
        "<table class=dispositions><tr><th>part</th><th>machine</th><th>balloon</th><th>feature</th><th>source</th>"
        "<th>value</th><th>what became of the part (who, when)</th><th>what was done to the process (who, when)</th></tr>"
    )
    return head + "\n".join(rows) + "</table>"


def _sign_off(report: BatchReport) -> str:
    rows = "".join(
        f"<tr><th>{_e(role)}</th><td class=sign></td><td class=sign></td><td class=sign></td></tr>"
        for role in report.header.sign_off
    )
    return f"<table class=signoff><tr><th></th><th>name</th><th>signature</th><th>date</th></tr>{rows}</table>"


def _alerts(outcomes: tuple[AlertOutcome, ...]) -> str:
    if not outcomes:
        return "<p class=ok>No alert was raised on these parts.</p>"
    rows = []
    for o in outcomes:
        a = o.alert
        offset = o.offset()
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
        "<th>message</th><th>offset advised (last)</th><th>what was done (who, when)</th></tr>"
    )
    return head + "\n".join(rows) + "</table>"


def _actions(report: BatchReport) -> str:
    """Every action taken during the batch, in time order: who, through what, on which part and feature."""
    if not report.actions:
        return "<p class=meta>No action was recorded during these parts.</p>"
    rows = [
        _row(
            f"<td>{_e(when_text(a.time))}</td><td>{_e(a.user)} ({_e(a.role.value)})</td><td>{_e(a.source)}</td>",
            f"<td>{_e(a.machine)}</td><td class=num>{_e(a.part_number if a.part_number is not None else '–')}</td>",
            f"<td>{_e(a.feature or '–')}</td><td>{_e(action_text(a))}</td><td>{_e(a.condition_id or '–')}</td>",
        )
        for a in report.actions
    ]
    head = (
        "<table class=actions-log><tr><th>when</th><th>who</th><th>through</th><th>machine</th><th>part</th><th>feature</th>"
        "<th>what</th><th>condition</th></tr>"
    )
    return head + "\n".join(rows) + "</table>"


def _offsets(report: BatchReport) -> str:
    """The closed loop's audit trail: every write to a controller register, with who, when, before and after."""
    if not report.offsets:
        return "<p class=meta>No offset was written to a controller by the monitor during these parts.</p>"
    rows = []
    for a in report.offsets:
        reg = a.register.label if a.register is not None else ""
        applied = a.kind is ActionKind.OFFSET_APPLIED
        outcome = "written, read back" if applied else "REFUSED: " + a.reason.split(":", 1)[0]
        rows.append(
            _row(
                f"<td>{_e(when_text(a.time))}</td><td class=num>{_e(a.part_number)}</td><td>{_e(a.machine)}</td>",
                f"<td>{_e(a.feature)}</td><td>{_e(reg)}</td><td class=num>{_fmt(a.change)}</td>",
                f"<td class=num>{_fmt(a.old_value)}</td><td class=num>{_fmt(a.new_value if applied else None)}</td>",
                f"<td>{_e(a.user)} ({_e(a.role.value)})</td><td>{_e(outcome)}</td><td>{_e(a.reason)}</td>",
            )
        )
    head = (
        "<table><tr><th>when</th><th>after part</th><th>machine</th><th>feature</th><th>register</th><th>change (mm)</th>"
        "<th>before</th><th>after</th><th>who</th><th>outcome</th><th>how</th></tr>"
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


def _columns(report: BatchReport) -> list[tuple[FeatureReport, SourceReport]]:
    """The parts table's value columns: each feature's sources that have values."""
    return [(f, s) for f in report.features for s in f.sources if s.values]


def _part_rows(report: BatchReport) -> str:
    columns = _columns(report)
    values = {(f.name, s.source, v.part_key): v for f, s in columns for v in s.values}
    rows = []
    for p in report.parts:
        bad = list(
            dict.fromkeys(
                f.name for f, s in columns if (fv := values.get((f.name, s.source, p.key))) is not None and not fv.in_tolerance
            )
        )
        status = (
            f"<td class=bad>{_e(p.status.value)}, out of tolerance: {_e(', '.join(bad))}</td>"  # never a plain "complete"
            if bad
            else f"<td>{_e(p.status.value)}</td>"
        )
        cells = [
            f"<td class=num>{p.part_number}</td><td>{_e(p.machine)}</td>{status}",
            f"<td>{_e(when_text(p.end))}</td>",
        ]
        for f, s in columns:
            fv = values.get((f.name, s.source, p.key))
            cls = "num" if fv is None or fv.in_tolerance else "num bad"
            text = "–" if fv is None else ("pass" if fv.in_tolerance else "fail") if f.kind == "attribute" else _fmt(fv.value)
            cells.append(f"<td class='{cls}'>{text}</td>")
        rows.append(_row(*cells))
    return "\n".join(rows)


def _part_headers(report: BatchReport) -> str:
    return "".join(
        f"<th>{_e(f.name)}{'' if s.source == 'probe' else ' (' + _e(s.source) + ')'}</th>" for f, s in _columns(report)
    )


def _line(y: float, color: str, dash: str, width: float = 1.0) -> dict[str, Any]:
    return {
        "type": "line",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"color": color, "width": width, "dash": dash},
    }


def _vline(x: float, color: str, dash: str) -> dict[str, Any]:
    return {
        "type": "line",
        "yref": "paper",
        "y0": 0,
        "y1": 1,
        "x0": x,
        "x1": x,
        "line": {"color": color, "width": 1.2, "dash": dash},
    }


_LIMIT, _NOMINAL, _CONTROL = "#c0392b", "#7f8c8d", "#2471a3"


def _layout(width: int, title: str, xlabel: str, ylabel: str, shapes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "width": width,
        "height": _CHART_H,
        "margin": {"l": 62, "r": 10, "t": 28, "b": 40},
        "title": {"text": title, "font": {"size": 12}, "x": 0.02},
        "xaxis": {"title": {"text": xlabel, "font": {"size": 11}}},
        "yaxis": {"title": {"text": ylabel, "font": {"size": 11}}},
        "shapes": shapes,
        "showlegend": False,
        "plot_bgcolor": "#ffffff",
        **extra,
    }


def _run_figure(report: BatchReport, f: FeatureReport, s: SourceReport) -> dict[str, Any]:
    """Values by part: the tolerance limits (red), nominal (grey), the individuals chart's control
    limits and centre (blue, dashed), out-of-tolerance parts red, alert markers. A go/no-go source:
    each part's pass (0) or fail (1) and the failing proportion so far."""
    vs = sorted(s.values, key=lambda v: (v.part_number, v.machine))
    name = f"{f.balloon + ' · ' if f.balloon else ''}{f.name} · {s.source}"
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers" if f.kind != "attribute" else "markers",
            "name": s.source,
            "x": [v.part_number for v in vs],
            "y": [v.value for v in vs],
            "marker": {"size": 5, "color": ["#c0392b" if not v.in_tolerance else "#1f5fa8" for v in vs]},
            "line": {"width": 1, "color": "#1f5fa8"},
            "hovertemplate": "part %{x}<br>%{y:.4f}<extra></extra>",
        }
    ]
    shapes: list[dict[str, Any]] = []
    if f.kind == "attribute":
        fails, share = 0, []
        for k, v in enumerate(vs, start=1):
            fails += not v.in_tolerance
            share.append(fails / k)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "failing share",
                "x": [v.part_number for v in vs],
                "y": share,
                "line": {"color": _LIMIT, "width": 1.5},
            }
        )
        return {"data": traces, "layout": _layout(_RUN_W + _HIST_W, name, "part number", "failed (1) · share failing", shapes)}
    for y in (f.lower, f.upper):
        if y is not None:
            shapes.append(_line(y, _LIMIT, "solid", 1.5))
    if f.kind != "position":
        shapes.append(_line(f.nominal, _NOMINAL, "dot"))
    limits = s.control_limits()
    if limits is not None:
        lcl, centre, ucl = limits
        shapes += [_line(lcl, _CONTROL, "dash"), _line(centre, _CONTROL, "dot"), _line(ucl, _CONTROL, "dash")]
    mine = [o for o in report.alerts if o.alert.feature == f.name and str(o.alert.evidence.get("source", "probe")) == s.source]
    if mine:
        top = max([v.value for v in vs] + [y for y in (f.upper,) if y is not None])
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "alerts",
                "x": [o.raised_part for o in mine],
                "y": [top] * len(mine),
                "marker": {"symbol": "triangle-down", "size": 10, "color": "#e67e22"},
                "text": [f"{o.alert.severity.value} {o.alert.kind.value}: {o.alert.message}" for o in mine],
                "hovertemplate": "part %{x}<br>%{text}<extra></extra>",
            }
        )
    unit = "°" if f.unit == "deg" else f.unit
    ylabel = f"true position ({unit})" if f.kind == "position" else f"measured ({unit})"
    return {"data": traces, "layout": _layout(_RUN_W, name, "part number", ylabel, shapes, yaxis_tickformat=".4f")}


def _histogram(f: FeatureReport, s: SourceReport) -> dict[str, Any]:
    """The values' distribution with the same limits as the run chart (vertical lines)."""
    shapes = [_vline(x, _LIMIT, "solid") for x in (f.lower, f.upper) if x is not None]
    if f.kind != "position":
        shapes.append(_vline(f.nominal, _NOMINAL, "dot"))
    limits = s.control_limits()
    if limits is not None:
        shapes += [_vline(limits[0], _CONTROL, "dash"), _vline(limits[2], _CONTROL, "dash")]
    xs = [v.value for v in s.values]
    lo = min(xs + [x for x in (f.lower, f.upper) if x is not None])
    hi = max(xs + [x for x in (f.lower, f.upper) if x is not None])
    pad = (hi - lo) * 0.05 or abs(hi) * 0.001 or 0.001
    unit = "°" if f.unit == "deg" else f.unit
    trace = {
        "type": "histogram",
        "x": xs,
        "marker": {"color": "#7fa7d6", "line": {"color": "#1f5fa8", "width": 0.5}},
        "nbinsx": max(5, min(30, round(math.sqrt(len(xs)) * 1.5))),
        "hovertemplate": "%{x}<br>%{y} parts<extra></extra>",
    }
    layout = _layout(_HIST_W, "histogram", f"value ({unit})", "parts", shapes)
    layout["xaxis"]["range"] = [lo - pad, hi + pad]
    layout["xaxis"]["tickformat"] = ".3f"
    layout["xaxis"]["nticks"] = 4
    return {"data": [trace], "layout": layout}


def _axes_figure(f: FeatureReport) -> dict[str, Any] | None:
    """Deviation of each axis of a position feature by part (the probe's): which way the hole wanders.

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
        _line(y, color, dash) for y, color, dash in ((half, _LIMIT, "dot"), (-half, _LIMIT, "dot"), (0.0, _NOMINAL, "dash"))
    ]
    layout = _layout(CHART_WIDTH - 5, f"{f.name} · probe deviation per axis", "part number", "deviation (mm)", shapes)
    layout["height"] = 200
    layout["showlegend"] = True
    return {"data": traces, "layout": layout}


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
        return "go / no-go"
    if f.kind == "position":
        return f"TP > {f.upper:.4f}"
    if f.lower is not None and value < f.lower:
        return f"< lower {f.lower:.4f}"
    return f"> upper {f.upper:.4f}"
