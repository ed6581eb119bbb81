"""One feature of one program on one machine: its channels, its history, and the evidence per part.

:class:`WatchPlan` is built once per program feature when the engine starts (chart limits and the
forecast's evidence threshold solved from the program's ARL budget there, cached);
:class:`FeatureWatch` is the per-machine running state. A part becomes deviations from nominal
(one *channel* per axis for position features, one for size features,
:mod:`monitor.detect.channel`); the watch feeds them, decides whether a breach is forecast, and
returns :class:`FeatureUpdate`: typed :class:`~monitor.detect.evidence.FeatureEvidence` and the
signal per alert kind that the engine's alert book reconciles (:mod:`monitor.detect.messages`
words them). The dashboard's view of a feature is built outside detection, from
:meth:`FeatureWatch.snapshot` (:mod:`monitor.feature_view`).

**One alarm budget.** ``detection.arl0`` is the in-control average run length of the whole
program. ``1 - FORECAST_SHARE`` of the false-alarm rate ``1/arl0`` is spread evenly over the charts
of every channel (EWMA, CUSUM and the re-probe screen, whose limit is the individuals limit of that
share); the rest is the forecast's: a channel may raise the drift evidence that can lead to a
forecast at a rate of about ``FORECAST_SHARE / (arl0 * channels)`` per part, which sets the
posterior odds the trend model needs (:func:`forecast_odds`). Raising ``arl0`` therefore lowers the
forecast's false alarms too.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.detect.arl import cusum_h, ewma_limit, shewhart_limit
from monitor.detect.attribution import AttributionResult, suggest_offset
from monitor.detect.channel import Channel, ChannelSettings, ChannelStep
from monitor.detect.config import DetectionConfig
from monitor.detect.evidence import OFFSET_BAND_SD, SETTLE_BAND_SIGMA, AxisEvidence, ChartSignal, FeatureEvidence, OffsetAdvice
from monitor.detect.forecast import BreachForecast, breach_forecast, breach_forecast_compiled
from monitor.detect.trend import PHIS, TrendFit
from monitor.detect.zone import ZoneChart, ZoneResult, apl_fraction
from monitor.errors import DetectionError
from monitor.inspection.config import PROBE_SOURCE
from monitor.model import AlertKind, AttributeFeature, PartRecord, PositionFeature, SizeFeature

if TYPE_CHECKING:
    from monitor.config import ProgramConfig

__all__ = [
    "CHARTS_PER_CHANNEL",
    "EARLY_AHEAD",
    "EARLY_PARTS",
    "FORECAST_SHARE",
    "STAT_KINDS",
    "AttributePlan",
    "AxisSnapshot",
    "ChannelFeature",
    "ChartLimits",
    "FeatureSnapshot",
    "FeatureUpdate",
    "FeatureWatch",
    "ScatterPrior",
    "SharedView",
    "WatchPlan",
    "forecast_odds",
    "inspection_signal",
    "series_feature",
]

STAT_KINDS: tuple[AlertKind, ...] = (AlertKind.FORECAST, AlertKind.EWMA, AlertKind.CUSUM, AlertKind.RUN_RULE, AlertKind.REPROBE)
"""Alert kinds that close at once when a feature is re-centred by an offset change."""

FORECAST_SHARE = 0.25
"""Share of a program's false-alarm budget (1/arl0) held for the trend forecast."""

CHARTS_PER_CHANNEL = 2
"""EWMA and CUSUM share the charts' part of the budget; the re-probe screen's limit is at least
``_REPROBE_FLOOR`` (a rate far below theirs) and run rules 2-6 add their own published rates."""

_ODDS_PER_RATE = 0.0033
"""Posterior drift odds needed per unit of the inverse per-part false-alarm rate (``odds = c / rate``).

Measured with ``bench/detection.py`` on stable batches (normal, t4, AR(1) 0.3/0.6 scatter, 50 to 300
parts): evidence that reaches odds ``B`` arrives in control on fewer than ``0.05 / B`` parts, so this
keeps the forecast inside its share of the budget even before its second condition (a breach the
models agree on within the horizon) is applied."""

_REPROBE_FLOOR = 5.0
"""A reading is held for a re-probe only beyond max(individuals limit, this) predictive sds: heavy-
tailed scatter (Student t, 4 dof) then gives a notice on about 0.2% of readings, normal none."""

_CONFIRM = 3.0
"""The next reading confirms a held one when it lies beyond this many predictive sds on the same side."""

_IMPLAUSIBLE = 1000.0
"""A value further from nominal than this many tolerance widths is a probe glitch: skipped, counted."""

_WARMUP_GAP_S = 1800.0
"""An idle gap this long means the machine cooled: the next part starts a new warm-up."""

_SEARCH = 100
"""Parts ahead the forecast searches for the first out-of-tolerance part."""

EARLY_PARTS = 8
EARLY_AHEAD = 8
_EARLY_PROBABILITY = 0.30
"""**Drift from part 1.** Over a batch's first ``EARLY_PARTS`` parts (no step since; the charts still
compare them with nominal), a breach is also forecast when
the posterior probability that the mean is beyond the tolerance within ``EARLY_AHEAD`` parts
reaches ``_EARLY_PROBABILITY``: the mixture of all models weighted by the evidence, without waiting
for one drift model to win. A fast warm-up from part 1 reaches the limit within ten-odd parts, too
soon for the model choice to become clear before its first bad part. Measured on bench/detection.py's
tuning seeds (1000+): fast warm-ups flagged before the first bad part 81% -> 90% (at 0.35 over 10
parts), in-tolerance drifts with a breach forecast 2.8% -> 3.7%, in-control forecast false alarms
unchanged but for one batch of AR(1) 0.3 scatter; 0.30 instead of 0.35 caught more warm-ups (90.5%
-> 91.6%) and over 8 parts instead of 10 no fewer, with fewer forecasts on thermal growth levelling
off. On the table's seeds 0-49 (0.35/10 -> 0.30/8): fast warm-ups 88.6% -> 90.6%, leaving drifts
90.9% -> 91.4%, in-tolerance forecasts 4.0% -> 4.0%, in-control false alarms 0.37/2.28/1.19/4.59 ->
0.37/2.35/1.19/4.71 per 1000 parts (normal/AR 0.3/t4/AR 0.6). Over the first 12 parts no more
warm-ups were caught and more thermal growth levelling off got a forecast. Later in a batch a wear
drift is slower and the forecast waits for the model choice (in-tolerance steps would otherwise be
extrapolated as ramps)."""

_EARLY_ODDS_SHARE = 0.05
"""The early forecast still needs drift odds of this share of the forecast's (about 1:1 at the
default arl0 on a three-channel program), so raising ``arl0`` lowers its false alarms as well."""


ChannelFeature = SizeFeature | PositionFeature
"""Features watched through channels (charts, trend model, forecast); attributes are counted."""


def inspection_signal(feature: str, source: str) -> str:
    """The name under which an inspection source's value of a feature reaches its watch."""
    return f"@{source}:{feature}"


def series_feature(feature: ChannelFeature, source: str) -> SizeFeature:
    """The feature as an inspection source reports it: a size, angle or one-sided value as it is;
    a position as the one zone value a CMM reports (the diametral position error), judged against
    the tolerance as an upper limit (expected at half of it, as any one-sided characteristic)."""
    signal = inspection_signal(feature.name, source)
    if isinstance(feature, SizeFeature):
        return SizeFeature(feature.name, signal, feature.nominal, feature.lower, feature.upper, feature.unit, feature.kind)
    return SizeFeature(feature.name, signal, feature.tolerance / 2.0, None, feature.tolerance, "mm", "one_sided")


def _sources(program: ProgramConfig, name: str) -> list[str]:
    """The inspection sources (not the probe) that measure feature ``name``."""
    spec = program.features.get(name)
    return [] if spec is None else [s for s in spec.measured_by if s != PROBE_SOURCE]


@dataclass(frozen=True)
class AttributePlan:
    """A go/no-go feature of a program, from one source (the probe's own check, or inspection)."""

    program: str
    feature: AttributeFeature
    config: DetectionConfig
    source: str = PROBE_SOURCE

    @classmethod
    def for_program(cls, program: ProgramConfig) -> list[AttributePlan]:
        plans = []
        for f in program.feature_models():
            if isinstance(f, AttributeFeature):
                if f.signal is not None:
                    plans.append(cls(program.program, f, program.detection))
                plans += [cls(program.program, f, program.detection, s) for s in _sources(program, f.name)]
        return plans

    @property
    def label(self) -> str:
        """The feature's name, with ``@source`` for an inspection source: keys its watch and alerts."""
        return self.feature.name if self.source == PROBE_SOURCE else f"{self.feature.name}@{self.source}"

    @property
    def display(self) -> str:
        return self.feature.name if self.source == PROBE_SOURCE else f"{self.feature.name} ({self.source})"


def forecast_odds(arl0: float, channels: int) -> float:
    """Posterior odds of drift a channel's trend model needs before its forecast may alarm."""
    rate = FORECAST_SHARE / (arl0 * max(1, channels))
    return _ODDS_PER_RATE / rate


@dataclass(frozen=True, slots=True)
class ChartLimits:
    """Limits of the charts of one channel, in sigmas, the ARL each chart was given, and the drift
    odds the forecast needs."""

    ewma_lambda: float
    ewma_width: float
    cusum_k: float
    cusum_h: float
    rule1: float
    chart_arl0: float
    reprobe: float
    forecast_odds: float
    zone_width: float
    """Limit of the zone chart (:mod:`monitor.detect.zone`) beyond its acceptable process level, in
    sds of its EWMA: the two-sided EWMA limit for the program's ``arl0``, so a mean sitting on that
    level raises it about once per ``arl0`` parts (a centred one far less often)."""


@dataclass(frozen=True)
class WatchPlan:
    """The fixed part of a watch: feature, settings and the limits solved at load."""

    program: str
    feature: ChannelFeature
    config: DetectionConfig
    limits: ChartLimits
    source: str = PROBE_SOURCE
    """Who measures: the in-process probe, or an inspection source (``measured_by``: cmm, bench...)
    whose values arrive with the inspection results, in part order, whenever they come."""

    @property
    def label(self) -> str:
        """The feature's name, with ``@source`` for an inspection source: keys its watch and alerts."""
        return self.feature.name if self.source == PROBE_SOURCE else f"{self.feature.name}@{self.source}"

    @property
    def display(self) -> str:
        """The feature as messages name it: ``bore_dia``, ``bore_dia (cmm)``."""
        return self.feature.name if self.source == PROBE_SOURCE else f"{self.feature.name} ({self.source})"

    @classmethod
    def for_program(cls, program: ProgramConfig) -> list[WatchPlan]:
        """Plans of every feature and source (the probe's, and each inspection source's series); the
        program's ``arl0`` is shared by all their charts and forecasts."""
        cfg = program.detection
        watched: list[tuple[ChannelFeature, str]] = []
        for f in program.feature_models():
            if isinstance(f, AttributeFeature):
                continue
            if f.signals:
                watched.append((f, PROBE_SOURCE))
            watched += [(series_feature(f, source), source) for source in _sources(program, f.name)]
        channels = sum(len(f.axes) if isinstance(f, PositionFeature) else 1 for f, _ in watched)
        charts = channels * CHARTS_PER_CHANNEL
        chart_arl0 = cfg.arl0 * max(1, charts) / (1.0 - FORECAST_SHARE)
        try:
            rule1 = shewhart_limit(chart_arl0)
            lim = ChartLimits(
                ewma_lambda=cfg.ewma_lambda,
                ewma_width=cfg.ewma_limit if cfg.ewma_limit is not None else ewma_limit(cfg.ewma_lambda, chart_arl0),
                cusum_k=cfg.cusum_k,
                cusum_h=cfg.cusum_h if cfg.cusum_h is not None else cusum_h(cfg.cusum_k, chart_arl0, fir=cfg.cusum_fir),
                rule1=rule1,
                chart_arl0=chart_arl0,
                reprobe=max(rule1, _REPROBE_FLOOR),
                forecast_odds=forecast_odds(cfg.arl0, channels),
                zone_width=ewma_limit(cfg.ewma_lambda, cfg.arl0),
            )
        except DetectionError as exc:
            raise DetectionError(
                f"program {program.program}: {exc} (each chart needs ARL0 {chart_arl0:g}); set detection.ewma_limit"
                " or detection.cusum_h, or change arl0, ewma_lambda or cusum_k"
            ) from exc
        return [cls(program.program, f, cfg, lim, source) for f, source in watched]

    @property
    def axes(self) -> tuple[str, ...]:
        if isinstance(self.feature, PositionFeature):
            return tuple(name for name, _ in self.feature.axes)
        return ("value",)

    @property
    def nominal(self) -> float:
        return self.feature.nominal if isinstance(self.feature, SizeFeature) else 0.0

    def band(self, axis: str) -> tuple[float, float]:
        """Tolerance band of one channel's deviation from nominal (for position: +-tolerance/2 per
        axis); a side without a limit is infinite."""
        f = self.feature
        if isinstance(f, SizeFeature):
            lo = -math.inf if f.lower is None else f.lower - f.nominal
            hi = math.inf if f.upper is None else f.upper - f.nominal
            return lo, hi
        return -f.tolerance / 2, f.tolerance / 2

    def scale(self, axis: str) -> float:
        """Distance from nominal to the tolerance limit: half the band, or to the one limit there is."""
        lo, hi = self.band(axis)
        if math.isfinite(lo) and math.isfinite(hi):
            return (hi - lo) / 2.0
        return hi if math.isfinite(hi) else -lo

    def known_sigma(self, axis: str) -> float | None:
        return self.config.sigma.get(self.feature.name)

    def prior_sigma(self, axis: str) -> float:
        """Before any scatter is seen: the band is taken as +-3 ``capability`` sigma (default Cp 1.33);
        a one-sided limit as 3 ``capability`` sigma from nominal."""
        return self.scale(axis) / (3.0 * self.config.capability)

    def channel_settings(self, axis: str, prior: ScatterPrior | None = None) -> ChannelSettings:
        cfg, lim = self.config, self.limits
        lo, hi = self.band(axis)
        scale = self.scale(axis)
        return ChannelSettings(
            lower=lo,
            upper=hi,
            scale=scale,
            window=cfg.forecast_window,
            prior_sigma=prior.sigma if prior is not None else self.prior_sigma(axis),
            prior_dof=prior.dof if prior is not None else cfg.prior_dof,
            known_sigma=self.known_sigma(axis),
            setup_sd=cfg.setup_sd * scale,
            odds=lim.forecast_odds,
            ewma_lambda=lim.ewma_lambda,
            ewma_width=lim.ewma_width,
            cusum_k=lim.cusum_k,
            cusum_h=lim.cusum_h,
            cusum_fir=cfg.cusum_fir,
            rules=tuple(r for r in cfg.run_rules if r != 1),
            reprobe_limit=lim.reprobe,
            confirm_limit=_CONFIRM,
            min_parts=cfg.min_parts,
            attribution_window=max(cfg.forecast_window, 10),
            attribution_min_r=cfg.attribution_min_r,
            attribution_min_parts=min(max(cfg.forecast_min_parts, 3), max(cfg.forecast_window, 10)),
        )

    def zone_chart(self) -> ZoneChart:
        """The feature's zone chart: its axes judged together against the band or circular zone."""
        f, cfg = self.feature, self.config
        apl = apl_fraction(cfg.capability)
        if isinstance(f, PositionFeature):
            return ZoneChart(self.axes, 0.0, f.tolerance / 2.0, 0, apl, cfg.ewma_lambda, self.limits.zone_width)
        lo, hi = self.band("value")
        if math.isfinite(lo) and math.isfinite(hi):
            centre, radius, side = (lo + hi) / 2.0, (hi - lo) / 2.0, 0
        else:
            centre, radius, side = 0.0, self.scale("value"), 1 if math.isfinite(hi) else -1
        return ZoneChart(self.axes, centre, radius, side, apl, cfg.ewma_lambda, self.limits.zone_width)

    def tolerance_limits(self) -> dict[str, Any]:
        f = self.feature
        if isinstance(f, SizeFeature):
            return {"kind": f.kind, "nominal": f.nominal, "lower": f.lower, "upper": f.upper, "unit": f.unit}
        return {"kind": "position", "nominal": 0.0, "lower": None, "upper": f.tolerance, "tolerance": f.tolerance, "unit": "mm"}

    def offset_kind(self, axis: str) -> str:
        """What corrects the channel: the axis letter of a position, or the size feature's offset kind."""
        if isinstance(self.feature, PositionFeature):
            return axis
        default = "angle" if self.feature.kind == "angle" else "diameter"
        return self.config.offsets.get(self.feature.name, default)


@dataclass(frozen=True, slots=True)
class ScatterPrior:
    """What an earlier batch of the same program on the same machine taught about one channel's
    scatter: its sigma with the degrees of freedom behind it (capped), and the weights over the
    lag-1 correlations of :data:`monitor.detect.trend.PHIS`."""

    sigma: float
    dof: float
    phi: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "dof": self.dof, "phi": list(self.phi)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScatterPrior:
        phi = tuple(float(v) for v in d["phi"])
        if len(phi) != len(PHIS):
            raise ValueError("phi weights do not match the grid")
        return cls(float(d["sigma"]), float(d["dof"]), phi)


_MAX_CARRIED_DOF = 30.0
"""An earlier batch's scatter counts for at most this many parts in the next one (processes change)."""


@dataclass(frozen=True, slots=True)
class FeatureUpdate:
    """What one part did to one watch: skipped (with the counter name), or the evidence.

    ``recentred``: an offset change brought the feature back to nominal (the engine closes its
    statistical alerts at once); ``new_batch``: the part number went backwards, every detector
    restarted (with the scatter learned from the previous batch as prior) and the engine closes the
    feature's open alerts of the previous batch.
    """

    skipped: str | None = None
    evidence: FeatureEvidence | None = None
    recentred: bool = False
    new_batch: bool = False


@dataclass(frozen=True, slots=True)
class AxisSnapshot:
    """The charts' view of one channel: scatter, reference and limits (deviation units, mm)."""

    sigma: float
    sigma_known: bool
    armed: bool
    reference: float
    ewma_statistic: float
    model: str | None
    slope: float | None
    slope_interval: tuple[float, float] | None
    drift_odds: float | None


@dataclass(frozen=True, slots=True)
class FeatureSnapshot:
    """Detection's state of one feature for presentation (:mod:`monitor.feature_view` draws it)."""

    plan: WatchPlan
    history: tuple[dict[str, Any], ...]
    axes: dict[str, AxisSnapshot]
    forecast: BreachForecast | None
    last_part: int | None


@dataclass(frozen=True, slots=True)
class SharedView:
    """Where a feature stood on its latest part, as the advice of a register it shares weighs it
    (``DriftEngine._sharing``). Kept in the state, unlike the evidence, so that the first part
    after a restart is advised as the running daemon advised it."""

    part_number: int
    levels: dict[str, float]
    """Per axis, the trend fit's level (the reading's deviation without a fit), mm."""
    significant: tuple[str, ...]
    """Axes that must be corrected: the part is out of tolerance, or the axis has an offset advice."""

    @classmethod
    def of(cls, ev: FeatureEvidence) -> SharedView:
        levels = {axis: (a.fit.level if a.fit is not None else a.deviation) for axis, a in ev.axes.items()}
        offset_axes = {o.axis for o in ev.offsets}
        return cls(ev.part_number, levels, tuple(a for a in ev.axes if ev.out_of_tolerance or a in offset_axes))

    def as_dict(self) -> dict[str, Any]:
        return {"part_number": self.part_number, "levels": self.levels, "significant": list(self.significant)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SharedView:
        levels = {str(a): float(v) for a, v in d["levels"].items()}
        return cls(int(d["part_number"]), levels, tuple(str(a) for a in d["significant"]))


_REUSE_PARTS = 4
"""At most this many parts after a breach forecast it is reused (shifted) instead of computed again."""

_REUSE_SD = 0.5
"""A forecast is reused while every channel's level moved less than this many of its standard errors
from where the forecast's fit put it (and the slope less than this share of its interval's sd)."""


def _fit_key(fit: TrendFit) -> tuple[Any, ...]:
    """What the reuse rule compares: model, regime, level and its sd, slope and its sd."""
    lo, hi = fit.slope_interval
    nums = (fit.level, fit.level_sd, fit.slope, (hi - lo) / 3.29)
    return (fit.model, fit.regime_start, None, *(v if math.isfinite(v) else math.nan for v in nums))


def _shifted(fc: BreachForecast, age: int) -> BreachForecast | None:
    """The forecast made ``age`` parts ago, in parts ahead of now (None when it searched too few
    parts): the probabilities per part ahead shifted, the risk part found again in them, a
    mean-at-limit part or first-bad-part quantile already passed is the next part (it is due now)."""
    if fc.searched - age < fc.within:
        return None
    p_out = fc.p_out[age:]
    risk = None
    if fc.risk_parts is not None:
        risk = next((h for h, p in enumerate(p_out, 1) if p >= fc.threshold), None)
        if risk is None:
            return None
    mean = None if fc.mean_limit_parts is None else max(1, fc.mean_limit_parts - age)
    lo, mid, hi = fc.first_out
    first = (max(1.0, lo - age), max(1.0, mid - age), max(1.0, hi - age))
    return BreachForecast(fc.threshold, fc.within, fc.searched - age, p_out, risk, mean, first, fc.breach_share, {})


def _num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _made_state(made: tuple[BreachForecast, int, tuple[tuple[Any, ...], ...]] | None) -> dict[str, Any] | None:
    """The last computed forecast and the fits it came from, strict JSON (non-finite numbers as None)."""
    if made is None:
        return None
    fc, fed, keys = made
    return {
        "forecast": [fc.threshold, fc.within, fc.searched, list(fc.p_out), fc.risk_parts, fc.mean_limit_parts],
        "first_out": [_num(v) for v in fc.first_out],
        "breach_share": fc.breach_share,
        "fed": fed,
        "fits": [[k[0], k[1]] + [_num(v) for v in k[3:]] for k in keys],
    }


def _made_load(d: Mapping[str, Any] | None) -> tuple[BreachForecast, int, tuple[tuple[Any, ...], ...]] | None:
    if d is None:
        return None
    threshold, within, searched, p_out, risk, mean = d["forecast"]
    lo, mid, hi = (math.inf if v is None else float(v) for v in d["first_out"])
    fc = BreachForecast(
        float(threshold),
        int(within),
        int(searched),
        tuple(float(v) for v in p_out),
        None if risk is None else int(risk),
        None if mean is None else int(mean),
        (lo, mid, hi),
        float(d["breach_share"]),
        {},
    )
    keys = tuple((str(k[0]), int(k[1]), None, *(math.nan if v is None else float(v) for v in k[2:])) for k in d["fits"])
    return fc, int(d["fed"]), keys


class FeatureWatch:
    """Running state of one feature on one machine; see the module docstring."""

    def __init__(self, plan: WatchPlan, priors: Mapping[str, ScatterPrior] | None = None) -> None:
        self.plan = plan
        self._band_width = 2.0 * plan.scale(plan.axes[0])
        self._priors: dict[str, ScatterPrior] = dict(priors or {})
        self._channels = self._new_channels()
        self._zone = plan.zone_chart()
        self._parts: deque[dict[str, Any]] = deque(maxlen=plan.config.history)
        self._keys: deque[str] = deque(maxlen=64)
        self._streak: dict[str, int] = {}
        self._near_nominal = 0
        self._session_start: float | None = None
        self._last_end: float | None = None
        self._cut_time = 0.0
        self._tool: str | None = None
        self._pending_step: dict[str, float | None] | None = None
        self.last: FeatureEvidence | None = None
        self.shared: SharedView | None = None
        self._made: tuple[BreachForecast, int, tuple[tuple[Any, ...], ...]] | None = None
        self._fed = 0

    def _new_channels(self) -> dict[str, Channel]:
        out = {}
        for axis in self.plan.axes:
            prior = self._priors.get(axis)
            out[axis] = Channel(self.plan.channel_settings(axis, prior), prior.phi if prior is not None else None)
        return out

    @property
    def streaks(self) -> Mapping[str, int]:
        """Consecutive parts each alert kind has been signalling (the engine escalates on them)."""
        return self._streak

    @property
    def tool(self) -> str | None:
        return self._tool

    # ------------------------------------------------------------------------------ inputs
    def _read(self, part: PartRecord) -> tuple[float, dict[str, float]] | str:
        """(judged value, deviation per axis) or the name of the counter to bump."""
        f = self.plan.feature
        signals = (
            [("value", f.signal or "", f.nominal)]
            if isinstance(f, SizeFeature)
            else [(name, a.signal, a.nominal) for name, a in f.axes]
        )
        devs: dict[str, float] = {}
        for name, signal, nominal in signals:
            raw = part.measurements.get(signal)
            if raw is None:
                return "missing_measurement"
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                return "nonfinite_measurement"
            devs[name] = float(raw) - nominal
            if abs(devs[name]) > _IMPLAUSIBLE * self._band_width:
                return "implausible_measurement"
        if isinstance(f, SizeFeature):
            return f.nominal + devs["value"], devs
        return 2.0 * math.sqrt(sum(d * d for d in devs.values())), devs

    def _covariates(self, part: PartRecord) -> dict[str, float | None]:
        end = part.end.timestamp()
        start = part.start.timestamp()
        if self._session_start is None or (self._last_end is not None and start - self._last_end > _WARMUP_GAP_S):
            self._session_start = start
            self._cut_time = 0.0
        self._last_end = end
        cut = part.spindle.cutting_time or sum(t.cutting_time for t in part.tools)
        self._cut_time += cut if math.isfinite(cut) else 0.0
        return {
            "tool_life": self._tool_life(part),
            "cutting_time": self._cut_time,
            "spindle_load": part.spindle.mean_load,
            # a record without a cycle duration carries no real timing (offline CSV without times)
            "warmup": (end - self._session_start) / 60.0 if end > start else None,
        }

    def _tool_life(self, part: PartRecord) -> float | None:
        """Life counter of the last tool that cut, remembering its name for the alert message."""
        for use in reversed(part.tools):
            if use.life_end is not None:
                self._tool = use.tool
                return use.life_end
        return None

    def _out_of_tolerance(self, value: float) -> bool:
        f = self.plan.feature
        if isinstance(f, SizeFeature):
            return not f.in_tolerance(value)
        return value > f.tolerance

    # ------------------------------------------------------------------------------ events
    def expect_step(self, shifts: Mapping[str, float | None] | None = None) -> None:
        """A recorded offset change takes effect from the next part: every channel (or those named
        in ``shifts``, with the expected shift of its deviation in mm, None if unknown) expects a step."""
        self._pending_step = {a: (shifts or {}).get(a) for a in self.plan.axes if shifts is None or a in shifts}

    # ------------------------------------------------------------------------------ update
    def update(self, machine: str, part: PartRecord) -> FeatureUpdate:
        with np.errstate(all="ignore"):  # absurd but finite inputs must not turn into warnings
            return self._update(machine, part)

    def _update(self, machine: str, part: PartRecord) -> FeatureUpdate:
        if part.key in self._keys:
            return FeatureUpdate(skipped="duplicate_part")
        read = self._read(part)
        if isinstance(read, str):
            return FeatureUpdate(skipped=read)
        value, devs = read
        new_batch = bool(self._parts) and part.part_number < int(self._parts[-1]["part_number"])
        if new_batch:
            # part numbers started again: a new batch (new setup, maybe a new tool) is learned afresh,
            # with the scatter of this one as the prior (repeat orders are the normal case)
            self._priors = {a: self._carry(ch) for a, ch in self._channels.items()}
            self._parts.clear()
            self._channels = self._new_channels()
            self._zone.reset()
            self._streak.clear()
            self._near_nominal = 0
            self._pending_step = None
            self._made = None
        known_step = False
        if self._pending_step is not None:
            for axis, shift in self._pending_step.items():
                self._channels[axis].expect_step(shift)
            self._pending_step = None
            self._zone.reset()
            known_step = True
        self._keys.append(part.key)
        self._fed += 1
        covariates = self._covariates(part)
        scatter = {axis: ch.scatter() for axis, ch in self._channels.items()}
        steps = {axis: self._channels[axis].step(d, covariates) for axis, d in devs.items()}
        zone = self._zone_update(steps, scatter)
        held = any(s.reprobe is not None and s.reprobe.status == "held" for s in steps.values())
        self._parts.append({"part_number": part.part_number, "value": value, "deviation": devs, "reprobe": held})
        recentred = self._recentred(devs)
        if recentred:
            for ch in self._channels.values():
                ch.restart_charts(0.0)
                ch.trend.start_regime(keep=2)
            self._zone.reset()
            self._streak.clear()
            self._made = None
        evidence = self._evidence(machine, part, value, devs, steps, known_step, zone)
        self.last = evidence
        self.shared = SharedView.of(evidence)
        return FeatureUpdate(evidence=evidence, recentred=recentred, new_batch=new_batch)

    def _zone_update(self, steps: Mapping[str, ChannelStep], scatter: Mapping[str, tuple[float, float]]) -> ZoneResult | None:
        """Feed the zone chart what the re-probe screen let through (a part held back on any axis
        waits; a confirmed one comes with the next part); the result of the last value fed."""
        fed = [steps[a].fed for a in self.plan.axes]
        if any(not f for f in fed):
            return None
        result = None
        for i in range(max(len(f) for f in fed)):
            values = {a: f[min(i, len(f) - 1)] for a, f in zip(self.plan.axes, fed, strict=True)}
            result = self._zone.update(values, scatter)
        return result

    def note_signals(self, kinds: Mapping[AlertKind, bool]) -> None:
        """Which alert kinds signalled on this part (the streaks escalate chart alerts and gate re-centring)."""
        for kind, on in kinds.items():
            self._streak[str(kind)] = self._streak.get(str(kind), 0) + 1 if on else 0

    def _carry(self, ch: Channel) -> ScatterPrior:
        sigma, dof = ch.trend.sigma_posterior()
        phi = ch.trend.phi_posterior()
        # half the learned phi weights, half the default: a new setup may behave differently
        default = ch.trend.phi_prior if ch.trend.n == 0 else tuple(1.0 / len(PHIS) for _ in PHIS)
        mixed = tuple(0.5 * a + 0.5 * b for a, b in zip(phi, default, strict=True))
        return ScatterPrior(sigma, min(dof, _MAX_CARRIED_DOF), mixed)

    def _recentred(self, devs: Mapping[str, float]) -> bool:
        """Two parts in a row within 1.5 sigma of nominal while the trend level stood > 3 sigma off."""
        if not any(self._streak.get(str(k), 0) for k in STAT_KINDS):
            self._near_nominal = 0
            return False
        far_before = False
        near_now = True
        for axis, d in devs.items():
            ch = self._channels[axis]
            fit = ch.trend.fit
            s = fit.sigma if fit is not None else self.plan.prior_sigma(axis)
            if fit is not None and abs(fit.level) > 3 * s:
                far_before = True
            if abs(d) > 1.5 * s:
                near_now = False
        if near_now and (far_before or self._near_nominal):
            self._near_nominal += 1
        else:
            self._near_nominal = 0
        if self._near_nominal >= 2:
            self._near_nominal = 0
            return True
        return False

    # ------------------------------------------------------------------------------ evidence
    def _evidence(
        self,
        machine: str,
        part: PartRecord,
        value: float,
        devs: dict[str, float],
        steps: dict[str, ChannelStep],
        known: bool,
        zone: ZoneResult | None,
    ) -> FeatureEvidence:
        cfg, lim = self.plan.config, self.plan.limits
        axes: dict[str, AxisEvidence] = {}
        charts: list[ChartSignal] = []
        for axis, st in steps.items():
            ch = self._channels[axis]
            fit = ch.trend.fit
            sigma = fit.sigma if fit is not None else self.plan.prior_sigma(axis)
            axes[axis] = AxisEvidence(axis, st.deviation, fit, st.z, ch.chart.centre, sigma, st.reprobe)
            if st.ewma is not None and st.ewma.alarm:
                charts.append(ChartSignal("ewma", axis, st.ewma.statistic, st.ewma.upper, st.ewma.direction))
            if st.cusum is not None and st.cusum.alarm:
                charts.append(ChartSignal("cusum", axis, max(st.cusum.upper, st.cusum.lower), st.cusum.h, st.cusum.direction))
            if st.rules is not None and st.rules.alarm:
                charts.append(ChartSignal("run_rule", axis, st.rules.z, lim.rule1, st.rules.direction, st.rules.fired))
            if st.reprobe is not None and st.reprobe.status == "confirmed" and 1 in cfg.run_rules:
                side = 1 if st.reprobe.reading > st.reprobe.expected else -1
                charts.append(ChartSignal("run_rule", axis, st.reprobe.sds, lim.reprobe, side, (1,)))
        if zone is not None and zone.alarm and zone.n >= cfg.min_parts:
            charts.append(ChartSignal("ewma", zone.axis, zone.statistic, zone.limit, zone.direction, zone=True))
        fits = {a: e.fit for a, e in axes.items() if e.fit is not None}
        drift_axis = max(axes, key=lambda a: fits[a].drift_odds if a in fits else -1.0)
        head = fits.get(drift_axis)
        forecast = None
        alarm = False
        gate = any(ch.trend.fit is not None and ch.trend.fit.drift_odds >= lim.forecast_odds for ch in self._channels.values())
        n = min((f.n for f in fits.values()), default=0)
        if gate and len(fits) == len(self._channels) and n >= cfg.forecast_min_parts:
            forecast = self._reused_forecast()
            alarm = self._alarms(forecast)
        early_risk = None
        if (
            not alarm
            and len(fits) == len(self._channels)
            and cfg.min_parts <= n <= EARLY_PARTS
            and all(ch.trend.at_batch_start for ch in self._channels.values())
            and any(f.drift_odds >= lim.forecast_odds * _EARLY_ODDS_SHARE for f in fits.values())
        ):
            early_risk = self._mean_at_limit_risk(EARLY_AHEAD)
            if early_risk >= _EARLY_PROBABILITY:
                forecast = forecast if forecast is not None else self._forecast()
                alarm = forecast.due_parts is not None
        attribution: AttributionResult | None = None
        if alarm or charts:
            attribution = self._channels[drift_axis].attribution.last
        offsets = []
        for axis, fit in fits.items():
            if abs(fit.level) > max(OFFSET_BAND_SD * fit.level_sd, SETTLE_BAND_SIGMA * fit.sigma):
                o = suggest_offset(fit.level, self.plan.offset_kind(axis))
                offsets.append(OffsetAdvice(axis, o.register, o.change, fit.level, fit.level_sd))
        return FeatureEvidence(
            machine=machine,
            program=self.plan.program,
            feature=self.plan.feature.name,
            part_number=part.part_number,
            kind=self.plan.feature.kind if isinstance(self.plan.feature, SizeFeature) else "position",
            value=value,
            out_of_tolerance=self._out_of_tolerance(value),
            axes=axes,
            drift_axis=drift_axis,
            model=head.model if head is not None else "stable",
            model_probability=head.model_probability if head is not None else 1.0,
            drift_odds=head.drift_odds if head is not None else 0.0,
            forecast=forecast,
            forecast_alarm=alarm,
            charts=tuple(charts),
            attribution=attribution,
            tool=self._tool,
            offsets=tuple(offsets),
            known_step=known,
            new_regime=any(s.new_regime for s in steps.values()),
            early_risk=early_risk,
        )

    def _mean_at_limit_risk(self, ahead: int) -> float:
        """Posterior probability (the mixture of every model, stable included) that the feature's
        mean is beyond the tolerance within ``ahead`` parts: the mean, not single parts, so a
        wide prior scatter early in a batch does not raise it."""
        draws = [ch.trend.draws(ahead, axis=i) for i, ch in enumerate(self._channels.values())]
        f = self.plan.feature
        if isinstance(f, SizeFeature):
            m = draws[0].mean
            low = -math.inf if f.lower is None else f.lower - f.nominal  # one-sided: no limit on that side
            high = math.inf if f.upper is None else f.upper - f.nominal
            out = np.asarray((m < low) | (m > high))
        else:
            r0 = f.tolerance / 2.0
            out = np.asarray(sum(d.mean**2 for d in draws) > r0 * r0)
        return float(out.any(axis=1).mean())

    def _alarms(self, forecast: BreachForecast) -> bool:
        return forecast.breach and forecast.breach_share >= self.plan.config.breach_confidence

    def _reused_forecast(self) -> BreachForecast:
        """The breach forecast, reused (shifted by the parts since) while every channel's fit stayed
        where the forecast's fit predicted it (same model and regime, level and slope within
        ``_REUSE_SD`` of their sd) for at most ``_REUSE_PARTS`` parts and the shift changes no alarm
        decision; computed again otherwise."""
        keys = tuple(_fit_key(ch.trend.fit) for ch in self._channels.values() if ch.trend.fit is not None)
        made = self._made
        if made is not None and self._alarms(made[0]) and len(keys) == len(made[2]):
            fc, fed, old = made
            age = self._fed - fed
            if 1 <= age <= _REUSE_PARTS and all(
                k[0] == o[0]
                and k[1] == o[1]
                and abs(k[3] - (o[3] + o[5] * age)) <= _REUSE_SD * o[4]
                and abs(k[5] - o[5]) <= _REUSE_SD * o[6]
                for k, o in zip(keys, old, strict=True)
            ):
                out = _shifted(fc, age)
                if out is not None and self._alarms(out):
                    return out
        fc = self._forecast()
        # kept as far as a reuse reads it (the risk part found again, the evidence's horizon): small in the state
        keep = max(fc.within, fc.risk_parts or 0) + _REUSE_PARTS
        self._made = (dataclasses.replace(fc, p_out=fc.p_out[:keep]), self._fed, keys)
        return fc

    def _forecast(self, search: int = _SEARCH, cones: bool = False) -> BreachForecast:
        cfg = self.plan.config
        f = self.plan.feature
        lo, hi = self.plan.band("value") if isinstance(f, SizeFeature) else (None, None)
        tolerance = None if isinstance(f, SizeFeature) else f.tolerance
        if not cones:
            # drawn and searched in one compiled loop, as far as the parts ahead decide the forecast
            posteriors = [(axis, ch.trend.posterior_arrays(axis=k)) for k, (axis, ch) in enumerate(self._channels.items())]
            return breach_forecast_compiled(
                posteriors,
                lower=lo,
                upper=hi,
                tolerance=tolerance,
                threshold=cfg.breach_probability,
                within=cfg.horizon,
                search=search,
            )
        draws = [(axis, ch.trend.draws(search, axis=k)) for k, (axis, ch) in enumerate(self._channels.items())]
        return breach_forecast(
            draws, lower=lo, upper=hi, tolerance=tolerance, threshold=cfg.breach_probability, within=cfg.horizon, cones=cones
        )

    # ------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {
            "parts": list(self._parts),
            "keys": list(self._keys),
            "streak": dict(self._streak),
            "near_nominal": self._near_nominal,
            "session_start": self._session_start,
            "last_end": self._last_end,
            "cut_time": self._cut_time,
            "tool": self._tool,
            "priors": {a: p.as_dict() for a, p in self._priors.items()},
            "pending_step": self._pending_step,
            "channels": {a: c.state() for a, c in self._channels.items()},
            "zone": self._zone.state(),
            "shared": self.shared.as_dict() if self.shared is not None else None,
            "fed": self._fed,
            "made": _made_state(self._made),
        }

    @classmethod
    def from_state(cls, plan: WatchPlan, state: Mapping[str, Any]) -> FeatureWatch:
        priors = {a: ScatterPrior.from_dict(p) for a, p in state.get("priors", {}).items() if a in plan.axes}
        watch = cls(plan, priors)
        for p in state.get("parts", []):
            watch._parts.append(
                {
                    "part_number": int(p["part_number"]),
                    "value": float(p["value"]),
                    "deviation": {k: float(v) for k, v in p["deviation"].items()},
                    "reprobe": bool(p.get("reprobe", False)),
                }
            )
        watch._keys.extend(str(k) for k in state.get("keys", []))
        watch._streak = {k: int(v) for k, v in state.get("streak", {}).items()}
        watch._near_nominal = int(state.get("near_nominal", 0))
        watch._session_start = state.get("session_start")
        watch._last_end = state.get("last_end")
        watch._cut_time = float(state.get("cut_time", 0.0))
        watch._tool = state.get("tool")
        pending = state.get("pending_step")
        watch._pending_step = None if pending is None else {str(a): (None if v is None else float(v)) for a, v in pending.items()}
        for axis, s in state.get("channels", {}).items():
            if axis in watch._channels:
                watch._channels[axis].load(s)
        if "zone" in state:
            watch._zone.load(state["zone"])
        shared = state.get("shared")
        watch.shared = SharedView.from_dict(shared) if shared is not None else None
        watch._fed = int(state.get("fed", 0))
        watch._made = _made_load(state.get("made"))
        return watch

    # ------------------------------------------------------------------------------ presentation data
    def snapshot(self, horizon: int | None = None) -> FeatureSnapshot:
        """The state presentation needs (history, chart references, forecast cone)."""
        with np.errstate(all="ignore"):
            axes = {}
            for axis, ch in self._channels.items():
                fit = ch.trend.fit
                axes[axis] = AxisSnapshot(
                    sigma=fit.sigma if fit is not None else self.plan.prior_sigma(axis),
                    sigma_known=ch.settings.known_sigma is not None,
                    armed=ch.fed >= self.plan.config.min_parts,
                    reference=ch.chart.centre,
                    ewma_statistic=float(ch.ewma.state()["z"]),
                    model=fit.model if fit is not None else None,
                    slope=fit.slope if fit is not None else None,
                    slope_interval=fit.slope_interval if fit is not None else None,
                    drift_odds=fit.drift_odds if fit is not None else None,
                )
            ready = self._parts and all(ch.trend.fit is not None for ch in self._channels.values())
            forecast = self._forecast(horizon or self.plan.config.horizon, cones=True) if ready else None
        return FeatureSnapshot(
            plan=self.plan,
            history=tuple(self._parts),
            axes=axes,
            forecast=forecast,
            last_part=int(self._parts[-1]["part_number"]) if self._parts else None,
        )
