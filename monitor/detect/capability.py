"""Process capability of a batch: Cp, Cpk and Ppk with confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import chdtri, ndtri

from monitor.detect.base import check_finite, check_range, register
from monitor.errors import DetectionError

__all__ = ["Capability", "CapabilityResult", "Interval", "capability", "capability_of_array"]

_D2 = 1.128  # E|x_i - x_{i-1}| / sigma for normal individuals (moving range of two)


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
    """Capability after ``n`` values; indices are None until two values (and both limits for Cp)."""

    n: int
    mean: float
    sigma_within: float | None
    sigma_overall: float | None
    cp: Interval | None
    cpk: Interval | None
    ppk: Interval | None
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary; ``cp``/``cpk``/``ppk`` are the point values, ``*_ci`` their intervals."""
        out: dict[str, Any] = {
            "n": self.n,
            "mean": self.mean,
            "sigma_within": self.sigma_within,
            "sigma_overall": self.sigma_overall,
        }
        for name in ("cp", "cpk", "ppk"):
            iv: Interval | None = getattr(self, name)
            out[name] = iv.value if iv else None
            out[f"{name}_ci"] = [iv.lo, iv.hi] if iv else None
        return out


def _bissell(index: float, n: int, z: float) -> Interval:
    half = z * math.sqrt(1.0 / (9.0 * n) + index**2 / (2.0 * (n - 1)))
    return Interval(index, index - half, index + half)


def _indices(
    n: int, mean: float, s_within: float | None, s_overall: float | None, lower: float, upper: float, confidence: float
) -> CapabilityResult:
    if n < 2 or s_within is None or s_overall is None or s_within <= 0 or s_overall <= 0:
        return CapabilityResult(n, mean, s_within, s_overall, None, None, None)
    alpha = 1.0 - confidence
    z = float(-ndtri(alpha / 2))
    cp = None
    if math.isfinite(lower) and math.isfinite(upper):
        value = (upper - lower) / (6.0 * s_within)
        df = n - 1
        cp = Interval(
            value, value * math.sqrt(float(chdtri(df, 1 - alpha / 2)) / df), value * math.sqrt(float(chdtri(df, alpha / 2)) / df)
        )

    def k_index(s: float) -> float:
        return min((upper - mean) / (3.0 * s), (mean - lower) / (3.0 * s))

    return CapabilityResult(
        n, mean, s_within, s_overall, cp, _bissell(k_index(s_within), n, z), _bissell(k_index(s_overall), n, z)
    )


def capability(values: Iterable[float], lower: float, upper: float, confidence: float = 0.95) -> CapabilityResult:
    """Cp, Cpk (within sigma from the mean moving range) and Ppk (overall sd) of ``values``, in order.

    Non-finite values are ignored. A one-sided limit is given as -inf or +inf (Cp is then None).

    >>> r = capability([10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.02, 9.98], 9.7, 10.3)
    >>> round(r.cp.value, 2), round(r.cpk.value, 2), r.cp.lo < r.cp.value < r.cp.hi
    (1.2, 1.2, True)
    """
    cap = Capability(lower, upper, confidence)
    result = cap.result()
    for v in values:
        result = cap.update(v)
    return result


def capability_of_array(values: Any, lower: float, upper: float, confidence: float = 0.95) -> CapabilityResult:
    """:func:`capability` of a whole array at once (numpy, no Python loop): the same indices from the
    same sums, for reports and queries over thousands of stored parts. Non-finite values are ignored.

    >>> r = capability_of_array([10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.02, 9.98], 9.7, 10.3)
    >>> round(r.cp.value, 2), round(r.cpk.value, 2)
    (1.2, 1.2)
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return _indices(0, 0.0, None, None, float(lower), float(upper), confidence)
    mean = float(x.mean())
    if n < 2:
        return _indices(n, mean, None, None, float(lower), float(upper), confidence)
    m2 = float(np.square(x - mean).sum())
    mr = float(np.abs(np.diff(x)).sum())
    return _indices(n, mean, (mr / (n - 1)) / _D2, math.sqrt(m2 / (n - 1)), float(lower), float(upper), confidence)


@register("capability")
class Capability:
    """Running capability of a feature against ``lower``/``upper`` (O(1) state per update).

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

    def __init__(self, lower: float = -1.0, upper: float = 1.0, confidence: float = 0.95) -> None:
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
        return _indices(self._n, self._mean, s_within, s_overall, self.lower, self.upper, self.confidence)

    def update(self, x: float) -> CapabilityResult:
        if not check_finite(x):
            r = self.result()
            return CapabilityResult(r.n, r.mean, r.sigma_within, r.sigma_overall, r.cp, r.cpk, r.ppk, True)
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
