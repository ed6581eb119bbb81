"""One feature of one program on one machine: its history, its detectors and what they signal.

:class:`WatchPlan` is built once per program feature when the engine starts (chart limits solved
from the program's ARL target there, cached); :class:`FeatureWatch` is the per-machine running
state. The watch turns a part into deviations from nominal (one *channel* per axis for position
features, one for size features), feeds the detectors and answers, per alert kind, "signalling
now, with this severity and message" or "quiet". The engine's alert book decides what that means
for open alerts.

Self-starting charts: each deviation is turned into Quesenberry's Q statistic against the mean
and standard deviation of the parts before it (or the known sigma of the program file), which is
exactly N(0, 1) for an in-control process whatever its unknown centre and scatter. EWMA, CUSUM and
run rules run on Q from ``min_parts`` parts on, so their ARL-solved limits hold from the start of
a batch; a part that makes a chart signal is not absorbed, so a shift is not learned away. The
trend forecast, the out-of-tolerance check and the offset advice work against nominal and the
tolerance instead.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from scipy.special import ndtri

from monitor.detect.arl import cusum_h, ewma_limit, shewhart_limit
from monitor.detect.attribution import COVARIATES, Attribution, OffsetSuggestion, suggest_offset
from monitor.detect.capability import Capability
from monitor.detect.config import DetectionConfig
from monitor.detect.cusum import Cusum
from monitor.detect.ewma import Ewma
from monitor.detect.runrules import RULE_TEXT, RunRules
from monitor.detect.selfstart import QStatistic
from monitor.detect.trend import TrendForecast, parts_to_breach, position_out_probability
from monitor.errors import DetectionError
from monitor.model import AlertKind, Feature, PartRecord, PositionFeature, Severity, SizeFeature

if TYPE_CHECKING:
    from monitor.config import ProgramConfig

__all__ = ["STAT_KINDS", "ChartLimits", "FeatureWatch", "Outcome", "Signal", "WatchPlan"]

STAT_KINDS: tuple[AlertKind, ...] = (AlertKind.FORECAST, AlertKind.EWMA, AlertKind.CUSUM, AlertKind.RUN_RULE)
"""Alert kinds that close at once when a feature is re-centred by an offset change."""

_FORECAST_SHARE = 0.5
"""Share of a program's false-alarm budget (1/arl0) reserved for the trend forecast."""

_IMPLAUSIBLE = 1000.0
"""A value further from nominal than this many tolerance widths is a probe glitch: skipped, counted."""

_WARMUP_GAP_S = 1800.0
"""An idle gap this long means the machine cooled: the next part starts a new warm-up."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A detector kind signalling on this part: how bad, one line for people, numbers for machines."""

    severity: Severity
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one part did to one watch: skipped (with the counter name) or a signal map per kind.

    ``recentred`` says an offset change brought the feature back to nominal: the engine closes its
    statistical alerts at once instead of waiting for ``close_after`` quiet parts. ``new_batch``
    says the part number went backwards (a new batch): every detector restarted, and the engine
    closes the feature's open alerts of the previous batch.
    """

    skipped: str | None = None
    signals: Mapping[AlertKind, Signal | None] = field(default_factory=dict)
    recentred: bool = False
    new_batch: bool = False


@dataclass(frozen=True, slots=True)
class ChartLimits:
    """Limits of the charts of one channel, in sigmas, and the ARL each chart was given."""

    ewma_lambda: float
    ewma_width: float
    cusum_k: float
    cusum_h: float
    rule1: float
    chart_arl0: float


@dataclass(frozen=True)
class WatchPlan:
    """The fixed part of a watch: feature, settings and the limits solved at load."""

    program: str
    feature: Feature
    config: DetectionConfig
    limits: ChartLimits

    @classmethod
    def for_program(cls, program: ProgramConfig) -> list[WatchPlan]:
        """Plans of every feature; the program's ``arl0`` is shared by all its charts (false-alarm rates add up)."""
        cfg = program.detection
        features = program.feature_models()
        # EWMA, CUSUM and run rule 1 per channel share half the false-alarm budget; the other half is
        # held back for the trend forecast, whose in-control rate depends on capability and cannot be
        # solved for (bench/detection.py measures it)
        per_channel = 2 + (1 if 1 in cfg.run_rules else 0)
        charts = sum(len(f.axes) if isinstance(f, PositionFeature) else 1 for f in features) * per_channel
        chart_arl0 = cfg.arl0 * max(1, charts) / (1.0 - _FORECAST_SHARE)
        try:
            lim = ChartLimits(
                ewma_lambda=cfg.ewma_lambda,
                ewma_width=cfg.ewma_limit if cfg.ewma_limit is not None else ewma_limit(cfg.ewma_lambda, chart_arl0),
                cusum_k=cfg.cusum_k,
                cusum_h=cfg.cusum_h if cfg.cusum_h is not None else cusum_h(cfg.cusum_k, chart_arl0, fir=cfg.cusum_fir),
                rule1=shewhart_limit(chart_arl0),
                chart_arl0=chart_arl0,
            )
        except DetectionError as exc:
            raise DetectionError(
                f"program {program.program}: {exc} (each chart needs ARL0 {chart_arl0:g}); set detection.ewma_limit"
                " or detection.cusum_h, or change arl0, ewma_lambda or cusum_k"
            ) from exc
        return [cls(program.program, f, cfg, lim) for f in features]

    @property
    def axes(self) -> tuple[str, ...]:
        if isinstance(self.feature, PositionFeature):
            return tuple(name for name, _ in self.feature.axes)
        return ("value",)

    def band(self, axis: str) -> tuple[float, float]:
        """Tolerance band of one channel's deviation from nominal (for position: +-tolerance/2 per axis)."""
        f = self.feature
        if isinstance(f, SizeFeature):
            return f.lower - f.nominal, f.upper - f.nominal
        return -f.tolerance / 2, f.tolerance / 2

    def known_sigma(self, axis: str) -> float | None:
        return self.config.sigma.get(self.feature.name)

    def prior_sigma(self, axis: str) -> float:
        """Before any scatter is seen: the tolerance band is taken as +-4 sigma (Cp 1.33)."""
        lo, hi = self.band(axis)
        return (hi - lo) / 8.0

    def tolerance_limits(self) -> dict[str, Any]:
        f = self.feature
        if isinstance(f, SizeFeature):
            return {"kind": "size", "nominal": f.nominal, "lower": f.lower, "upper": f.upper}
        return {"kind": "position", "nominal": 0.0, "lower": None, "upper": f.tolerance, "tolerance": f.tolerance}

    def axis_label(self, axis: str) -> str:
        return "" if axis == "value" else axis.upper()


def _offset_text(offset: OffsetSuggestion, level: float, sigma: float) -> str:
    """The offset advice, or a note that the mean still sits at nominal (no change would help yet)."""
    if abs(level) < max(sigma, 1e-4):
        return f"mean still near nominal ({_um(level)}), no offset change yet"
    return offset.text()


def _um(x: float) -> str:
    return f"{x * 1000:+.1f} um"


def _mm(x: float) -> str:
    return f"{x:+.4f} mm"


class _Channel:
    """Detectors of one axis (or the single value of a size feature), fed deviations from nominal."""

    def __init__(self, plan: WatchPlan, axis: str) -> None:
        self.plan = plan
        self.axis = axis
        cfg, lim = plan.config, plan.limits
        lo, hi = plan.band(axis)
        self.known = plan.known_sigma(axis)
        self.ewma = Ewma(lam=lim.ewma_lambda, limit=lim.ewma_width)
        self.cusum = Cusum(k=lim.cusum_k, h=lim.cusum_h, fir=cfg.cusum_fir)
        self.rules = RunRules(rules=cfg.run_rules, limit=lim.rule1)
        limits = (lo, hi) if isinstance(plan.feature, SizeFeature) else (-math.inf, math.inf)
        self.trend = TrendForecast(
            window=cfg.forecast_window,
            horizon=cfg.horizon,
            lower=limits[0],
            upper=limits[1],
            breach_probability=cfg.breach_probability,
            alpha=cfg.trend_alpha,
            min_parts=cfg.forecast_min_parts,
            sigma=self.known,
            max_search=max(cfg.horizon * 5, 60),
        )
        self.capability = Capability(lo, hi)
        self.attribution = Attribution(
            window=max(cfg.forecast_window, 10),
            min_r=cfg.attribution_min_r,
            min_parts=min(cfg.forecast_min_parts, max(cfg.forecast_window, 10)),
        )
        self.mr_sum = 0.0
        self.mr_n = 0
        self.last: float | None = None
        self.z: float | None = None
        self.q = QStatistic(self.known)

    # sigma ---------------------------------------------------------------------------------------
    def sigma(self) -> float:
        if self.known is not None:
            return self.known
        if self.mr_n >= 1 and self.mr_sum > 0:
            return (self.mr_sum / self.mr_n) / 1.128
        return self.plan.prior_sigma(self.axis)

    @property
    def center(self) -> float:
        """Running mean deviation of the parts absorbed so far (the self-starting chart centre)."""
        return self.q.mean

    def armed(self) -> bool:
        return self.q.n >= max(2 if self.known is not None else 3, self.plan.config.min_parts)

    def standardize(self, d: float) -> float:
        """Quesenberry's Q of ``d`` against the parts before it (exactly N(0, 1) in control)."""
        z = self.q.peek(d)
        return 0.0 if z is None else z

    def absorb(self, d: float) -> None:
        """Take ``d`` into the running centre (not done while a chart signals, so a shift is not learned)."""
        self.q.absorb(d)

    def reset_charts(self) -> None:
        for det in (self.ewma, self.cusum, self.rules, self.trend, self.attribution):
            det.reset()
        self.q.reset()

    def state(self) -> dict[str, Any]:
        return {
            "ewma": self.ewma.state(),
            "cusum": self.cusum.state(),
            "rules": self.rules.state(),
            "trend": self.trend.state(),
            "capability": self.capability.state(),
            "attribution": self.attribution.state(),
            "mr_sum": self.mr_sum,
            "mr_n": self.mr_n,
            "last": self.last,
            "z": self.z,
            "q": self.q.state(),
        }

    def load(self, s: Mapping[str, Any]) -> None:
        """Restore saved detector state; a detector whose settings changed since (the program file was
        edited) starts afresh instead of running on with stale limits."""
        self.ewma = _same_or_fresh(self.ewma, Ewma.from_state(s["ewma"]))
        self.cusum = _same_or_fresh(self.cusum, Cusum.from_state(s["cusum"]))
        self.rules = _same_or_fresh(self.rules, RunRules.from_state(s["rules"]))
        self.trend = _same_or_fresh(self.trend, TrendForecast.from_state(s["trend"]))
        self.capability = _same_or_fresh(self.capability, Capability.from_state(s["capability"]))
        self.attribution = _same_or_fresh(self.attribution, Attribution.from_state(s["attribution"]))
        self.mr_sum, self.mr_n = float(s["mr_sum"]), int(s["mr_n"])
        self.last = None if s["last"] is None else float(s["last"])
        self.z = None if s["z"] is None else float(s["z"])
        q = QStatistic.from_state(s["q"])
        if q.sigma == self.known:
            self.q = q


_D = TypeVar("_D", Ewma, Cusum, RunRules, TrendForecast, Capability, Attribution)


def _same_or_fresh(fresh: _D, restored: _D) -> _D:
    """``restored`` if its hyper-parameters equal ``fresh``'s (their reset states match), else ``fresh``."""
    probe = type(restored).from_state(restored.state())
    probe.reset()
    return restored if probe.state() == fresh.state() else fresh


class FeatureWatch:
    """Running state of one feature on one machine; see the module docstring."""

    def __init__(self, plan: WatchPlan) -> None:
        self.plan = plan
        lo, hi = plan.band(plan.axes[0])
        self._band_width = hi - lo
        self._channels = {axis: _Channel(plan, axis) for axis in plan.axes}
        self._parts: deque[dict[str, Any]] = deque(maxlen=plan.config.history)
        self._keys: deque[str] = deque(maxlen=64)
        self._streak: dict[str, int] = {}
        self._near_nominal = 0
        self._session_start: float | None = None
        self._last_end: float | None = None
        self._cut_time = 0.0
        self._tool: str | None = None

    # ------------------------------------------------------------------------------ inputs
    def _read(self, part: PartRecord) -> tuple[float, dict[str, float]] | str:
        """(judged value, deviation per axis) or the name of the counter to bump."""
        f = self.plan.feature
        signals = (
            [("value", f.signal, f.nominal)]
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
            return value < f.lower or value > f.upper
        return value > f.tolerance

    # ------------------------------------------------------------------------------ update
    def update(self, part: PartRecord) -> Outcome:
        with np.errstate(all="ignore"):  # absurd but finite inputs must not turn into warnings
            return self._update(part)

    def _update(self, part: PartRecord) -> Outcome:
        if part.key in self._keys:
            return Outcome(skipped="duplicate_part")
        read = self._read(part)
        if isinstance(read, str):
            return Outcome(skipped=read)
        value, devs = read
        new_batch = bool(self._parts) and part.part_number < int(self._parts[-1]["part_number"])
        if new_batch:
            # part numbers started again: a new batch (new setup, maybe a new tool) is learned afresh
            self._parts.clear()
            self._channels = {axis: _Channel(self.plan, axis) for axis in self.plan.axes}
            self._streak.clear()
            self._near_nominal = 0
        self._keys.append(part.key)
        self._parts.append({"part_number": part.part_number, "value": value, "deviation": devs})
        covariates = self._covariates(part)
        recentred = self._recentred(devs)
        if recentred:
            for ch in self._channels.values():
                ch.reset_charts()
            self._streak.clear()
        results = {axis: self._feed(self._channels[axis], d, covariates) for axis, d in devs.items()}
        signals: dict[AlertKind, Signal | None] = {
            AlertKind.OUT_OF_TOLERANCE: self._oot_signal(value, devs),
            AlertKind.FORECAST: self._forecast_signal(),
            AlertKind.EWMA: self._chart_signal(AlertKind.EWMA, results),
            AlertKind.CUSUM: self._chart_signal(AlertKind.CUSUM, results),
            AlertKind.RUN_RULE: self._chart_signal(AlertKind.RUN_RULE, results),
        }
        for kind, sig in signals.items():
            self._streak[str(kind)] = self._streak.get(str(kind), 0) + 1 if sig is not None else 0
        return Outcome(signals=signals, recentred=recentred, new_batch=new_batch)

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
            s = ch.sigma()
            if fit is not None and abs(fit[0]) > 3 * s:
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

    def _feed(self, ch: _Channel, d: float, cov: Mapping[str, float | None]) -> dict[str, Any]:
        out: dict[str, Any] = {"trend": ch.trend.update(d)}
        ch.attribution.add(d, cov)
        ch.capability.add(d)
        signalling = False
        if ch.armed():
            z = ch.standardize(d)
            ch.z = z
            out["z"] = z
            out["ewma"] = ch.ewma.update(z)
            out["cusum"] = ch.cusum.update(z)
            out["rules"] = ch.rules.update(z)
            signalling = out["ewma"].alarm or out["cusum"].alarm
        if not signalling:
            ch.absorb(d)
        if ch.last is not None:
            ch.mr_sum += abs(d - ch.last)
            ch.mr_n += 1
        ch.last = d
        return out

    # ------------------------------------------------------------------------------ signals
    def _oot_signal(self, value: float, devs: dict[str, float]) -> Signal | None:
        if not self._out_of_tolerance(value):
            return None
        f = self.plan.feature
        if isinstance(f, SizeFeature):
            side, limit = ("above upper", f.upper) if value > f.upper else ("below lower", f.lower)
            msg = f"{f.name} out of tolerance: {value:.4f} mm {side} limit {limit:.4f} (nominal {f.nominal:.4f})"
            ev: dict[str, Any] = {"value": value, "deviation": devs["value"], "lower": f.lower, "upper": f.upper}
        else:
            axes = ", ".join(f"{a.upper()} {_mm(d)}" for a, d in devs.items())
            msg = f"{f.name} out of tolerance: true position {value:.4f} exceeds {f.tolerance:.3f} ({axes})"
            ev = {"true_position": value, "tolerance": f.tolerance, "deviation": dict(devs)}
        return Signal(Severity.CRITICAL, msg, ev)

    def _breach(self) -> tuple[float | None, tuple[float, float] | None, bool, list[float]]:
        """Parts to breach, its interval, whether the trend is significant, and P(out) per future part."""
        chans = list(self._channels.values())
        if isinstance(self.plan.feature, SizeFeature):
            tr = chans[0].trend
            if tr.fit is None:
                return None, None, False, []
            res = tr.last
            prob = tr.out_probability(tr.forecast(self.plan.config.horizon))
            return res.parts_to_breach, res.breach_interval, res.significant, [float(p) for p in prob]
        if any(c.trend.fit is None for c in chans):
            return None, None, False, []
        tol = self.plan.feature.tolerance
        search = chans[0].trend.max_search
        fcs = [c.trend.forecast(search) for c in chans]
        prob = position_out_probability(np.stack([f.mean for f in fcs]), np.stack([f.sd for f in fcs]), tol)
        thr = self.plan.config.breach_probability
        ptb = parts_to_breach(prob, thr)
        significant = any(c.trend.last.significant for c in chans)
        interval = None
        if ptb is not None:
            ends = []
            for pick in (0, 1):  # 0: slow end of every slope interval, 1: fast end
                means, sds = [], []
                for c in chans:
                    fit = c.trend.fit
                    assert fit is not None
                    lo, hi, b = fit[2], fit[3], fit[1]
                    slow = 0.0 if lo <= 0 <= hi else (lo if b > 0 else hi)
                    fast = hi if b >= 0 else lo
                    fc = c.trend.forecast_fixed_slope(fast if pick else slow)
                    means.append(fc.mean)
                    sds.append(fc.sd)
                pb = position_out_probability(np.stack(means), np.stack(sds), tol)
                ends.append(parts_to_breach(pb, thr) or float(search))
            interval = (min(ends), max(ends))
        return ptb, interval, significant, [float(p) for p in prob[: self.plan.config.horizon]]

    def _forecast_signal(self) -> Signal | None:
        cfg = self.plan.config
        n = min(c.trend.n for c in self._channels.values())
        if n < cfg.forecast_min_parts:
            return None
        if not any(c.trend.last.significant for c in self._channels.values()):
            return None
        ptb, interval, significant, _ = self._breach()
        if not significant or ptb is None or ptb > cfg.horizon:
            return None
        severity = (
            Severity.CRITICAL if ptb <= cfg.critical_parts else Severity.WARNING if ptb <= cfg.warning_parts else Severity.WATCH
        )
        f = self.plan.feature
        # the drifting axis: largest |slope| in sigmas
        ch = max(self._channels.values(), key=lambda c: abs(c.trend.fit[1] if c.trend.fit else 0.0) / c.sigma())
        fit = ch.trend.fit
        assert fit is not None
        level, slope = fit[0], fit[1]
        label = self.plan.axis_label(ch.axis)
        tol_text = (
            f"{f.tolerance:.3f} TP tolerance"
            if isinstance(f, PositionFeature)
            else f"{'upper' if slope > 0 else 'lower'} limit {f.upper if slope > 0 else f.lower:.4f}"
        )
        direction = f"{'+' if slope >= 0 else '-'}{label}" if label else ("up" if slope >= 0 else "down")
        parts = [f"{f.name} drifting {direction} {abs(slope) * 1000:.1f} um/part"]
        parts.append(
            f"breaks {tol_text} in ~{ptb:.0f} parts" + (f" (90%: {interval[0]:.0f}-{interval[1]:.0f})" if interval else "")
        )
        attr = ch.attribution.last
        if attr.cause is not None and attr.r is not None:
            cause = COVARIATES.get(attr.cause, attr.cause)
            if attr.cause == "tool_life" and self._tool:
                cause = f"tool {self._tool} life"
            parts.append(f"tracks {cause} (r={attr.r:.2f})")
        offset = suggest_offset(level, ch.axis if label else cfg.offsets.get(f.name, "diameter"))
        parts.append(_offset_text(offset, level, fit[5]))
        evidence: dict[str, Any] = {
            "parts_to_breach": ptb,
            "breach_interval": list(interval) if interval else None,
            "axis": ch.axis,
            "slope_mm_per_part": slope,
            "slope_interval": [fit[2], fit[3]],
            "trend_p_value": fit[4],
            "level_deviation_mm": level,
            "sigma_mm": fit[5],
            "breach_probability": cfg.breach_probability,
            "horizon": cfg.horizon,
            "correlations": attr.correlations,
            "likely_cause": attr.cause,
            "tool": self._tool,
            "offset": {"register": offset.register, "change_mm": offset.change},
        }
        return Signal(severity, "; ".join(parts), evidence)

    def _chart_signal(self, kind: AlertKind, results: Mapping[str, Mapping[str, Any]]) -> Signal | None:
        cfg, lim = self.plan.config, self.plan.limits
        f = self.plan.feature
        hits: list[tuple[str, str, dict[str, Any]]] = []
        for axis, res in results.items():
            ch = self._channels[axis]
            label = self.plan.axis_label(axis)
            name = f"{f.name} {label}".strip()
            s = ch.sigma()
            if kind is AlertKind.EWMA and "ewma" in res and res["ewma"].alarm:
                r = res["ewma"]
                shift = r.statistic * s
                hits.append(
                    (
                        axis,
                        f"{name} mean shifted {_um(shift)} since the batch start (EWMA {r.statistic:+.2f} sigma, "
                        f"limit +-{r.upper:.2f})",
                        {"ewma": r.statistic, "limit": r.upper, "shift_mm": shift},
                    )
                )
            elif kind is AlertKind.CUSUM and "cusum" in res and res["cusum"].alarm:
                r = res["cusum"]
                side = "above" if r.direction > 0 else "below"
                hits.append(
                    (
                        axis,
                        f"{name} running {side} its start level (CUSUM {max(r.upper, r.lower):.1f} > h {r.h:.1f})",
                        {"cusum_upper": r.upper, "cusum_lower": r.lower, "h": r.h},
                    )
                )
            elif kind is AlertKind.RUN_RULE and "rules" in res and res["rules"].alarm:
                r = res["rules"]
                text = "; ".join(RULE_TEXT[i] + (f" ({lim.rule1:.2f} sigma)" if i == 1 else "") for i in r.fired)
                hits.append((axis, f"{name}: {text}", {"rules": list(r.fired), "z": r.z}))
        if not hits:
            return None
        axis, text, ev = hits[0]
        ch = self._channels[axis]
        level = ch.trend.fit[0] if ch.trend.fit else 0.0
        label = self.plan.axis_label(axis)
        offset = suggest_offset(level, axis if label else cfg.offsets.get(f.name, "diameter"))
        streak = self._streak.get(str(kind), 0) + 1
        severity = Severity.WARNING if streak > cfg.escalate_after else Severity.WATCH
        evidence = {
            **ev,
            "axis": axis,
            "sigma_mm": ch.sigma(),
            "parts_signalling": streak,
            "chart_arl0": lim.chart_arl0,
            "axes": [h[0] for h in hits],
            "offset": {"register": offset.register, "change_mm": offset.change},
        }
        return Signal(severity, f"{text}; {_offset_text(offset, level, ch.sigma())}", evidence)

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
            "channels": {a: c.state() for a, c in self._channels.items()},
        }

    @classmethod
    def from_state(cls, plan: WatchPlan, state: Mapping[str, Any]) -> FeatureWatch:
        watch = cls(plan)
        for p in state.get("parts", []):
            watch._parts.append(
                {
                    "part_number": int(p["part_number"]),
                    "value": float(p["value"]),
                    "deviation": {k: float(v) for k, v in p["deviation"].items()},
                }
            )
        watch._keys.extend(str(k) for k in state.get("keys", []))
        watch._streak = {k: int(v) for k, v in state.get("streak", {}).items()}
        watch._near_nominal = int(state.get("near_nominal", 0))
        watch._session_start = state.get("session_start")
        watch._last_end = state.get("last_end")
        watch._cut_time = float(state.get("cut_time", 0.0))
        watch._tool = state.get("tool")
        for axis, s in state.get("channels", {}).items():
            if axis in watch._channels:
                watch._channels[axis].load(s)
        return watch

    # ------------------------------------------------------------------------------ view
    def capability(self) -> dict[str, Any]:
        """Cp/Cpk/Ppk (with intervals) of the feature; for position features the worst axis counts."""
        per_axis = {a: c.capability.result().as_dict() for a, c in self._channels.items()}
        if isinstance(self.plan.feature, SizeFeature):
            return per_axis["value"]
        out: dict[str, Any] = {"axes": per_axis}
        for key in ("cp", "cpk", "ppk"):
            vals = [(v[key], v[f"{key}_ci"]) for v in per_axis.values() if v[key] is not None]
            if vals:
                worst = min(vals, key=lambda t: t[0])
                out[key], out[f"{key}_ci"] = worst
            else:
                out[key], out[f"{key}_ci"] = None, None
        out["n"] = min(v["n"] for v in per_axis.values())
        return out

    def view(self) -> dict[str, Any]:
        with np.errstate(all="ignore"):
            return self._view()

    def _view(self) -> dict[str, Any]:
        f = self.plan.feature
        size = isinstance(f, SizeFeature)
        nominal = f.nominal if isinstance(f, SizeFeature) else 0.0
        lim = self.plan.limits
        control: dict[str, Any] = {}
        for axis, ch in self._channels.items():
            s = ch.sigma()
            ew = lim.ewma_width * s * math.sqrt(lim.ewma_lambda / (2 - lim.ewma_lambda))
            centre = (nominal if size else 0.0) + ch.center
            control[axis] = {
                "sigma": s,
                "sigma_known": ch.known is not None,
                "armed": ch.armed(),
                "centre": centre,
                "individuals": [centre - lim.rule1 * s, centre + lim.rule1 * s],
                "ewma": [centre - ew, centre + ew],
                "ewma_statistic": centre + ch.ewma.state()["z"] * s,
                "ewma_lambda": lim.ewma_lambda,
                "ewma_width": lim.ewma_width,
                "cusum_k": lim.cusum_k,
                "cusum_h": lim.cusum_h,
                "rule1_sigmas": lim.rule1,
            }
        return {
            "program": self.plan.program,
            "feature": f.name,
            "kind": "size" if size else "position",
            "values": [
                {
                    "part_number": p["part_number"],
                    "value": p["value"],
                    "deviation": p["deviation"]["value"] if size else p["value"],
                    "axes": dict(p["deviation"]),
                }
                for p in self._parts
            ],
            "nominal": nominal,
            "limits": self.plan.tolerance_limits(),
            "control_limits": control["value"] if size else control,
            "forecast": self._forecast_view(),
            "capability": self.capability(),
        }

    def _forecast_view(self) -> dict[str, Any] | None:
        if not self._parts or any(c.trend.fit is None for c in self._channels.values()):
            return None
        h = self.plan.config.horizon
        last = int(self._parts[-1]["part_number"])
        ptb, interval, significant, prob = self._breach()
        z = float(-ndtri(0.05))
        axes: dict[str, Any] = {}
        for axis, ch in self._channels.items():
            fc = ch.trend.forecast(h)
            fit = ch.trend.fit
            assert fit is not None
            base = self.plan.feature.nominal if isinstance(self.plan.feature, SizeFeature) else 0.0
            axes[axis] = {
                "mean": [float(v) for v in base + fc.mean],
                "lo": [float(v) for v in base + fc.mean - z * fc.sd],
                "hi": [float(v) for v in base + fc.mean + z * fc.sd],
                "slope": fit[1],
                "slope_interval": [fit[2], fit[3]],
                "p_value": fit[4],
            }
        out: dict[str, Any] = {
            "parts": [last + i for i in range(1, h + 1)],
            "p_out": prob,
            "parts_to_breach": ptb,
            "breach_part": last + ptb if ptb is not None else None,
            "breach_interval": list(interval) if interval else None,
            "significant": significant,
            "interval": 0.9,
        }
        if isinstance(self.plan.feature, SizeFeature):
            out.update({k: axes["value"][k] for k in ("mean", "lo", "hi", "slope", "slope_interval", "p_value")})
        else:
            out["axes"] = axes
        return out
