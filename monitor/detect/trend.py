"""Robust trend forecast: Theil-Sen slope on recent parts, scatter of single parts, parts to breach."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.special import chndtr, ndtr, ndtri

from monitor.detect.base import check_finite, check_range, register
from monitor.errors import DetectionError

__all__ = ["Forecast", "TrendForecast", "TrendResult", "parts_to_breach", "position_out_probability"]


@dataclass(frozen=True, slots=True, eq=False)
class Forecast:
    """Predicted distribution of single future parts 1..len(mean) ahead: mean and sd per step (arrays)."""

    mean: np.ndarray
    sd: np.ndarray

    @property
    def steps(self) -> list[int]:
        return list(range(1, len(self.mean) + 1))


@dataclass(frozen=True, slots=True)
class TrendResult:
    """The trend after one value.

    ``parts_to_breach`` is how many parts after this one the first part has a probability of being
    out of tolerance of at least ``breach_probability`` (None: not within the search range, or no
    limits); ``breach_interval`` is that count for the ends of the slope's confidence interval.
    """

    n: int
    level: float
    slope: float
    slope_interval: tuple[float, float]
    p_value: float
    significant: bool
    sigma: float
    p_next: float
    parts_to_breach: float | None
    breach_interval: tuple[float, float] | None
    alarm: bool
    skipped: bool = False


def position_out_probability(means: np.ndarray, sds: np.ndarray, tolerance: float) -> np.ndarray:
    """P(2 * sqrt(sum of squared axis deviations) > tolerance) per column.

    ``means`` and ``sds`` have one row per axis and one column per future part. The axes are taken
    independent with a pooled variance, so the squared radius over the variance is non-central
    chi-square (exact when the axes scatter alike).
    """
    with np.errstate(all="ignore"):
        var = np.mean(np.asarray(sds) ** 2, axis=0)
        r2 = np.sum(np.asarray(means) ** 2, axis=0)
        tiny = var <= 1e-24  # no scatter at all: the part is where the mean is
        safe = np.where(tiny, 1.0, var)
        p = 1.0 - chndtr((tolerance / 2.0) ** 2 / safe, means.shape[0], r2 / safe)
        p = np.where(tiny, (4.0 * r2 > tolerance**2).astype(float), p)
        return np.asarray(np.clip(np.nan_to_num(p, nan=1.0), 0.0, 1.0))


def parts_to_breach(prob: np.ndarray, threshold: float) -> float | None:
    """1-based index of the first entry of ``prob`` at or above ``threshold``, or None."""
    hit = np.nonzero(prob >= threshold)[0]
    return float(hit[0] + 1) if hit.size else None


@register("trend")
class TrendForecast:
    """Theil-Sen trend of a feature's recent values, forecasting when a part will break tolerance.

    After each value the slope is the median of pairwise slopes over the last ``window`` values
    (robust to a few outliers), its confidence interval is Sen's rank interval and its
    significance the Mann-Kendall test. Single future parts are forecast as normal around the
    trend line with sd combining the part scatter (``sigma`` if known, else the larger of the
    residual sd and the moving-range estimate) and the uncertainty of level and slope. The alarm
    fires when the trend is significant at ``alpha`` and a part within ``horizon`` parts reaches
    ``breach_probability`` of being outside [``lower``, ``upper``].

    Parameters: ``window`` >= 4, ``horizon`` >= 1, ``lower`` < ``upper`` (either may be infinite),
    ``breach_probability`` and ``alpha`` in (0, 1), ``min_parts`` >= 4, ``sigma`` > 0 or None,
    ``confidence`` of the slope interval, ``max_search`` parts searched for the breach,
    ``step_ratio`` in [0, 1]: when the best single level shift leaves less than this share of the
    line's squared residuals, the window holds a step, not a trend, and only the parts after the
    shift are fitted (0 turns this off).
    NaN or infinite values are skipped (state unchanged, ``skipped``).

    References: H. Theil (1950); P. K. Sen, "Estimates of the regression coefficient based on
    Kendall's tau", JASA 63, 1968, pp. 1379-1389; M. G. Kendall, *Rank Correlation Methods*, 1975.

    >>> import math
    >>> tr = TrendForecast(window=15, horizon=10, lower=-1.0, upper=1.0)
    >>> data = [0.03 * i + 0.03 * math.sin(2.7 * i) for i in range(40)]   # +0.03/part, first part > 1.0: 34
    >>> first = next(r for r in map(tr.update, data) if r.alarm)
    >>> first.n, first.parts_to_breach, first.breach_interval
    (23, 10.0, (9.0, 11.0))
    """

    def __init__(
        self,
        window: int = 20,
        horizon: int = 20,
        lower: float = -math.inf,
        upper: float = math.inf,
        breach_probability: float = 0.1,
        alpha: float = 0.01,
        min_parts: int = 8,
        sigma: float | None = None,
        confidence: float = 0.9,
        max_search: int = 500,
        step_ratio: float = 0.5,
    ) -> None:
        self.window = int(check_range("window", window, 4, 10_000))
        self.horizon = int(check_range("horizon", horizon, 1, 10_000))
        self.lower = float(lower)
        self.upper = float(upper)
        if math.isnan(self.lower) or math.isnan(self.upper) or not self.lower < self.upper:
            raise DetectionError(f"lower ({lower}) must be below upper ({upper})")
        self.breach_probability = check_range("breach_probability", breach_probability, 0, 1, lo_open=True, hi_open=True)
        self.alpha = check_range("alpha", alpha, 0, 1, lo_open=True, hi_open=True)
        self.min_parts = int(check_range("min_parts", min_parts, 4, 10_000))
        self.sigma = check_range("sigma", sigma, 0.0, lo_open=True) if sigma is not None else None
        self.confidence = check_range("confidence", confidence, 0, 1, lo_open=True, hi_open=True)
        self.max_search = int(check_range("max_search", max_search, self.horizon, 100_000))
        self.step_ratio = check_range("step_ratio", step_ratio, 0.0, 1.0)
        self.reset()

    def reset(self) -> None:
        self._values: deque[float] = deque(maxlen=self.window)
        self._n = 0
        self._mr_sum = 0.0
        self._mr_n = 0
        self._fit: tuple[float, float, float, float, float, float] | None = None  # level, slope, lo, hi, p, sigma
        self._last: TrendResult | None = None

    # ---------------------------------------------------------------------------- fitting
    def _refit(self) -> None:
        y = np.fromiter(self._values, dtype=float)
        n = y.size
        if n < 3:
            sd = self.sigma if self.sigma is not None else (self._mr_sigma() or 0.0)
            self._fit = (float(y[-1] if n == 1 else y.mean()), 0.0, 0.0, 0.0, 1.0, sd)
            return
        fit, sse_line = self._fit_line(y)
        if self.step_ratio > 0 and n >= 8:
            split, sse_step = _best_step(y)
            if sse_step < self.step_ratio * sse_line:
                # one level shift explains the window far better than a line (a chipped tool, a
                # fixture knock, an offset edit): the trend is what happened after it
                tail = y[split:]
                if tail.size >= 3:
                    fit, _ = self._fit_line(tail)
                else:
                    sd = fit[5]
                    fit = (float(tail.mean()), 0.0, 0.0, 0.0, 1.0, sd)
        self._fit = fit

    def _fit_line(self, y: np.ndarray) -> tuple[tuple[float, float, float, float, float, float], float]:
        """Theil-Sen fit of ``y`` (level at its last value, slope, Sen interval, Mann-Kendall p, sd) and its SSE."""
        n = y.size
        t, i, j, dt = _pairs(n)
        dy = y[j] - y[i]
        slopes = np.sort(dy / dt)
        slope = _sorted_median(slopes)
        level = _sorted_median(np.sort(y - slope * t)) + slope * (n - 1)
        s = float(np.sum(np.sign(dy)))
        var_s = n * (n - 1) * (2 * n + 5) / 18.0
        zs = (s - math.copysign(1.0, s)) / math.sqrt(var_s) if s != 0 else 0.0
        p = float(2.0 * ndtr(-abs(zs)))
        c = float(-ndtri((1 - self.confidence) / 2)) * math.sqrt(var_s)
        m = slopes.size
        lo_i = int(max(0, math.floor((m - c) / 2.0)))
        hi_i = int(min(m - 1, math.ceil((m + c) / 2.0)))
        resid = y - (level + slope * (t - (n - 1)))
        sse = float(np.sum(resid**2))
        sd_res = math.sqrt(sse / max(1, n - 2))
        sd = self.sigma if self.sigma is not None else max(sd_res, self._mr_sigma() or 0.0)
        return (level, slope, float(slopes[lo_i]), float(slopes[hi_i]), p, sd), sse

    def _mr_sigma(self) -> float | None:
        return (self._mr_sum / self._mr_n) / 1.128 if self._mr_n >= 2 else None

    # ---------------------------------------------------------------------------- forecasting
    def forecast(self, horizon: int, slope: float | None = None) -> Forecast:
        """Distribution of single parts 1..``horizon`` ahead of the latest value (optionally at another slope)."""
        if self._fit is None:
            raise DetectionError("no values yet: nothing to forecast")
        level, fitted, lo, hi, _, sd = self._fit
        b = fitted if slope is None else slope
        n = len(self._values)
        z = float(-ndtri((1 - self.confidence) / 2))
        se_slope = (hi - lo) / (2 * z) if z > 0 else 0.0
        h = np.arange(1, horizon + 1, dtype=float)
        mean = level + b * h
        sdv = np.sqrt(sd**2 * (1.0 + 1.0 / max(n, 1)) + (se_slope * h) ** 2)
        return Forecast(mean, sdv)

    def out_probability(self, fc: Forecast) -> np.ndarray:
        mean, sd = fc.mean, np.maximum(fc.sd, 1e-300)
        return np.asarray(ndtr((self.lower - mean) / sd) + ndtr((mean - self.upper) / sd))

    @property
    def fit(self) -> tuple[float, float, float, float, float, float] | None:
        """(level, slope, slope_lo, slope_hi, p_value, sigma) of the latest fit."""
        return self._fit

    @property
    def n(self) -> int:
        return self._n

    # ---------------------------------------------------------------------------- update
    def update(self, x: float) -> TrendResult:
        if not check_finite(x):
            return self._result(skipped=True)
        x = float(x)
        if self._values:
            self._mr_sum += abs(x - self._values[-1])
            self._mr_n += 1
        self._values.append(x)
        self._n += 1
        with np.errstate(all="ignore"):  # absurd but finite values give inf/nan here, never warnings
            self._refit()
            self._last = self._result()
        return self._last

    @property
    def last(self) -> TrendResult:
        """The result of the latest update (recomputed after a restore)."""
        if self._last is None:
            self._last = self._result()
        return self._last

    def _result(self, skipped: bool = False) -> TrendResult:
        if self._fit is None:
            return TrendResult(self._n, math.nan, 0.0, (0.0, 0.0), 1.0, False, math.nan, 0.0, None, None, False, skipped)
        level, slope, lo, hi, p, sd = self._fit
        significant = p < self.alpha and len(self._values) >= self.min_parts
        ptb = interval = None
        p_next = 0.0
        if math.isfinite(self.lower) or math.isfinite(self.upper):
            prob = self.out_probability(self.forecast(self.max_search))
            p_next = float(prob[0])
            ptb = parts_to_breach(prob, self.breach_probability)
            ends = []
            for b in (lo, hi):
                pb = self.out_probability(self.forecast_fixed_slope(b))
                ends.append(parts_to_breach(pb, self.breach_probability) or float(self.max_search))
            interval = (min(ends), max(ends)) if ptb is not None else None
        alarm = significant and ptb is not None and ptb <= self.horizon and not skipped
        return TrendResult(self._n, level, slope, (lo, hi), p, significant, sd, p_next, ptb, interval, alarm, skipped)

    def forecast_fixed_slope(self, slope: float) -> Forecast:
        """Single parts 1..``max_search`` ahead if the slope were exactly ``slope`` (ends of the interval)."""
        if self._fit is None:
            raise DetectionError("no values yet: nothing to forecast")
        level, _, _, _, _, sd = self._fit
        h = np.arange(1, self.max_search + 1, dtype=float)
        n = len(self._values)
        s = sd * math.sqrt(1.0 + 1.0 / max(n, 1))
        return Forecast(level + slope * h, np.full(self.max_search, s))

    # ---------------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "horizon": self.horizon,
            "lower": _enc(self.lower),
            "upper": _enc(self.upper),
            "breach_probability": self.breach_probability,
            "alpha": self.alpha,
            "min_parts": self.min_parts,
            "sigma": self.sigma,
            "confidence": self.confidence,
            "max_search": self.max_search,
            "step_ratio": self.step_ratio,
            "values": list(self._values),
            "n": self._n,
            "mr_sum": self._mr_sum,
            "mr_n": self._mr_n,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrendForecast:
        obj = cls(
            state["window"],
            state["horizon"],
            _dec(state["lower"]),
            _dec(state["upper"]),
            state["breach_probability"],
            state["alpha"],
            state["min_parts"],
            state["sigma"],
            state["confidence"],
            state["max_search"],
            state.get("step_ratio", 0.5),
        )
        obj._values.extend(float(v) for v in state["values"])
        obj._n, obj._mr_sum, obj._mr_n = int(state["n"]), float(state["mr_sum"]), int(state["mr_n"])
        if obj._values:
            obj._refit()
        return obj


@lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Part index, pair indices i < j and their distances for a window of ``n`` values (cached)."""
    t = np.arange(n, dtype=float)
    i, j = np.triu_indices(n, 1)
    return t, i, j, t[j] - t[i]


def _best_step(y: np.ndarray) -> tuple[int, float]:
    """Split index and SSE of the best two-level fit (each level over at least 3 values)."""
    z = y - y.mean()
    n = z.size
    cs, cs2 = np.cumsum(z), np.cumsum(z * z)
    k = np.arange(3, n - 2)
    left = cs2[k - 1] - cs[k - 1] ** 2 / k
    right_sum = cs[-1] - cs[k - 1]
    right = (cs2[-1] - cs2[k - 1]) - right_sum**2 / (n - k)
    sse = left + right
    best = int(np.argmin(sse))
    return int(k[best]), float(sse[best])


def _sorted_median(a: np.ndarray) -> float:
    m = a.size
    return float(0.5 * (a[(m - 1) // 2] + a[m // 2]))


def _enc(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _dec(x: float | str) -> float:
    return float(x)
