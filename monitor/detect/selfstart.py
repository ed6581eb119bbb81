"""Self-starting CUSUM on Quesenberry's Q statistics: no Phase I, no known mean or sigma."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.special import ndtri, stdtr

from monitor.detect.arl import cusum_h
from monitor.detect.base import check_finite, check_range, register

__all__ = ["QStatistic", "SelfStartResult", "SelfStartingCusum"]


class QStatistic:
    """Quesenberry's Q: each value standardized by the mean and sd of the values before it.

    For the r-th value (r >= 3) ``Q_r = Phi^-1(T_{r-2}(sqrt((r-1)/r) (x_r - mean_{r-1}) / s_{r-1}))``;
    in control the Q are independent N(0, 1) whatever the unknown mean and sigma, so any chart with
    known-parameter limits can run on them from the third part. With a known ``sigma`` the
    t-distribution is replaced by the normal and Q exists from the second value.

    Reference: C. P. Quesenberry, "SPC Q charts for start-up processes and short or long runs",
    Journal of Quality Technology 23(3), 1991, pp. 213-224.

    >>> q = QStatistic()
    >>> [None if v is None else round(v, 2) for v in map(q.update, [10.0, 10.2, 9.9, 10.1])]
    [None, None, -0.75, 0.33]
    """

    def __init__(self, sigma: float | None = None) -> None:
        self.sigma = check_range("sigma", sigma, 0.0, lo_open=True) if sigma is not None else None
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        """Mean of the values absorbed so far (0 before the first)."""
        return self._mean

    def peek(self, x: float) -> float | None:
        """Q of ``x`` against the values so far, without absorbing it."""
        r = self._n + 1
        if self.sigma is not None:
            if r < 2:
                return None
            return math.sqrt((r - 1) / r) * (x - self._mean) / self.sigma
        if r < 3:
            return None
        s = math.sqrt(self._m2 / (self._n - 1))
        if s <= 0:
            return None
        tval = math.sqrt((r - 1) / r) * (x - self._mean) / s
        p = float(stdtr(r - 2, tval))
        p = min(max(p, 1e-15), 1 - 1e-15)
        return float(ndtri(p))

    def absorb(self, x: float) -> None:
        """Add ``x`` to the running mean and variance (Welford)."""
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    def update(self, x: float) -> float | None:
        q = self.peek(x)
        self.absorb(x)
        return q

    def state(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "n": self._n, "mean": self._mean, "m2": self._m2}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QStatistic:
        obj = cls(state["sigma"])
        obj._n, obj._mean, obj._m2 = int(state["n"]), float(state["mean"]), float(state["m2"])
        return obj


@dataclass(frozen=True, slots=True)
class SelfStartResult:
    """The Q statistic of the value (None while still starting) and the CUSUM sums on Q."""

    n: int
    q: float | None
    upper: float
    lower: float
    h: float
    alarm: bool
    direction: int
    skipped: bool = False


@register("selfstart")
class SelfStartingCusum:
    """Two-sided tabular CUSUM run on Quesenberry Q statistics (Hawkins' self-starting CUSUM).

    Useful from the third part of a batch: no mean or sigma needs to be known. While a sum is above
    ``h`` the value is not absorbed into the running mean, so a shift does not teach itself in.

    Parameters: ``k`` >= 0, ``h`` > 0 or ``arl0`` > 1 (h solved as for a known-parameter CUSUM,
    which is exact here because Q is N(0, 1) in control), ``sigma`` known or None (learned).
    NaN or infinite values are skipped (state unchanged, ``skipped``).

    References: D. M. Hawkins, "Self-starting CUSUM charts for location and scale", The
    Statistician 36, 1987, pp. 299-315; D. M. Hawkins and D. H. Olwell, *Cumulative Sum Charts and
    Charting for Quality Improvement*, Springer 1998, ch. 7.

    >>> chart = SelfStartingCusum(k=0.5, h=4.0)
    >>> data = [10.0, 10.2, 9.9, 10.1, 9.8, 10.0, 10.1, 9.9, 10.0, 10.1, 10.6, 10.5, 10.7, 10.6]
    >>> [r.n for r in map(chart.update, data) if r.alarm][:1]   # shift of about 4 sigma at part 11
    [12]
    """

    def __init__(self, k: float = 0.5, h: float | None = None, arl0: float = 500.0, sigma: float | None = None) -> None:
        self.k = check_range("k", k, 0.0)
        self.arl0 = check_range("arl0", arl0, 1.0, lo_open=True)
        self.h = check_range("h", h, 0.0, lo_open=True) if h is not None else None
        self.sigma = check_range("sigma", sigma, 0.0, lo_open=True) if sigma is not None else None
        self.interval = self.h if self.h is not None else cusum_h(self.k, self.arl0)
        self._q = QStatistic(self.sigma)
        self._up = self._down = 0.0
        self._n = 0

    def reset(self) -> None:
        self._q.reset()
        self._up = self._down = 0.0
        self._n = 0

    def update(self, x: float) -> SelfStartResult:
        if not check_finite(x):
            return SelfStartResult(self._n, None, self._up, self._down, self.interval, False, 0, True)
        self._n += 1
        q = self._q.peek(float(x))
        if q is not None:
            self._up = max(0.0, self._up + q - self.k)
            self._down = max(0.0, self._down - q - self.k)
        alarm = self._up > self.interval or self._down > self.interval
        if not alarm:
            self._q.absorb(float(x))
        direction = (1 if self._up >= self._down else -1) if alarm else 0
        return SelfStartResult(self._n, q, self._up, self._down, self.interval, alarm, direction)

    def state(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "h": self.h,
            "arl0": self.arl0,
            "sigma": self.sigma,
            "q": self._q.state(),
            "up": self._up,
            "down": self._down,
            "n": self._n,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SelfStartingCusum:
        obj = cls(state["k"], state["h"], state["arl0"], state["sigma"])
        obj._q = QStatistic.from_state(state["q"])
        obj._up, obj._down, obj._n = float(state["up"]), float(state["down"]), int(state["n"])
        return obj
