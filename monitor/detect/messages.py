"""Words for people: the signal per alert kind that one part's evidence raises.

The engine's alert book turns these into managed alerts. Messages speak of deviation from nominal
(what a machinist compares with the drawing), name the model behind a forecast, give the part where
the risk threshold is crossed and the part where the mean is expected to reach the limit, and
suggest an offset for every axis whose mean sits credibly off nominal. Each signal also carries
the numbers as JSON-able evidence (older keys kept: ``parts_to_breach``, ``breach_interval``,
``slope_mm_per_part``, ``level_deviation_mm``, ``offset``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from monitor.detect.attribution import COVARIATES
from monitor.detect.evidence import ChartSignal, FeatureEvidence, OffsetAdvice, jsonable
from monitor.detect.runrules import RULE_TEXT
from monitor.detect.watch import EARLY_AHEAD, WatchPlan
from monitor.model import AlertKind, PositionFeature, Severity, SizeFeature

__all__ = ["Signal", "signals"]


class Signal:
    """An alert kind signalling on this part: how bad, one line for people, numbers for machines.

    The words and numbers are built only when asked for (the alert book needs them when an alert
    opens or escalates, not on every part it stays as it is)."""

    __slots__ = ("_build", "_built", "severity")

    def __init__(self, severity: Severity, build: Callable[[], tuple[str, dict[str, Any]]]) -> None:
        self.severity = severity
        self._build = build
        self._built: tuple[str, dict[str, Any]] | None = None

    def _get(self) -> tuple[str, dict[str, Any]]:
        if self._built is None:
            self._built = self._build()
        return self._built

    @property
    def message(self) -> str:
        return self._get()[0]

    @property
    def evidence(self) -> dict[str, Any]:
        return self._get()[1]


def _um(x: float) -> str:
    return f"{x * 1000:+.1f} um"


def _name(plan: WatchPlan, axis: str) -> str:
    return plan.display if axis == "value" else f"{plan.display} {axis.upper()}"


def _offsets_text(offsets: tuple[OffsetAdvice, ...], sigma: float, level: float) -> str:
    """ "suggest X wear offset -0.0120 mm, Y wear offset +0.0040 mm", or why no change is advised."""
    if not offsets:
        return f"mean still near nominal ({_um(level)}), no offset change yet"
    return "suggest " + ", ".join(f"{o.register} {o.change:+.4f} mm" for o in offsets)


def _offset_evidence(offsets: tuple[OffsetAdvice, ...]) -> dict[str, Any]:
    first = offsets[0] if offsets else None
    return {
        "offset": {"register": first.register, "change_mm": first.change} if first else None,
        "offsets": [
            {"axis": o.axis, "register": o.register, "change_mm": o.change, "deviation_mm": o.deviation} for o in offsets
        ],
    }


def _model_text(ev: FeatureEvidence, plan: WatchPlan) -> str:
    """ "linear drift +0.42 um/part", "saturating drift levelling off at +18.0 um", "step +6.0 um 4 parts ago"."""
    fit = ev.axes[ev.drift_axis].fit
    if fit is None:
        return "no fit yet"
    if fit.model == "linear" or fit.model == "onset":
        words = "linear drift" if fit.model == "linear" else "drift that started recently,"
        return f"{words} {fit.slope * 1000:+.2f} um/part"
    if fit.model == "saturating" and fit.plateau is not None:
        return f"saturating drift {fit.slope * 1000:+.2f} um/part, levelling off at {_um(fit.plateau)}"
    if fit.model == "step" and fit.step_parts_ago is not None:
        return f"level step {fit.step_parts_ago} parts ago"
    return "stable"


def _limit_text(plan: WatchPlan, ev: FeatureEvidence) -> str:
    f = plan.feature
    if isinstance(f, PositionFeature):
        return f"the {f.tolerance:.3f} TP tolerance"
    level = ev.axes["value"].fit.level if ev.axes["value"].fit is not None else 0.0
    if f.upper is not None and (level >= 0 or f.lower is None):
        return f"the upper limit {f.upper:.4f}"
    return f"the lower limit {f.lower:.4f}"


def _deviation_text(plan: WatchPlan, ev: FeatureEvidence) -> str:
    parts = []
    for axis, a in ev.axes.items():
        level = a.fit.level if a.fit is not None else a.deviation
        parts.append(f"{'' if axis == 'value' else axis.upper() + ' '}{_um(level)}")
    return ", ".join(parts) + " from nominal"


def _forecast(plan: WatchPlan, ev: FeatureEvidence, tool: str | None) -> Signal | None:
    fc = ev.forecast
    if fc is None or not ev.forecast_alarm or fc.due_parts is None:
        return None
    cfg = plan.config
    due = fc.due_parts
    severity = (
        Severity.CRITICAL if due <= cfg.critical_parts else Severity.WARNING if due <= cfg.warning_parts else Severity.WATCH
    )

    def build() -> tuple[str, dict[str, Any]]:
        return _forecast_words(plan, ev, tool, due)

    return Signal(severity, build)


def _forecast_words(plan: WatchPlan, ev: FeatureEvidence, tool: str | None, due: int) -> tuple[str, dict[str, Any]]:
    fc = ev.forecast
    assert fc is not None
    now = ev.part_number
    fit = ev.axes[ev.drift_axis].fit
    assert fit is not None
    lo, mid, hi = fc.first_out
    texts = [f"{plan.display} {_deviation_text(plan, ev)}, {_model_text(ev, plan)} (model {fit.model_probability:.0%} likely)"]
    if ev.early_risk is not None:
        texts.append(
            f"drifting since the batch start: mean out of tolerance within {EARLY_AHEAD} parts {ev.early_risk:.0%} likely"
        )
    if fc.risk_parts is not None:
        texts.append(f"P(out of tolerance) reaches {fc.threshold:.0%} at part {now + fc.risk_parts}")
    if fc.mean_limit_parts is not None:
        texts.append(f"mean reaches {_limit_text(plan, ev)} at part {now + fc.mean_limit_parts}")
    if math.isfinite(mid):
        upper = f"{now + hi:.0f}" if math.isfinite(hi) else f"after {now + fc.searched}"
        texts.append(f"first bad part expected ~{now + mid:.0f} (90%: {now + lo:.0f}-{upper})")
    attr = ev.attribution
    if attr is not None and attr.cause is not None and attr.r is not None:
        cause = COVARIATES.get(attr.cause, attr.cause)
        if attr.cause == "tool_life" and tool:
            cause = f"tool {tool} life"
        texts.append(f"tracks {cause} (r={attr.r:.2f})")
    texts.append(_offsets_text(ev.offsets, fit.sigma, fit.level))
    evidence: dict[str, Any] = {
        "model": fit.model,
        "model_probability": fit.model_probability,
        "families": fit.families,
        "drift_odds": fit.drift_odds,
        "axis": ev.drift_axis,
        "parts_to_breach": float(due),
        "risk_part": now + fc.risk_parts if fc.risk_parts is not None else None,
        "mean_limit_part": now + fc.mean_limit_parts if fc.mean_limit_parts is not None else None,
        "first_out_part": now + mid if math.isfinite(mid) else None,
        "first_out_interval": [now + lo, now + hi if math.isfinite(hi) else None],
        "breach_interval": [lo, hi if math.isfinite(hi) else None],
        "breach_share": fc.breach_share,
        "early_risk": ev.early_risk,
        "breach_probability": fc.threshold,
        "horizon": fc.within,
        "slope_mm_per_part": fit.slope,
        "slope_interval": list(fit.slope_interval),
        "level_deviation_mm": fit.level,
        "plateau_mm": fit.plateau,
        "sigma_mm": fit.sigma,
        "phi": fit.phi,
        "correlations": attr.correlations if attr is not None else {},
        "likely_cause": attr.cause if attr is not None else None,
        "tool": tool,
        **_offset_evidence(ev.offsets),
    }
    return "; ".join(texts), jsonable(evidence)


def _chart(plan: WatchPlan, ev: FeatureEvidence, kind: AlertKind, streak: int) -> Signal | None:
    hits = [c for c in ev.charts if c.chart == str(kind)]
    if not hits:
        return None
    cfg = plan.config
    severity = Severity.WARNING if streak > cfg.escalate_after else Severity.WATCH
    return Signal(severity, lambda: _chart_words(plan, ev, kind, hits, streak))


def _chart_words(
    plan: WatchPlan, ev: FeatureEvidence, kind: AlertKind, hits: list[ChartSignal], streak: int
) -> tuple[str, dict[str, Any]]:
    lim = plan.limits
    c: ChartSignal = max(hits, key=lambda h: abs(h.statistic) / h.limit if h.limit else 0.0)
    a = ev.axes[c.axis]
    level = a.fit.level if a.fit is not None else a.deviation
    shift = level - a.reference
    name = _name(plan, c.axis)
    where = f"{name} mean {_um(level)} from nominal ({_um(shift)} against the level the batch started at"
    if kind is AlertKind.EWMA and c.zone:
        side = "position" if isinstance(plan.feature, PositionFeature) else "mean"
        text = (
            f"{plan.display} {side} walking out of its tolerance zone: its running mean (EWMA) sits {c.statistic * 1000:.1f} um"
            f" from {'nominal' if side == 'position' else 'the middle of the band'}, beyond the {c.limit * 1000:.1f} um a capable"
            f" process stays within; {name} mean {_um(level)} from nominal"
        )
        ev_extra: dict[str, Any] = {"zone_ewma_mm": c.statistic, "zone_limit_mm": c.limit}
    elif kind is AlertKind.EWMA:
        text = f"{where}; EWMA {c.statistic:+.2f} beyond +-{c.limit:.2f})"
        ev_extra = {"ewma": c.statistic, "limit": c.limit}
    elif kind is AlertKind.CUSUM:
        side = "above" if c.direction > 0 else "below"
        text = f"{where}; running {side} it, CUSUM {c.statistic:.1f} > h {c.limit:.1f})"
        ev_extra = {"cusum": c.statistic, "h": c.limit}
    else:
        rules = "; ".join(RULE_TEXT[i] + (" (confirmed by the next part)" if i == 1 else "") for i in c.rules)
        text = f"{name}: {rules}; mean {_um(level)} from nominal"
        ev_extra = {"rules": list(c.rules), "z": c.statistic}
    fit = a.fit
    evidence = {
        **ev_extra,
        "axis": c.axis,
        "axes": sorted({h.axis for h in hits}),
        "level_deviation_mm": level,
        "shift_mm": shift,
        "sigma_mm": a.sigma,
        "phi": fit.phi if fit is not None else None,
        "model": fit.model if fit is not None else None,
        "parts_signalling": streak,
        "chart_arl0": lim.chart_arl0,
        **_offset_evidence(ev.offsets),
    }
    sigma = fit.sigma if fit is not None else a.sigma
    return f"{text}; {_offsets_text(ev.offsets, sigma, level)}", jsonable(evidence)


def _reprobe(plan: WatchPlan, ev: FeatureEvidence) -> Signal | None:
    held = {a: r for a, r in ev.reprobes.items() if r.status == "held"}
    if not held:
        return None
    axis, r = next(iter(held.items()))
    name = _name(plan, axis)
    text = (
        f"{name} reading {_um(r.reading)} from nominal is {abs(r.sds):.1f} sd from the expected {_um(r.expected)}: "
        "re-probe the part (a single reading like this is not used for drift detection unless the next part confirms it)"
    )
    evidence = {"axis": axis, "reading_mm": r.reading, "expected_mm": r.expected, "sd_mm": r.sd, "sds": r.sds}
    return Signal(Severity.WATCH, lambda: (text, jsonable(evidence)))


def _out_of_tolerance(plan: WatchPlan, ev: FeatureEvidence) -> Signal | None:
    if not ev.out_of_tolerance:
        return None
    f = plan.feature
    devs = {a: e.deviation for a, e in ev.axes.items()}
    held = any(r.status == "held" for r in ev.reprobes.values())
    note = "; a single reading far from the others: re-probe before scrapping" if held else ""
    if isinstance(f, SizeFeature):
        value = ev.value
        side, limit = ("above upper", f.upper) if f.upper is not None and value > f.upper else ("below lower", f.lower)
        msg = f"{plan.display} out of tolerance: {value:.4f} {f.unit} {side} limit {limit:.4f} (nominal {f.nominal:.4f}){note}"
        evd: dict[str, Any] = {"value": value, "deviation": devs["value"], "lower": f.lower, "upper": f.upper}
    else:
        axes = ", ".join(f"{a.upper()} {d:+.4f} mm" for a, d in devs.items())
        msg = f"{plan.display} out of tolerance: true position {ev.value:.4f} exceeds {f.tolerance:.3f} ({axes}){note}"
        evd = {"true_position": ev.value, "tolerance": f.tolerance, "deviation": dict(devs)}
    evd["reprobe"] = held
    return Signal(Severity.CRITICAL, lambda: (msg, jsonable(evd)))


def signals(plan: WatchPlan, ev: FeatureEvidence, streaks: Mapping[str, int], tool: str | None) -> dict[AlertKind, Signal | None]:
    """The signal (or None: quiet) of every alert kind detection raises, for this part's evidence.

    ``streaks`` are the consecutive parts each kind signalled before this one (chart alerts become
    warnings after ``escalate_after``)."""
    return {
        AlertKind.OUT_OF_TOLERANCE: _out_of_tolerance(plan, ev),
        AlertKind.FORECAST: _forecast(plan, ev, tool),
        AlertKind.EWMA: _chart(plan, ev, AlertKind.EWMA, streaks.get(str(AlertKind.EWMA), 0) + 1),
        AlertKind.CUSUM: _chart(plan, ev, AlertKind.CUSUM, streaks.get(str(AlertKind.CUSUM), 0) + 1),
        AlertKind.RUN_RULE: _chart(plan, ev, AlertKind.RUN_RULE, streaks.get(str(AlertKind.RUN_RULE), 0) + 1),
        AlertKind.REPROBE: _reprobe(plan, ev),
    }
