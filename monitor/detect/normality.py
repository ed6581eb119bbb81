"""The Shapiro-Wilk test of normality (Royston's algorithm AS R94), on numpy.

A capability study says whether its values look normal (Cp and Cpk assume it). ``scipy.stats``
has the test, but importing ``scipy.stats`` costs about 0.4 s of CPU, more than the whole rest of
``monitor parts --capability`` on a large store; the algorithm itself is a few vector operations.
This is the same algorithm as ``scipy.stats.shapiro`` (whose C code is a translation of AS R94),
in double precision with the normal quantiles of :mod:`monitor.detect.distributions` (AS 241), and
agrees with it to about 1e-7 in W and p (``tests/detect/test_normality.py`` compares them on
samples of every size range).

References: J. P. Royston, "Remark AS R94: A remark on algorithm AS 181: the W-test for
normality", Applied Statistics 44(4), 1995, pp. 547-551; J. P. Royston, "Approximating the
Shapiro-Wilk W-test for non-normality", Statistics and Computing 2, 1992, pp. 117-119.

>>> w, p = shapiro_wilk([2.1, 2.4, 1.9, 2.0, 2.2, 2.3, 1.8, 2.05, 2.15, 1.95])
>>> round(w, 3), round(p, 3)
(0.99, 0.997)
>>> p = shapiro_wilk([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 3.0])[1]  # one wild reading
>>> p < 0.001
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from monitor.detect.distributions import norm_cdf, norm_ppf

__all__ = ["shapiro_wilk"]

_C1 = (0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)
_C3 = (0.5440, -0.39978, 0.025054, -6.714e-4)
_C4 = (1.3822, -0.77857, 0.062767, -0.0020322)
_C5 = (-1.5861, -0.31082, -0.083751, 0.0038915)
_C6 = (-0.4803, -0.082676, 0.0030302)
_G = (-2.273, 0.459)
_SMALL = 1e-19


def _poly(c: tuple[float, ...], x: float) -> float:
    """c[0] + c[1] x + c[2] x^2 + ... (Horner)."""
    out = 0.0
    for coefficient in reversed(c):
        out = out * x + coefficient
    return out


@lru_cache(maxsize=32)
def _coefficients(n: int) -> Any:
    """The n//2 coefficients a_i of the lower half (Royston's approximation, AS R94); kept per n
    (read-only), as every feature of a batch has the same n."""
    a = _royston(n)
    a.setflags(write=False)
    return a


def _royston(n: int) -> Any:
    half = n // 2
    if n == 3:
        return np.array([math.sqrt(0.5)])
    m = norm_ppf((np.arange(1, half + 1) - 0.375) / (n + 0.25))  # expected normal order statistics (lower half)
    summ2 = 2.0 * float(np.dot(m, m))
    ssumm2 = math.sqrt(summ2)
    rsn = 1.0 / math.sqrt(n)
    a1 = _poly(_C1, rsn) - float(m[0]) / ssumm2
    a = np.empty(half)
    if n > 5:
        a2 = -float(m[1]) / ssumm2 + _poly(_C2, rsn)
        fac = math.sqrt((summ2 - 2.0 * float(m[0]) ** 2 - 2.0 * float(m[1]) ** 2) / (1.0 - 2.0 * a1**2 - 2.0 * a2**2))
        a[1] = a2
        first = 2
    else:
        fac = math.sqrt((summ2 - 2.0 * float(m[0]) ** 2) / (1.0 - 2.0 * a1**2))
        first = 1
    a[0] = a1
    a[first:] = -m[first:] / fac
    return a


def shapiro_wilk(values: Iterable[float] | Any) -> tuple[float, float]:
    """(W, p) of the Shapiro-Wilk test for ``values`` (3 to 5,000 finite values, not all equal; p
    is the probability of a W this small from a normal sample).

    Raises ValueError outside that domain (the p-value is not defined there)."""
    x = np.sort(np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float).reshape(-1))
    n = int(x.size)
    if n < 3 or n > 5000:
        raise ValueError(f"the Shapiro-Wilk test takes 3 to 5000 values, not {n}")
    if not np.isfinite(x).all():
        raise ValueError("the Shapiro-Wilk test takes finite values only")
    x = x - x[n // 2]  # centred near the median first, as scipy.stats.shapiro does (fewer rounding errors)
    spread = float(x[-1] - x[0])
    if spread < _SMALL:
        raise ValueError("the Shapiro-Wilk test needs values that are not all equal")
    a = _coefficients(n)
    half = n // 2
    weights = np.zeros(n)
    weights[:half] = -a
    weights[n - half :] = a[::-1]
    scaled = x / spread
    wc = weights - weights.mean()
    xc = scaled - scaled.mean()
    ssa = float(np.dot(wc, wc))
    ssx = float(np.dot(xc, xc))
    sax = float(np.dot(wc, xc))
    root = math.sqrt(ssa * ssx)
    w1 = (root - sax) * (root + sax) / (ssa * ssx)  # 1 - W, without cancellation near W = 1
    w = 1.0 - w1
    if n == 3:
        p = 1.909859317102744 * (math.asin(math.sqrt(w)) - 1.047197551196598)  # exact (6/pi)(asin(sqrt W) - pi/3)
        return w, max(p, 0.0)
    if w1 <= 0.0:
        return w, 1.0
    y = math.log(w1)
    if n <= 11:
        gamma = _poly(_G, float(n))
        if y >= gamma:
            return w, 1e-99  # W this small is out of the approximation's range: as AS R94 answers
        y = -math.log(gamma - y)
        mean = _poly(_C3, float(n))
        sd = math.exp(_poly(_C4, float(n)))
    else:
        ln = math.log(n)
        mean = _poly(_C5, ln)
        sd = math.exp(_poly(_C6, ln))
    return w, norm_cdf(-(y - mean) / sd)
