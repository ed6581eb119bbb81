"""Process capability: the one implementation of Cp, Cpk, Pp and Ppk with their intervals.

:func:`capability` is what every screen shows (the batch report, ``monitor parts --capability``,
``monitor analyze`` and the dashboard's feature page), computed the same way from the same values
(the feature's values of the complete parts, in part order): sizes and angles against both limits;
one-sided characteristics and true position against their one limit (Cpk and Ppk only, never a Cp
or Pp for true position); with a normality check and the stability of the values, and the method
stated (:data:`METHOD`). :class:`Capability` is the same indices kept running (O(1) per value) for
callers that see values one at a time; both end in the same index computation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from monitor.detect.base import check_finite, check_range, register
from monitor.detect.config import CONFIDENCE
from monitor.detect.distributions import chi2_isf, norm_cdf, norm_ppf
from monitor.detect.normality import shapiro_wilk
from monitor.errors import DetectionError

__all__ = [
    "CONFIDENCE",
    "METHOD",
    "MIN_STUDY_PARTS",
    "STABILITY_ALPHA",
    "Capability",
    "CapabilityResult",
    "Interval",
    "capability",
    "stability_signals",
]

_D2 = 1.128  # E|x_i - x_{i-1}| / sigma for normal individuals (moving range of two)

MIN_STUDY_PARTS = 10
"""Fewer values than this give indices too uncertain to judge (the 95% interval of a Cpk of 1.33
from 10 parts runs from about 0.7 to 2.0): a verdict says so instead of judging."""

METHOD = (
    "Cp and Cpk use the within-part sigma, the average moving range of consecutive parts / 1.128 "
    "(d2 for ranges of two); Pp and Ppk the overall standard deviation of all parts. With one limit "
    "(form, roughness, true position) only Cpk (Cpu or Cpl) and Ppk are defined, never Cp or Pp. "
    "Intervals at {level:.0%}: chi-square for Cp and Pp (n - 1 degrees of freedom), Bissell (1990) "
    "for Cpk and Ppk. Normality: Shapiro-Wilk, p below 0.05 flags a distribution the indices "
    "misjudge. Stability, on the values in part order, each test at 1% for the whole batch: an "
    "individuals chart (a value beyond mean +- k sigma within, k = 3.7 for 50 parts) and von "
    "Neumann's successive-difference ratio (a drift or shift makes sigma overall exceed sigma "
    "within); while either signals, the indices are not meaningful and no verdict is given."
)
"""How the indices are computed, as the report and the CLI state it (format with ``level``)."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with its two-sided confidence interval."""

    value: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True, slots=True)
class CapabilityResult:
    """Capability of a feature: the indices with their intervals (None where undefined: fewer
    than two values, no scatter, Cp/Pp with one limit), the normality check and the stability
    signals (see :data:`METHOD`). ``skipped``: the running detector's last value was not finite."""

    n: int
    mean: float | None
    sigma_within: float | None
    sigma_overall: float | None
    lower: float | None
    upper: float | None
    cp: Interval | None
    cpk: Interval | None
    pp: Interval | None
    ppk: Interval | None
    normality_p: float | None = None
    signals: tuple[str, ...] = ()
    confidence: float = CONFIDENCE
    skipped: bool = False

    @property
    def stable(self) -> bool:
        """No stability signal (the running detector, which keeps no values, never signals)."""
        return not self.signals

    @property
    def normal(self) -> bool | None:
        """Shapiro-Wilk p >= 0.05; None when not tested (fewer than 3 values, no scatter, > 5000)."""
        return None if self.normality_p is None else self.normality_p >= 0.05

    @property
    def meaningful(self) -> bool:
        """Enough parts and a stable process: the indices can be judged."""
        return self.n >= MIN_STUDY_PARTS and self.stable

    def index(self, name: str) -> Interval | None:
        """One index by name: cp, cpk, pp or ppk."""
        value: Interval | None = getattr(self, name)
        return value

    def as_dict(self) -> dict[str, Any]:
        """JSON-able; ``cp``... are the point values, ``*_ci`` their intervals."""
        out: dict[str, Any] = {
            "n": self.n,
            "mean": self.mean,
            "sigma_within": self.sigma_within,
            "sigma_overall": self.sigma_overall,
            "lower": self.lower,
            "upper": self.upper,
            "confidence": self.confidence,
            "normality_p": self.normality_p,
            "normal": self.normal,
            "stable": self.stable,
            "signals": list(self.signals),
            "meaningful": self.meaningful,
        }
        for name in ("cp", "cpk", "pp", "ppk"):
            iv = self.index(name)
            out[name] = iv.value if iv else None
            out[f"{name}_ci"] = [iv.lo, iv.hi] if iv else None
        return out


def _limit(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _bissell(index: float, n: int, z: float) -> Interval:
    half = z * math.sqrt(1.0 / (9.0 * n) + index**2 / (2.0 * (n - 1)))
    return Interval(index, index - half, index + half)


def _chi2(index: float, n: int, alpha: float) -> Interval:
    df = n - 1
    return Interval(index, index * math.sqrt(chi2_isf(1 - alpha / 2, df) / df), index * math.sqrt(chi2_isf(alpha / 2, df) / df))


def _indices(
    n: int,
    mean: float | None,
    s_within: float | None,
    s_overall: float | None,
    lower: float | None,
    upper: float | None,
    confidence: float,
    **extra: Any,
) -> CapabilityResult:
    """The indices from the sums: the one place they are computed."""
    lo, hi = _limit(lower), _limit(upper)
    if n < 2 or mean is None or s_within is None or s_overall is None:
        return CapabilityResult(n, mean, s_within, s_overall, lo, hi, None, None, None, None, confidence=confidence, **extra)
    alpha = 1.0 - confidence
    z = -norm_ppf(alpha / 2)

    def k_index(s: float) -> Interval | None:
        if s <= 0:
            return None
        sides = ([(hi - mean) / (3.0 * s)] if hi is not None else []) + ([(mean - lo) / (3.0 * s)] if lo is not None else [])
        return _bissell(min(sides), n, z) if sides else None

    def p_index(s: float) -> Interval | None:
        return _chi2((hi - lo) / (6.0 * s), n, alpha) if lo is not None and hi is not None and s > 0 else None

    return CapabilityResult(
        n,
        mean,
        s_within,
        s_overall,
        lo,
        hi,
        p_index(s_within),
        k_index(s_within),
        p_index(s_overall),
        k_index(s_overall),
        confidence=confidence,
        **extra,
    )


STABILITY_ALPHA = 0.01
"""Chance that a stable batch is called unstable, per test (two tests: about 2% together)."""


def stability_signals(values: Sequence[float]) -> tuple[str, ...]:
    """Why ``values`` (in part order) do not come from a stable process, in words (a value is
    named by itself: every screen reads the same text, and the stored series need not be joined
    to part numbers for it); empty when nothing says so. Two tests, each at
    :data:`STABILITY_ALPHA` for the whole batch (the Western Electric rules applied together call
    half of stable 50-part batches unstable, and a capability withheld for nothing is no help):

    - individuals chart: a value beyond the limits mean +- k sigma_within (moving range / d2),
      k = z(1 - alpha / 2n), 3.7 for 50 parts, at least 3;
    - von Neumann's ratio of the mean square successive difference to the variance (expected 2
      for independent values; a drift, a shift or a slow wander makes consecutive parts closer than
      the overall scatter, which is what makes sigma overall exceed sigma within), one-sided with
      its normal approximation: J. von Neumann, Ann. Math. Stat. 12 (1941) pp. 367-395; R. B.
      Bingham & J. Nelson, Technometrics 23 (1981).

    >>> stability_signals([10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0, 10.02, 9.98, 11.0])
    ('a value beyond the control limits: 11.0000 (limits 9.5555 to 10.6445)',)
    >>> stability_signals([10.0 + 0.01 * i for i in range(20)])[-1][:52]
    'consecutive parts closer than the overall scatter (v'
    """
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n < 3:
        return ()
    mean = float(x.mean())
    d = np.diff(x)
    sigma = float(np.abs(d).mean()) / _D2
    out: list[str] = []
    if sigma > 0:
        k = max(3.0, -norm_ppf(STABILITY_ALPHA / (2 * n)))
        lo, hi = mean - k * sigma, mean + k * sigma
        beyond = np.flatnonzero((x < lo) | (x > hi)).tolist()
        if beyond:
            shown = ", ".join(f"{x[i]:.4f}" for i in beyond[:3]) + (f" and {len(beyond) - 3} more" if len(beyond) > 3 else "")
            which = "a value" if len(beyond) == 1 else f"{len(beyond)} values"
            out.append(f"{which} beyond the control limits: {shown} (limits {lo:.4f} to {hi:.4f})")
    var = float(np.square(x - mean).sum()) / (n - 1)
    if var > 0:
        ratio = float(np.square(d).sum()) / (n - 1) / var
        z = (ratio - 2.0) / math.sqrt(4.0 * (n - 2) / ((n - 1) * (n + 1)))
        p = norm_cdf(z)
        if p < STABILITY_ALPHA:
            out.append(
                f"consecutive parts closer than the overall scatter (von Neumann ratio {ratio:.2f}, expected 2; "
                f"p = {p:.2g}): a drift or a shift"
            )
    return tuple(out)


def _shapiro(x: Any) -> float | None:
    if x.size < 3 or x.size > 5000 or float(x.max() - x.min()) <= 0:
        return None
    try:
        return shapiro_wilk(x)[1]  # not scipy.stats.shapiro: its import alone cost more than a 70-row study
    except ValueError:  # a spread too small to scale
        return None


def capability(
    values: Iterable[float] | Any,
    lower: float | None,
    upper: float | None,
    confidence: float = CONFIDENCE,
    *,
    extra_signals: Sequence[str] = (),
) -> CapabilityResult:
    """Capability of ``values`` (in part order, a list or an array; NaN and infinite values left
    out) against the limits (None or infinite: no limit on that side), as :data:`METHOD` says.
    ``extra_signals`` are further reasons the process was not stable.

    >>> r = capability([10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.02, 9.98, 10.01, 9.99], 9.7, 10.3)
    >>> round(r.cp.value, 2), round(r.ppk.value, 2), r.stable, r.meaningful
    (1.43, 1.86, True, True)
    >>> one = capability([0.004, 0.006, 0.005, 0.007, 0.005], None, 0.02)
    >>> one.cp is None and one.pp is None, round(one.cpk.value, 2)
    (True, 3.14)
    """
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float).reshape(-1)
    x = x[np.isfinite(x)]
    n = int(x.size)
    extra = {"signals": tuple(extra_signals)}
    if n == 0:
        return _indices(0, None, None, None, lower, upper, confidence, **extra)
    mean = float(x.mean())
    if n < 2:
        return _indices(1, mean, None, None, lower, upper, confidence, **extra)
    s_within = float(np.abs(np.diff(x)).sum()) / (n - 1) / _D2
    s_overall = math.sqrt(float(np.square(x - mean).sum()) / (n - 1))
    signals = (*stability_signals(x), *extra_signals)
    return _indices(n, mean, s_within, s_overall, lower, upper, confidence, signals=signals, normality_p=_shapiro(x))


@register("capability")
class Capability:
    """Running capability of a feature against ``lower``/``upper`` (O(1) state per update): the
    indices of :func:`capability` from sums kept as values come (no normality check or stability
    signals: it keeps no values).

    Cp = (U - L) / 6 sigma_within with the chi-square interval; Cpk and Ppk = min distance of the
    mean to a limit over 3 sigma (within resp. overall) with Bissell's normal approximation
    ``z sqrt(1/(9n) + C^2/(2(n-1)))``. sigma_within = mean moving range / 1.128, so a slow drift
    lowers Ppk before it lowers Cpk. NaN or infinite values are skipped (``skipped``).

    References: Montgomery, *Introduction to SQC*, 8.3 (chi-square CI of Cp); A. F. Bissell, "How
    reliable is your capability index?", Applied Statistics 39(3), 1990, pp. 331-340.

    >>> cap = Capability(lower=-3.0, upper=3.0)
    >>> r = [cap.update(x) for x in (0.5, -0.5, 1.0, -1.0, 0.2, -0.2)][-1]
    >>> round(r.ppk.value, 2), r.n
    (1.39, 6)
    """

    def __init__(self, lower: float = -1.0, upper: float = 1.0, confidence: float = CONFIDENCE) -> None:
        self.lower = float(lower)
        self.upper = float(upper)
        if math.isnan(self.lower) or math.isnan(self.upper) or not self.lower < self.upper:
            raise DetectionError(f"lower ({lower}) must be below upper ({upper})")
        if not (math.isfinite(self.lower) or math.isfinite(self.upper)):
            raise DetectionError("at least one capability limit must be finite")
        self.confidence = check_range("confidence", confidence, 0, 1, lo_open=True, hi_open=True)
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._mr = 0.0
        self._last: float | None = None

    def result(self) -> CapabilityResult:
        s_within = (self._mr / (self._n - 1)) / _D2 if self._n >= 2 else None
        s_overall = math.sqrt(self._m2 / (self._n - 1)) if self._n >= 2 else None
        mean = self._mean if self._n else None
        return _indices(self._n, mean, s_within, s_overall, self.lower, self.upper, self.confidence)

    def update(self, x: float) -> CapabilityResult:
        if not check_finite(x):
            return replace(self.result(), skipped=True)
        self.add(x)
        return self.result()

    def add(self, x: float) -> None:
        """Take one value without computing the indices (for callers that ask :meth:`result` rarely)."""
        if not check_finite(x):
            return
        x = float(x)
        self._n += 1
        d = x - self._mean
        self._mean += d / self._n
        self._m2 += d * (x - self._mean)
        if self._last is not None:
            self._mr += abs(x - self._last)
        self._last = x

    def state(self) -> dict[str, Any]:
        return {
            "lower": _enc(self.lower),
            "upper": _enc(self.upper),
            "confidence": self.confidence,
            "n": self._n,
            "mean": self._mean,
            "m2": self._m2,
            "mr": self._mr,
            "last": self._last,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Capability:
        obj = cls(float(state["lower"]), float(state["upper"]), state["confidence"])
        obj._n, obj._mean, obj._m2, obj._mr = int(state["n"]), float(state["mean"]), float(state["m2"]), float(state["mr"])
        obj._last = None if state["last"] is None else float(state["last"])
        return obj


def _enc(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
