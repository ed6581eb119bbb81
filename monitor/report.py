"""The batch report: one self-contained HTML file (and a CSV) for the customer or the quality file.

What a quality engineer needs to sign off a small batch, read from the store:

- per feature, every part's measurement (true position for position features) against its
  tolerance band, with the alerts marked on the chart;
- capability Cp, Cpk and Ppk with 95 % confidence intervals (:func:`monitor.detect.capability`:
  chi-square interval for Cp, Bissell's for Cpk and Ppk; true position is judged against its one
  upper limit, so it has Cpk/Ppk but no Cp);
- the parts out of tolerance, the alerts raised and what was done about them (acknowledged, closed,
  the offset change the detector suggested), and the tools used with their life counters.

:func:`build_report` gathers the numbers into a :class:`BatchReport` (plain data, tested alone);
:func:`render_html` and :func:`render_csv` only format it. The HTML embeds plotly.js inline (from
the ``plotly`` package, no CDN), so the file opens on a machine with no network. Every text that
came from a controller or a config file (program and feature names, alert messages) is escaped.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.config import ProgramConfig, load_site
from monitor.detect import capability
from monitor.detect.capability import CapabilityResult
from monitor.errors import MonitorError
from monitor.model import Alert, AlertKind, AlertState, Feature, PartRecord, PartStatus, PositionFeature, SizeFeature
from monitor.store import Store, open_store

__all__ = [
    "AlertOutcome",
    "BatchReport",
    "FeatureReport",
    "FeatureValue",
    "ToolSummary",
    "build_report",
    "feature_capability",
    "render_csv",
    "render_html",
    "summary",
    "write_report",
]

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class FeatureValue:
    """One part's value of one feature; ``deviations`` are the axis offsets of a position feature."""

    machine: str
    part_number: int
    part_key: str
    value: float
    in_tolerance: bool
    deviations: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeatureReport:
    """Everything the report says about one feature of the program."""

    feature: Feature
    lower: float | None
    upper: float
    nominal: float
    unit: str
    values: tuple[FeatureValue, ...]
    capability: CapabilityResult | None
    missing_parts: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.feature.name

    @property
    def kind(self) -> str:
        return "position" if isinstance(self.feature, PositionFeature) else "size"

    @property
    def out_of_tolerance(self) -> list[FeatureValue]:
        return [v for v in self.values if not v.in_tolerance]

    def stats(self) -> dict[str, float | None]:
        xs = [v.value for v in self.values]
        return {
            "n": len(xs),
            "mean": statistics.fmean(xs) if xs else None,
            "sd": statistics.stdev(xs) if len(xs) >= 2 else None,
            "min": min(xs) if xs else None,
            "max": max(xs) if xs else None,
        }


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    """One alert of the batch, as it stands, with what people and the detector did about it."""

    alert: Alert
    raised_at: datetime
    raised_part: int
    acknowledged_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    offset_register: str | None
    offset_change_mm: float | None

    def action(self) -> str:
        """What was done, in words, for the report's alert table."""
        done: list[str] = []
        if self.acknowledged_at is not None:
            done.append(f"acknowledged {_when(self.acknowledged_at)}")
        if self.closed_at is not None:
            reason = f" ({self.close_reason})" if self.close_reason else ""
            done.append(f"closed {_when(self.closed_at)}{reason}")
        if not done:
            done.append("still open, not acknowledged")
        return "; ".join(done)


@dataclass(frozen=True, slots=True)
class ToolSummary:
    """A tool that cut parts of the batch, with its life counter at the first and last of them."""

    tool: str
    parts: int
    first_part: int
    last_part: int
    life_first: float | None
    life_last: float | None
    cutting_time_s: float


@dataclass(frozen=True, slots=True)
class BatchReport:
    """The numbers of one report; rendering never computes anything new."""

    site: str
    program: str
    machines: tuple[str, ...]
    first_part: int | None
    last_part: int | None
    generated: datetime
    parts: tuple[PartRecord, ...]
    features: tuple[FeatureReport, ...]
    alerts: tuple[AlertOutcome, ...]
    tools: tuple[ToolSummary, ...]

    @property
    def complete_parts(self) -> list[PartRecord]:
        return [p for p in self.parts if p.status is PartStatus.COMPLETE]

    def status_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in PartStatus}
        for p in self.parts:
            counts[p.status.value] += 1
        return counts


# ------------------------------------------------------------------------------------- building
def _feature_value(feature: Feature, part: PartRecord) -> FeatureValue | None:
    m = part.measurements
    if isinstance(feature, SizeFeature):
        value = m.get(feature.signal)
        if value is None or not math.isfinite(value):
            return None
        return FeatureValue(part.machine, part.part_number, part.key, value, feature.lower <= value <= feature.upper)
    tp = feature.true_position(m)
    if tp is None or not math.isfinite(tp):
        return None
    deviations = {axis: m[ref.signal] - ref.nominal for axis, ref in feature.axes}
    return FeatureValue(part.machine, part.part_number, part.key, tp, tp <= feature.tolerance, deviations)


def _feature_report(feature: Feature, parts: Sequence[PartRecord]) -> FeatureReport:
    values: list[FeatureValue] = []
    missing: list[int] = []
    for part in parts:
        v = _feature_value(feature, part)
        if v is None:
            missing.append(part.part_number)
        else:
            values.append(v)
    if isinstance(feature, SizeFeature):
        lower: float | None = feature.lower
        upper, nominal = feature.upper, feature.nominal
        cap = capability([v.value for v in values], feature.lower, feature.upper, CONFIDENCE) if values else None
    else:
        lower, upper, nominal = None, feature.tolerance, 0.0
        cap = capability([v.value for v in values], -math.inf, feature.tolerance, CONFIDENCE) if values else None
    return FeatureReport(feature, lower, upper, nominal, "mm", tuple(values), cap, tuple(missing))


def feature_capability(feature: Feature, parts: Sequence[PartRecord]) -> CapabilityResult | None:
    """Cp/Cpk/Ppk with intervals of one feature over ``parts`` (true position for positions), as the report shows it."""
    return _feature_report(feature, parts).capability


def _alert_outcomes(store: Store, alerts: Sequence[Alert]) -> list[AlertOutcome]:
    """Join each alert with its history (alert_events) to find when it was raised, acknowledged, closed."""
    wanted = {a.id for a in alerts}
    history: dict[str, list[Alert]] = {a: [] for a in wanted}
    after = 0
    while True:
        page = store.alert_events(after, limit=1000)
        if not page:
            break
        for seq, event in page:
            after = seq
            if event.id in wanted:
                history[event.id].append(event)
    out: list[AlertOutcome] = []
    for alert in alerts:
        events = history[alert.id] or [alert]
        first = events[0]
        acked = next((e.time for e in events if e.state is AlertState.ACKNOWLEDGED), None)
        closed = next((e.time for e in events if e.state is AlertState.CLOSED), None)
        offset: dict[str, Any] = {}
        for e in events:  # the latest suggestion the detector made while the alert lived
            candidate = e.evidence.get("offset")
            if isinstance(candidate, dict):
                offset = candidate
        change = offset.get("change_mm")
        reason = alert.evidence.get("close_reason")
        if reason is None and "closed_at_part" in alert.evidence and closed is not None:
            reason = f"back in control at part {alert.evidence['closed_at_part']}"
        out.append(
            AlertOutcome(
                alert=alert,
                raised_at=first.time,
                raised_part=int(alert.evidence.get("opened_at_part", first.part_number)),
                acknowledged_at=acked,
                closed_at=closed,
                close_reason=None if reason is None else str(reason),
                offset_register=None if offset.get("register") is None else str(offset["register"]),
                offset_change_mm=float(change) if isinstance(change, (int, float)) else None,
            )
        )
    out.sort(key=lambda o: (o.raised_at, o.alert.id))
    return out


def _lost_at(alert: Alert) -> datetime:
    """When a connection was lost (evidence ``lost_at``), else the alert's latest change."""
    text = alert.evidence.get("lost_at")
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return alert.time


def _tools(parts: Sequence[PartRecord]) -> list[ToolSummary]:
    by_tool: dict[str, list[tuple[PartRecord, Any]]] = {}
    for part in parts:
        for use in part.tools:
            by_tool.setdefault(use.tool, []).append((part, use))
    out = []
    for tool, uses in by_tool.items():
        lives_first = [u.life_start if u.life_start is not None else u.life_end for _, u in uses]
        lives_last = [u.life_end if u.life_end is not None else u.life_start for _, u in uses]
        first = next((x for x in lives_first if x is not None), None)
        last = next((x for x in reversed(lives_last) if x is not None), None)
        numbers = [p.part_number for p, _ in uses]
        parts_cut = len({p.key for p, _ in uses})  # a tool called twice in one part counts once
        out.append(ToolSummary(tool, parts_cut, min(numbers), max(numbers), first, last, sum(u.cutting_time for _, u in uses)))
    out.sort(key=lambda t: (t.first_part, t.tool))
    return out


def build_report(
    store: Store,
    program: ProgramConfig,
    *,
    site: str,
    machine: str | None = None,
    first_part: int | None = None,
    last_part: int | None = None,
    generated: datetime | None = None,
) -> BatchReport:
    """Read the batch from the store and compute everything the report shows.

    Only complete parts enter the charts and capability; incomplete and aborted parts are counted
    and listed. Alerts are those of the program (and machine) raised on a part inside the range.
    """
    parts = store.parts(machine=machine, program=program.program, first_part=first_part, last_part=last_part)
    if not parts:
        where = f" on {machine}" if machine else ""
        span = f" between parts {first_part} and {last_part}" if first_part is not None or last_part is not None else ""
        raise MonitorError(f"no parts of program {program.program}{where}{span} in the store; check `monitor parts`")
    parts.sort(key=lambda p: (p.part_number, p.machine, p.end))
    complete = [p for p in parts if p.status is PartStatus.COMPLETE]
    features = tuple(_feature_report(f, complete) for f in program.feature_models())

    lo = first_part if first_part is not None else min(p.part_number for p in parts)
    hi = last_part if last_part is not None else max(p.part_number for p in parts)
    alerts = [
        a
        for a in store.alerts(machine=machine, program=program.program)
        if lo <= a.part_number <= hi or lo <= int(a.evidence.get("opened_at_part", a.part_number)) <= hi
    ]
    # Connection losses carry no program: include those of the batch's machines while it ran.
    start, end = min(p.start for p in parts), max(p.end for p in parts)
    for m in sorted({p.machine for p in parts}):
        alerts.extend(a for a in store.alerts(machine=m) if a.kind is AlertKind.SIGNAL_LOST and start <= _lost_at(a) <= end)
    return BatchReport(
        site=site,
        program=program.program,
        machines=tuple(sorted({p.machine for p in parts})),
        first_part=lo,
        last_part=hi,
        generated=generated or datetime.now(UTC),
        parts=tuple(parts),
        features=features,
        alerts=tuple(_alert_outcomes(store, alerts)),
        tools=tuple(_tools(complete or parts)),
    )


# --------------------------------------------------------------------------------------- CSV
def _csv_columns(report: BatchReport) -> list[str]:
    cols = ["machine", "program", "part", "status", "end", "key"]
    for f in report.features:
        cols.append(f"{f.name}_tp" if f.kind == "position" else f.name)
        if isinstance(f.feature, PositionFeature):
            cols.extend(f"{f.name}_d{axis}" for axis, _ in f.feature.axes)
        cols.append(f"{f.name}_ok")
    signals = sorted({s for p in report.parts for s in p.measurements})
    return cols + signals


def render_csv(report: BatchReport) -> str:
    """The measurement table: one row per part, each feature's value and verdict, then the raw probe values."""
    by_part: dict[str, dict[str, FeatureValue]] = {}
    for f in report.features:
        for v in f.values:
            by_part.setdefault(v.part_key, {})[f.name] = v
    columns = _csv_columns(report)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for p in report.parts:
        row: dict[str, Any] = {
            "machine": p.machine,
            "program": p.program,
            "part": p.part_number,
            "status": p.status.value,
            "end": p.end.isoformat(),
            "key": p.key,
        }
        for f in report.features:
            fv = by_part.get(p.key, {}).get(f.name)
            col = f"{f.name}_tp" if f.kind == "position" else f.name
            row[col] = _num(fv.value) if fv else ""
            if fv is not None:
                for axis, d in fv.deviations.items():
                    row[f"{f.name}_d{axis}"] = _num(d)
            row[f"{f.name}_ok"] = "" if fv is None else ("yes" if fv.in_tolerance else "no")
        for s, value in p.measurements.items():
            row[s] = _num(value)
        writer.writerow([_csv_safe(row.get(c, "")) for c in columns])
    return buf.getvalue()


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if math.isfinite(x) else ""


def _csv_safe(value: Any) -> Any:
    """Text starting with = + - @ could run as a formula in a spreadsheet: prefix a quote (OWASP).

    >>> _csv_safe("=HYPERLINK(1)"), _csv_safe("-0.5"), _csv_safe("vmc-01")
    ("'=HYPERLINK(1)", '-0.5', 'vmc-01')
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -------------------------------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _index(cap: CapabilityResult | None, name: str) -> str:
    iv = getattr(cap, name) if cap is not None else None
    if iv is None:
        return "–"
    return f"{iv.value:.2f} <span class=ci>[{iv.lo:.2f}, {iv.hi:.2f}]</span>"


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
    if alert_parts:
        ys = [f.upper] * len(alert_parts)
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
    lines = [("upper", f.upper, "#c0392b", "solid"), ("nominal", f.nominal, "#7f8c8d", "dash")]
    if f.lower is not None:
        lines.append(("lower", f.lower, "#c0392b", "solid"))
        shapes.append(
            {
                "type": "rect",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": f.lower,
                "y1": f.upper,
                "fillcolor": "rgba(39,174,96,0.08)",
                "line": {"width": 0},
                "layer": "below",
            }
        )
    else:
        shapes.append(
            {
                "type": "rect",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": 0,
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
    ylabel = "true position (mm)" if f.kind == "position" else "measured (mm)"
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


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f4f6f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}.ci{color:#666;font-size:12px}.bad{color:#c0392b;font-weight:600}
.ok{color:#27ae60}.meta{color:#555;font-size:13px}.chart{width:100%;min-height:320px}.axes-chart{min-height:240px}
.sev-critical{color:#c0392b;font-weight:600}.sev-warning{color:#d35400}.sev-watch{color:#7f8c8d}
@media print{.chart{break-inside:avoid}}
"""


def render_html(report: BatchReport) -> str:
    """The whole report as one HTML document with plotly.js inline: opens offline, prints cleanly."""
    from plotly.offline import get_plotlyjs

    counts = report.status_counts()
    out: list[str] = []
    w = out.append
    title = f"Batch report — program {report.program}"
    w("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>")
    w(f"<title>{_e(title)}</title><style>{_CSS}</style>")
    w(f"<script>{get_plotlyjs()}</script></head><body>")
    w(f"<h1>{_e(title)}</h1>")
    span = f"parts {report.first_part}–{report.last_part}"
    w(
        f"<p class=meta>Site <b>{_e(report.site)}</b> · machine(s) <b>{_e(', '.join(report.machines))}</b> · {_e(span)}"
        f" · generated {_e(_when(report.generated))}</p>"
    )
    w(
        f"<p class=meta>{len(report.parts)} parts recorded: {counts['complete']} complete, {counts['incomplete']} "
        f"incomplete, {counts['aborted']} aborted. Charts and capability use complete parts only.</p>"
    )

    # Summary
    w(
        "<h2>Summary by feature</h2><table><tr><th>feature</th><th>kind</th><th>limits (mm)</th><th>n</th><th>mean</th>"
        "<th>sd</th><th>min</th><th>max</th><th>out of tol.</th><th>Cp [95% CI]</th><th>Cpk [95% CI]</th>"
        "<th>Ppk [95% CI]</th></tr>"
    )
    for f in report.features:
        st = f.stats()
        limits = f"≤ {f.upper:.4f} (TP)" if f.lower is None else f"{f.lower:.4f} – {f.upper:.4f}"
        oot = len(f.out_of_tolerance)
        w(
            f"<tr><td><a href='#feature-{_e(_anchor(f.name))}'>{_e(f.name)}</a></td><td>{f.kind}</td><td>{_e(limits)}</td>"
            f"<td class=num>{st['n']}</td><td class=num>{_fmt(st['mean'])}</td><td class=num>{_fmt(st['sd'], 5)}</td>"
            f"<td class=num>{_fmt(st['min'])}</td><td class=num>{_fmt(st['max'])}</td>"
            f"<td class='num {'bad' if oot else 'ok'}'>{oot}</td><td class=num>{_index(f.capability, 'cp')}</td>"
            f"<td class=num>{_index(f.capability, 'cpk')}</td><td class=num>{_index(f.capability, 'ppk')}</td></tr>"
        )
    w("</table>")

    # Per feature
    figures: list[tuple[str, dict[str, Any]]] = []
    for i, f in enumerate(report.features):
        div_id = f"chart-{i}"
        figures.append((div_id, _figure(report, f)))
        w(f"<h2 id='feature-{_e(_anchor(f.name))}'>{_e(f.name)}</h2>")
        if isinstance(f.feature, PositionFeature):
            axes = ", ".join(f"{a} {r.nominal:.4f} ({r.signal})" for a, r in f.feature.axes)
            w(f"<p class=meta>Position, true-position tolerance Ø{f.upper:.4f} mm; nominal {_e(axes)}.</p>")
        else:
            w(f"<p class=meta>Size {_e(f.feature.signal)}: nominal {f.nominal:.4f}, limits {f.lower:.4f} – {f.upper:.4f} mm.</p>")
        w(f"<div id='{div_id}' class='chart feature-chart' data-feature='{_e(f.name)}'></div>")
        axes_fig = _axes_figure(f)
        if axes_fig is not None:
            figures.append((f"{div_id}-axes", axes_fig))
            w(f"<div id='{div_id}-axes' class='chart axes-chart' data-feature='{_e(f.name)}'></div>")
        cap = f.capability
        if cap is not None and cap.n >= 2:
            w(
                f"<p class=meta>Capability over {cap.n} parts: σ within (moving range) {_fmt(cap.sigma_within, 5)} mm,"
                f" σ overall {_fmt(cap.sigma_overall, 5)} mm; Cp {_index(cap, 'cp')}, Cpk {_index(cap, 'cpk')},"
                f" Ppk {_index(cap, 'ppk')} (95 % intervals).</p>"
            )
        else:
            w("<p class=meta>Capability needs at least two measured parts.</p>")
        if isinstance(f.feature, PositionFeature) and f.values:
            devs = ", ".join(
                f"{axis} {statistics.fmean(v.deviations[axis] for v in f.values) * 1000:+.1f} µm" for axis, _ in f.feature.axes
            )
            w(f"<p class=meta>Mean deviation from nominal: {_e(devs)}.</p>")
        bad = f.out_of_tolerance
        if bad:
            w("<h3>Out of tolerance</h3><table><tr><th>part</th><th>machine</th><th>value (mm)</th><th>limit</th></tr>")
            for v in bad:
                w(
                    f"<tr><td class=num>{v.part_number}</td><td>{_e(v.machine)}</td><td class='num bad'>{v.value:.4f}</td>"
                    f"<td>{_e(_limit_text(f, v.value))}</td></tr>"
                )
            w("</table>")
        else:
            w("<p class=ok>No part out of tolerance.</p>")
        if f.missing_parts:
            w(f"<p class=meta>Not measured on complete parts: {_e(', '.join(map(str, f.missing_parts)))}.</p>")

    # Alerts
    w("<h2>Alerts and actions</h2>")
    if report.alerts:
        w(
            "<table><tr><th>raised</th><th>part</th><th>machine</th><th>feature</th><th>kind</th><th>severity</th>"
            "<th>message</th><th>suggested offset</th><th>what was done</th></tr>"
        )
        for o in report.alerts:
            a = o.alert
            offset = (
                f"{o.offset_register} {o.offset_change_mm:+.4f} mm"
                if o.offset_register and o.offset_change_mm is not None
                else "–"
            )
            w(
                f"<tr><td>{_e(_when(o.raised_at))}</td><td class=num>{o.raised_part}</td><td>{_e(a.machine)}</td>"
                f"<td>{_e(a.feature)}</td><td>{_e(a.kind.value)}</td><td class='sev-{_e(a.severity.value)}'>"
                f"{_e(a.severity.value)}</td><td>{_e(a.message)}</td><td>{_e(offset)}</td><td>{_e(o.action())}</td></tr>"
            )
        w("</table>")
    else:
        w("<p class=ok>No alert was raised on these parts.</p>")

    # Tools
    w("<h2>Tools used</h2>")
    if report.tools:
        w(
            "<table><tr><th>tool</th><th>parts</th><th>first part</th><th>last part</th><th>life at first part</th>"
            "<th>life at last part</th><th>cutting time (s)</th></tr>"
        )
        for t in report.tools:
            w(
                f"<tr><td>{_e(t.tool)}</td><td class=num>{t.parts}</td><td class=num>{t.first_part}</td>"
                f"<td class=num>{t.last_part}</td><td class=num>{_fmt(t.life_first, 1)}</td>"
                f"<td class=num>{_fmt(t.life_last, 1)}</td><td class=num>{t.cutting_time_s:.0f}</td></tr>"
            )
        w("</table>")
    else:
        w("<p class=meta>No tool data was recorded with these parts.</p>")

    # Parts
    w("<h2>Parts</h2><table><tr><th>part</th><th>machine</th><th>status</th><th>end</th>")
    for f in report.features:
        w(f"<th>{_e(f.name)}</th>")
    w("</tr>")
    values = {(f.name, v.part_key): v for f in report.features for v in f.values}
    for p in report.parts:
        w(
            f"<tr><td class=num>{p.part_number}</td><td>{_e(p.machine)}</td><td>{_e(p.status.value)}</td>"
            f"<td>{_e(_when(p.end))}</td>"
        )
        for f in report.features:
            fv = values.get((f.name, p.key))
            cls = "num" if fv is None or fv.in_tolerance else "num bad"
            w(f"<td class='{cls}'>{_fmt(fv.value if fv else None)}</td>")
        w("</tr>")
    w("</table>")
    w(
        "<p class=meta>Capability: Cp = (U − L) / 6σ<sub>within</sub> with the chi-square interval; Cpk and Ppk = "
        "distance of the mean to the nearer limit over 3σ (within: mean moving range / 1.128; overall: sample sd) "
        "with Bissell's interval. True position has one upper limit (no Cp). Generated by cnc-drift-monitor.</p>"
    )

    w("<script>(function(){var figs=" + _script_json([{"id": d, "fig": fig} for d, fig in figures]) + ";")
    w(
        "figs.forEach(function(f){Plotly.newPlot(f.id,f.fig.data,f.fig.layout,"
        "{responsive:true,displaylogo:false,staticPlot:false});});})();</script>"
    )
    w("</body></html>")
    return "\n".join(out)


def _anchor(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _limit_text(f: FeatureReport, value: float) -> str:
    if f.lower is None:
        return f"TP > {f.upper:.4f}"
    return f"< lower {f.lower:.4f}" if value < f.lower else f"> upper {f.upper:.4f}"


# ---------------------------------------------------------------------------------- entry point
def write_report(
    site_path: Path,
    program: str,
    out: Path,
    *,
    machine: str | None = None,
    first_part: int | None = None,
    last_part: int | None = None,
    csv_out: Path | None = None,
    generated: datetime | None = None,
) -> BatchReport:
    """What ``monitor report`` does: load the site, read the batch, write the HTML (and CSV)."""
    site = load_site(site_path)
    config = site.programs.get(program)
    if config is None:
        known = ", ".join(sorted(site.programs)) or "none"
        raise MonitorError(f"program {program!r} has no program file in {site.config.programs} (known: {known})")
    if first_part is not None and last_part is not None and first_part > last_part:
        raise MonitorError(f"--from {first_part} is after --to {last_part}")
    with open_store(site.store_path, read_only=True) as store:
        report = build_report(
            store, config, site=site.config.site, machine=machine, first_part=first_part, last_part=last_part, generated=generated
        )
    _write_text(out, render_html(report))
    if csv_out is not None:
        _write_text(csv_out, render_csv(report))
    return report


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)


def summary(report: BatchReport) -> dict[str, Any]:
    """The report's headline numbers as JSON, for ``monitor report --json``."""
    return {
        "site": report.site,
        "program": report.program,
        "machines": list(report.machines),
        "parts": len(report.parts),
        "status": report.status_counts(),
        "features": [
            {
                "feature": f.name,
                "kind": f.kind,
                **f.stats(),
                "out_of_tolerance": [v.part_number for v in f.out_of_tolerance],
                **(
                    {k: v for k, v in f.capability.as_dict().items() if k in ("cp", "cp_ci", "cpk", "cpk_ci", "ppk", "ppk_ci")}
                    if f.capability
                    else {}
                ),
            }
            for f in report.features
        ],
        "alerts": len(report.alerts),
        "open_alerts": sum(1 for o in report.alerts if o.alert.state is not AlertState.CLOSED),
        "tools": [t.tool for t in report.tools],
    }
