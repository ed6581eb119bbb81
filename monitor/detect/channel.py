"""One channel of a feature (a size, or one axis of a position): screen, trend model, residual charts.

Per part the channel

1. **screens the reading** against the trend model's prediction of it: a reading further than
   ``reprobe_limit`` predictive standard deviations away is held back as a *re-probe* notice (a
   chipped stylus, swarf on the part) instead of being fed to the detectors; the next reading
   decides: if it lies on the same side beyond ``confirm_limit`` it confirms a real shift and both are
   fed, otherwise the held reading is dropped;
2. **standardises** the reading for the control charts: the one-step residual of an AR(1) process
   around the self-starting reference level, ``e = (d - mu) - phi (d_prev - mu)``, divided by the
   innovation scale (and turned from Student t to normal with the scale's degrees of freedom, as
   Quesenberry's Q statistic does). In control these are independent standard normal whatever the
   part-to-part correlation, so the EWMA and CUSUM limits solved from an ARL target hold under
   autocorrelated scatter. ``phi`` and the scale come from the trend model fitted *before* the
   reading; the reference starts at nominal (``prior_parts`` pseudo-parts) and learns the
   process level, but not while a chart signals, so a shift is not learned away;
3. feeds the **trend model** (:class:`monitor.detect.trend.TrendModel`) and attribution.

Charting residuals rather than the readings was chosen by measurement (``bench/detection.py``):
with lag-1 correlation 0.6, charts on the readings with limits widened for the effective sample
size still raised about 10 false alarms per 1000 parts; residual charts hold the budget, at the
known cost of slower detection of a sustained shift (a shift delta shows as ``(1 - phi) delta``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.special import ndtri
from scipy.special.cython_special import stdtr

from monitor.detect.attribution import Attribution
from monitor.detect.cusum import Cusum, CusumResult
from monitor.detect.ewma import Ewma, EwmaResult
from monitor.detect.runrules import RunRules, RunRulesResult
from monitor.detect.trend import PHIS, TrendModel, TrendResult

__all__ = ["NOMINAL_PARTS", "Channel", "ChannelSettings", "ChannelStep", "Reprobe", "ResidualChart", "Screen"]

NOMINAL_PARTS = 12
"""Over the first parts of a batch (or after a recorded step) the charts compare each part with
nominal (or the expected level) using the prior scatter and correlation; only then do they switch
to the level learned from those parts. A drift present from part 1 is then charted against nominal
instead of being learned into the reference."""

_DRIFT_SCATTER_ODDS = 1.0
"""Over those first parts, drift odds from which the charts take the scatter around the heaviest drift
model rather than around the chosen one (measured: a fast warm-up from part 1 flagged before its
first bad part 75% -> 81% of batches on bench/detection.py's tuning seeds, in-control false alarms
unchanged but for AR(1) 0.6, +0.5 per 1000 parts)."""


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Everything a channel is built from (resolved from the program's ``detection:`` section)."""

    lower: float  # deviation limits of the channel (size: limits - nominal; position axis: +-tol/2)
    upper: float
    scale: float  # distance from nominal to the limits (half the band)
    window: int
    prior_sigma: float
    prior_dof: float
    known_sigma: float | None
    setup_sd: float
    odds: float
    ewma_lambda: float
    ewma_width: float
    cusum_k: float
    cusum_h: float
    cusum_fir: bool
    rules: tuple[int, ...]  # Nelson rules other than 1 (rule 1 is the re-probe screen)
    reprobe_limit: float
    confirm_limit: float
    min_parts: int
    attribution_window: int
    attribution_min_r: float
    attribution_min_parts: int


@dataclass(frozen=True, slots=True)
class Reprobe:
    """A reading held back as implausible: what it was, what was expected, how many sd away, and what
    became of it (``held``: waiting for the next part; ``confirmed``: the next part showed the same
    shift, both were used; ``dropped``: the next part did not, the reading was left out)."""

    reading: float
    expected: float
    sd: float
    status: str

    @property
    def sds(self) -> float:
        return (self.reading - self.expected) / self.sd if self.sd > 0 else math.inf


@dataclass(frozen=True, slots=True)
class ChannelStep:
    """What one part did to one channel."""

    deviation: float
    fed: tuple[float, ...]
    trend: TrendResult | None
    z: float | None
    ewma: EwmaResult | None
    cusum: CusumResult | None
    rules: RunRulesResult | None
    reprobe: Reprobe | None
    new_regime: bool


class Screen:
    """The re-probe screen of one channel (see the module docstring); state: the held reading."""

    def __init__(self, limit: float, confirm: float) -> None:
        self.limit = limit
        self.confirm = confirm
        self.held: Reprobe | None = None

    def check(self, d: float, predicted: tuple[float, float] | None) -> tuple[tuple[float, ...], Reprobe | None]:
        """Readings to feed now (in order) and the notice about this part, if any."""
        held, self.held = self.held, None
        if predicted is None or not predicted[1] > 0:
            return ((held.reading,) if held else ()) + (d,), None
        mean, sd = predicted
        dev = (d - mean) / sd
        if held is not None:
            same_side = (dev > 0) == (held.reading > held.expected)
            if same_side and abs(dev) > self.confirm:
                return (held.reading, d), Reprobe(held.reading, held.expected, held.sd, "confirmed")
            if abs(dev) > self.limit:
                self.held = Reprobe(d, mean, sd, "held")
                return (), self.held
            return (d,), Reprobe(held.reading, held.expected, held.sd, "dropped")
        if abs(dev) > self.limit:
            self.held = Reprobe(d, mean, sd, "held")
            return (), self.held
        return (d,), None

    def state(self) -> dict[str, Any] | None:
        h = self.held
        return None if h is None else {"reading": h.reading, "expected": h.expected, "sd": h.sd}

    def load(self, s: dict[str, Any] | None) -> None:
        self.held = None if s is None else Reprobe(float(s["reading"]), float(s["expected"]), float(s["sd"]), "held")


class ResidualChart:
    """Standardised one-step residuals around the charts' reference (see the module docstring).

    For the first ``nominal_parts`` readings the reference is the prior centre (nominal, or the
    expected level after a recorded step); from then on it is the mean of the readings absorbed
    since the start (not those that arrived while a chart signalled)."""

    def __init__(self, nominal_parts: int | None = None) -> None:
        self.nominal_parts = NOMINAL_PARTS if nominal_parts is None else nominal_parts
        self.reset()

    def reset(self, centre: float = 0.0) -> None:
        self.n = 0  # readings absorbed
        self.seen = 0  # readings charted
        self.total = 0.0
        self.prior_centre = centre
        self.last: float | None = None

    @property
    def learning(self) -> bool:
        """Still comparing with the prior centre (the first parts)."""
        return self.seen < self.nominal_parts or self.n == 0

    @property
    def centre(self) -> float:
        return self.prior_centre if self.learning else self.total / self.n

    def z(self, d: float, phi: float, sigma_e: float, dof: float) -> float:
        mu = self.centre
        prev = self.last if self.last is not None else mu
        e = (d - mu) - phi * (prev - mu)
        scale = sigma_e if self.learning else sigma_e * math.sqrt(1.0 + 1.0 / self.n)
        t = e / scale
        # scipy's own stdtr called as a plain function (cython_special): the same double as the ufunc,
        # which costs about 4 us on one scalar (once per channel and part, about 4 times a part in the cell)
        p = stdtr(float(max(dof, 1.0)), t)
        p = min(max(p, 1e-15), 1.0 - 1e-15)
        return float(ndtri(p))

    def absorb(self, d: float) -> None:
        self.n += 1
        self.total += d

    def step(self, d: float) -> None:
        """``d`` was charted (absorbed into the reference or not): it is the previous reading from now on."""
        self.seen += 1
        self.last = d

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "seen": self.seen, "total": self.total, "prior_centre": self.prior_centre, "last": self.last}

    def load(self, s: dict[str, Any]) -> None:
        self.n, self.seen, self.total = int(s["n"]), int(s["seen"]), float(s["total"])
        self.prior_centre = float(s["prior_centre"])
        self.last = None if s["last"] is None else float(s["last"])


class Channel:
    """The detectors of one channel; see the module docstring."""

    def __init__(self, settings: ChannelSettings, phi_prior: tuple[float, ...] | None = None) -> None:
        self.settings = s = settings
        self.trend = TrendModel(
            scale=s.scale,
            window=s.window,
            prior_sigma=s.prior_sigma,
            prior_dof=s.prior_dof,
            sigma=s.known_sigma,
            setup_sd=s.setup_sd,
            odds=s.odds,
            phi_prior=phi_prior,
        )
        self.ewma = Ewma(lam=s.ewma_lambda, limit=s.ewma_width)
        self.cusum = Cusum(k=s.cusum_k, h=s.cusum_h, fir=s.cusum_fir)
        self.rules = RunRules(rules=s.rules, limit=s.reprobe_limit)
        self.attribution = Attribution(window=s.attribution_window, min_r=s.attribution_min_r, min_parts=s.attribution_min_parts)
        self.screen = Screen(s.reprobe_limit, s.confirm_limit)
        self.chart = ResidualChart()
        self.signalling = False
        self.fed = 0
        self._known_step: tuple[float | None] | None = None
        """A step recorded for the part about to be stepped (set and used within one update)."""

    # ------------------------------------------------------------------------------ per part
    def scatter(self) -> tuple[float, float]:
        """(sigma of single parts, lag-1 correlation) as the charts take them before the next reading."""
        fit = self.trend.fit
        if fit is None:
            prior_phi = float(sum(w * p for w, p in zip(self.trend.phi_prior, PHIS, strict=True)))
            return self.settings.known_sigma or self.settings.prior_sigma, prior_phi
        return fit.sigma, fit.phi

    def step(self, d: float, covariates: dict[str, float | None]) -> ChannelStep:
        s = self.settings
        predicted = self.trend.predict_next() if self.trend.n >= s.min_parts else None
        if self._known_step is not None and predicted is not None:
            # the prediction is of the level before the recorded step: move it by the step, or (a step of
            # unknown size) do not screen this reading against it at all
            (shift,) = self._known_step
            predicted = None if shift is None else (predicted[0] + shift, predicted[1])
        self._known_step = None
        fed, notice = self.screen.check(d, predicted)
        trend = z = ewma = cusum = rules = None
        new_regime = False
        for value in fed:
            self.fed += 1
            z, ewma, cusum, rules = self._chart(value)
            trend = self.trend.update(value)
            new_regime = new_regime or trend.new_regime
            self.attribution.add(value, covariates)
        return ChannelStep(d, fed, trend, z, ewma, cusum, rules, notice, new_regime)

    def _prior_phi(self) -> float:
        """The prior mean lag-1 correlation (the charts' phi over a batch's first parts only)."""
        return float(sum(w * p for w, p in zip(self.trend.phi_prior, PHIS, strict=True)))

    def _chart(self, d: float) -> tuple[float | None, EwmaResult | None, CusumResult | None, RunRulesResult | None]:
        fit = self.trend.fit
        z = ewma = cusum = rules = None
        if fit is None:  # the first part: the prior scatter, compared with nominal
            prior_phi = self._prior_phi()
            sigma = self.settings.known_sigma or self.settings.prior_sigma
            phi, sigma_e, dof = prior_phi, sigma * math.sqrt(1.0 - prior_phi**2), self.settings.prior_dof
        elif self.chart.learning:  # the first parts: compared with nominal, the prior correlation
            phi = self._prior_phi()
            # once a drift is at least as likely as none, the scatter is the one around the drift: a
            # stable model misfitted to a drift from part 1 would inflate it and hide that drift
            sig = min(fit.sigma, fit.sigma_drift) if fit.drift_odds >= _DRIFT_SCATTER_ODDS else fit.sigma
            sigma_e, dof = sig * math.sqrt(1.0 - phi * phi), self.settings.prior_dof + fit.n
        else:
            phi, sigma_e, dof = fit.phi, fit.sigma_innovation, self.settings.prior_dof + fit.n
        if True:
            z = self.chart.z(d, phi, sigma_e, dof)
            ewma = self.ewma.update(z)
            cusum = self.cusum.update(z)
            rules = self.rules.update(z) if self.settings.rules else None
            if self.fed < self.settings.min_parts:
                ewma = EwmaResult(ewma.n, ewma.statistic, ewma.lower, ewma.upper, False)
                cusum = CusumResult(cusum.n, cusum.upper, cusum.lower, cusum.h, False, 0)
                rules = None
            was = self.signalling
            self.signalling = ewma.alarm or cusum.alarm
            if was and not self.signalling:
                # the signal is over: both charts start afresh, so what they accumulated during it
                # does not raise the same alarm again a few parts later (the usual restart after a signal)
                self.ewma.reset()
                self.cusum.reset()
        if not self.signalling:
            self.chart.absorb(d)
        self.chart.step(d)
        return z, ewma, cusum, rules

    # ------------------------------------------------------------------------------ events
    def restart_charts(self, centre: float | None = None) -> None:
        """Re-centred or a known step: the charts learn the new level afresh (around ``centre``)."""
        for det in (self.ewma, self.cusum, self.rules):
            det.reset()
        self.chart.reset(self.chart.centre if centre is None else centre)
        self.signalling = False

    def expect_step(self, shift: float | None) -> None:
        """A recorded offset change: the trend models a known step, the charts restart at the new level."""
        self.trend.expect_step(shift)
        fit = self.trend.fit
        level = fit.level if fit is not None else self.chart.centre
        self.restart_charts(level + (shift or 0.0))
        self.screen.held = None
        self._known_step = (shift,)

    # ------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {
            "trend": self.trend.state(),
            "ewma": self.ewma.state(),
            "cusum": self.cusum.state(),
            "rules": self.rules.state(),
            "attribution": self.attribution.state(),
            "screen": self.screen.state(),
            "chart": self.chart.state(),
            "signalling": self.signalling,
            "fed": self.fed,
        }

    def load(self, st: dict[str, Any]) -> None:
        """Restore saved state; a detector whose settings changed since (the program file was edited)
        starts afresh instead of running on with stale limits."""
        trend = TrendModel.from_state(st["trend"])
        if trend.settings() == self.trend.settings():
            self.trend = trend
        self.ewma = _same_or_fresh(self.ewma, Ewma.from_state(st["ewma"]))
        self.cusum = _same_or_fresh(self.cusum, Cusum.from_state(st["cusum"]))
        self.rules = _same_or_fresh(self.rules, RunRules.from_state(st["rules"]))
        self.attribution = _same_or_fresh(self.attribution, Attribution.from_state(st["attribution"]))
        self.screen.load(st["screen"])
        self.chart.load(st["chart"])
        self.signalling = bool(st["signalling"])
        self.fed = int(st["fed"])


def _same_or_fresh(fresh: Any, restored: Any) -> Any:
    """``restored`` if its hyper-parameters equal ``fresh``'s (their reset states match), else ``fresh``."""
    probe = type(restored).from_state(restored.state())
    probe.reset()
    return restored if probe.state() == fresh.state() else fresh
