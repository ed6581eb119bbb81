"""Typed evidence: what detection found about one feature on one part.

:class:`FeatureEvidence` is produced for every feature of every complete part (the engine keeps the
latest per machine, program and feature). It holds the facts, not words: the model chosen per axis
with its probability, the breach forecast with its interval, chart signals, run rules, re-probe
notices, attribution and the offset per axis that would re-centre the feature. Alert messages
(:mod:`monitor.detect.messages`), the dashboard and the offline API are built from it; a future
"condition" per feature can re-evaluate its advice from the latest evidence alone.

``as_dict()`` gives plain JSON-able data (no NaN, infinities as None).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, is_dataclass
from math import isfinite
from typing import Any

from monitor.detect.attribution import AttributionResult
from monitor.detect.channel import Reprobe
from monitor.detect.forecast import BreachForecast
from monitor.detect.trend import TrendFit

__all__ = ["AxisEvidence", "ChartSignal", "FeatureEvidence", "OffsetAdvice", "Unsettled", "jsonable", "moving"]

SETTLE_BAND_SIGMA = 0.5
"""Deviations of the mean smaller than this many single-part sigmas are never "off centre": an
offset that small is inside the scatter."""
OFFSET_BAND_SD = 2.0
"""The offset advice: an axis whose mean lies beyond this many standard errors (and
``SETTLE_BAND_SIGMA`` sigmas) of nominal gets an offset to re-centre it (and its condition does
not count the part towards closing)."""


@dataclass(frozen=True, slots=True)
class OffsetAdvice:
    """The offset change that would bring one axis (or the size) back to nominal.

    ``register`` names what to change (e.g. "X wear offset", "diameter wear offset"), ``change``
    is in mm (signed), ``deviation`` the fitted mean deviation it corrects and ``deviation_sd`` its
    uncertainty."""

    axis: str
    register: str
    change: float
    deviation: float
    deviation_sd: float


@dataclass(frozen=True, slots=True)
class ChartSignal:
    """A control chart (EWMA, CUSUM) or run rule signalling on one axis: the statistic, its limit and
    the direction (+1 above, -1 below the reference). ``zone``: the feature's zone chart
    (:mod:`monitor.detect.zone`, an EWMA of the mean against the tolerance zone from nominal, mm),
    on the axis carrying most of the excursion."""

    chart: str
    axis: str
    statistic: float
    limit: float
    direction: int
    rules: tuple[int, ...] = ()
    zone: bool = False


@dataclass(frozen=True, slots=True)
class AxisEvidence:
    """One channel on this part: the reading's deviation from nominal (mm), the trend fit after it,
    the standardised residual the charts saw (None while not armed or when the reading was held),
    the chart reference (mean the charts compare with, deviation from nominal), and a re-probe
    notice if the reading was held or a held one was resolved."""

    axis: str
    deviation: float
    fit: TrendFit | None
    z: float | None
    reference: float
    sigma: float
    reprobe: Reprobe | None


@dataclass(frozen=True, slots=True)
class Unsettled:
    """Why a feature without detector signals and near nominal has not settled yet (its condition
    then does not count the part towards closing): on ``axis`` the chosen drift ``model``'s mean is
    still moving by ``slope`` mm/part (at ``deviation`` mm from nominal)."""

    axis: str
    model: str
    deviation: float
    slope: float

    def words(self) -> str:
        name = "" if self.axis == "value" else f"{self.axis.upper()} "
        if self.model == "stable":
            return f"{name}still drifting by the evidence, shape not clear yet ({self.deviation * 1000:+.1f} um from nominal)"
        where = f"{self.deviation * 1000:+.1f} um from nominal"
        return f"{name}still drifting {self.slope * 1000:+.2f} um/part ({self.model} drift, {where})"


def moving(fit: TrendFit) -> bool:
    """Whether the trend says the mean is still on the move: the data favour a drift over a stable
    process (odds >= 1, all drift families together) and the chosen model has not levelled off.
    Levelled off: a step (flat since it), or a drift whose slope's 90% interval holds zero. A
    saturating drift near its plateau whose slope is still credibly non-zero counts as moving: a
    warm-up that turns into wear looks like one while it crosses nominal (measured on the demo
    cell: closing on "near the plateau" let 11 of 12 seeds close and reopen within 10 parts). A
    stable model chosen while the drift families together outweigh it counts as moving too: a drift
    of a shape the data cannot name yet."""
    if fit.drift_odds < 1.0 or fit.model == "step":
        return False
    if fit.model == "stable":
        return True
    lo, hi = fit.slope_interval
    return lo > 0.0 or hi < 0.0


@dataclass(frozen=True, slots=True)
class FeatureEvidence:
    """Everything detection knows about one feature after one part.

    ``value`` is the judged value (the size, or the true position); ``axes`` the channels;
    ``drift_axis`` the channel whose drift evidence is strongest (its model names the feature's
    model); ``forecast`` the breach forecast when a drift is evident (None otherwise) and
    ``forecast_alarm`` whether it forecasts a breach the data clearly support; ``charts`` the
    signalling charts; ``offsets`` one advice per axis whose mean sits credibly off nominal;
    ``known_step`` a recorded offset change took effect on this part; ``new_regime`` a step was
    confirmed and the trend now starts from it; ``early_risk`` over a batch's first parts, the
    posterior probability that the mean is beyond the tolerance within a few parts (None when not
    evaluated: later in the batch, or no drift evidence at all).
    """

    machine: str
    program: str
    feature: str
    part_number: int
    kind: str
    value: float
    out_of_tolerance: bool
    axes: dict[str, AxisEvidence]
    drift_axis: str
    model: str
    model_probability: float
    drift_odds: float
    forecast: BreachForecast | None
    forecast_alarm: bool
    charts: tuple[ChartSignal, ...]
    attribution: AttributionResult | None
    tool: str | None
    offsets: tuple[OffsetAdvice, ...]
    known_step: bool = False
    new_regime: bool = False
    early_risk: float | None = None

    def unsettled(self) -> Unsettled | None:
        """The first axis still moving (:func:`moving`), None when none is. Hysteresis for
        conditions: a chart's signal ends when its statistic falls back inside its limit and the
        offset advice ends when the mean is near nominal, both of which a slow drift does for a few
        parts while it crosses nominal on its way to the other limit; a condition counts a part
        towards closing only when, besides, no axis is still moving."""
        for axis, e in self.axes.items():
            if e.fit is not None and moving(e.fit):
                return Unsettled(axis, e.fit.model, e.fit.level, e.fit.slope)
        return None

    @property
    def reprobes(self) -> dict[str, Reprobe]:
        return {a: e.reprobe for a, e in self.axes.items() if e.reprobe is not None}

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the forecast without its per-part arrays)."""
        out: dict[str, Any] = jsonable(self)
        if self.forecast is not None:
            fc = out["forecast"]
            fc.pop("cones", None)
            fc["p_out"] = fc["p_out"][: self.forecast.within]
        return out


def jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and dicts as JSON-able data: NaN and infinities become None."""
    kind = type(obj)  # the common exact types first (evidence is built for every part of an open condition)
    if kind is float:
        return obj if math.isfinite(obj) else None
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is dict:
        out = {}
        for k, v in obj.items():  # the plain values (most of them) without a call each
            t = type(v)
            if t is float:
                out[k if type(k) is str else str(k)] = v if isfinite(v) else None
            elif t is str or t is int or t is bool or v is None:
                out[k if type(k) is str else str(k)] = v
            else:
                out[k if type(k) is str else str(k)] = jsonable(v)
        return out
    if kind is list or kind is tuple:
        return [jsonable(v) for v in obj]
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj
