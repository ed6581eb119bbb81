"""The few normal and chi-square functions a capability study needs, on the standard library and numpy.

``scipy.special`` has them, but importing it costs about 0.2 s of CPU (it pulls in scipy's
array-API layer), more than a 70-row ``monitor parts --capability`` spends reading 300,000 values;
the daemon's detectors import scipy anyway, the CLI and the dashboard's capability need not. Each
function agrees with its scipy counterpart (``ndtr``, ``ndtri``, ``chdtri``) to about 1e-12
relative or better (``tests/detect/test_normality.py`` compares them over their whole range).

- :func:`norm_cdf`: Phi(x) from :func:`math.erfc`;
- :func:`norm_ppf`: its inverse, Wichura's algorithm AS 241 (PPND16, the one
  :meth:`statistics.NormalDist.inv_cdf` uses), on scalars or arrays;
- :func:`chi2_isf`: the chi-square quantile with upper tail ``q`` (scipy's ``chdtri(df, q)``),
  by safeguarded Newton steps on the regularized incomplete gamma function from the
  Wilson-Hilferty start.

References: M. J. Wichura, "Algorithm AS 241: The percentage points of the normal distribution",
Applied Statistics 37(3), 1988, pp. 477-484; Abramowitz & Stegun 6.5.29 (the series of the
incomplete gamma function); E. B. Wilson and M. M. Hilferty, "The distribution of chi-square",
PNAS 17, 1931, pp. 684-688.

>>> round(norm_ppf(0.975), 6), round(norm_cdf(1.959964), 6)
(1.959964, 0.975)
>>> round(chi2_isf(0.025, 9), 4)  # the upper 2.5% point of chi-square with 9 degrees of freedom
19.0228
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, overload

import numpy as np

__all__ = ["chi2_isf", "norm_cdf", "norm_ppf"]

# AS 241 (PPND16) coefficients, highest power first, as in CPython's statistics module
_CENTRAL_NUM = (
    2.5090809287301226727e3,
    3.3430575583588128105e4,
    6.7265770927008700853e4,
    4.5921953931549871457e4,
    1.3731693765509461125e4,
    1.9715909503065514427e3,
    1.3314166789178437745e2,
    3.3871328727963666080e0,
)
_CENTRAL_DEN = (
    5.2264952788528545610e3,
    2.8729085735721942674e4,
    3.9307895800092710610e4,
    2.1213794301586595867e4,
    5.3941960214247511077e3,
    6.8718700749205790830e2,
    4.2313330701600911252e1,
    1.0,
)
_NEAR_NUM = (
    7.7454501427834140764e-4,
    2.2723844989269184583e-2,
    2.4178072517745061177e-1,
    1.2704582524523683826e0,
    3.6478483247632046050e0,
    5.7694972214606914055e0,
    4.6303378461565452959e0,
    1.4234371107496835773e0,
)
_NEAR_DEN = (
    1.05075007164441684324e-9,
    5.4759380849953449460e-4,
    1.5198666563616457197e-2,
    1.4810397642748007459e-1,
    6.8976733498510000455e-1,
    1.6763848301838038494e0,
    2.0531916266377588219e0,
    1.0,
)
_FAR_NUM = (
    2.01033439929228813265e-7,
    2.71155556874348757815e-5,
    1.24266094738807843860e-3,
    2.65321895265761230930e-2,
    2.96560571828504891230e-1,
    1.7848265399172913358e0,
    5.4637849111641143699e0,
    6.6579046435011037772e0,
)
_FAR_DEN = (
    2.04426310338993978564e-15,
    1.42151175831644588870e-7,
    1.84631831751005468180e-5,
    7.86869131145613259100e-4,
    1.48753612908506148525e-2,
    1.36929880922735805310e-1,
    5.99832206555887937690e-1,
    1.0,
)


def _horner(coefficients: tuple[float, ...], r: Any) -> Any:
    out = coefficients[0] * r + coefficients[1]
    for c in coefficients[2:]:
        out = out * r + c
    return out


def norm_cdf(x: float) -> float:
    """Phi(x), the standard normal distribution function."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@overload
def norm_ppf(p: float) -> float: ...
@overload
def norm_ppf(p: Any) -> Any: ...
def norm_ppf(p: Any) -> Any:
    """The standard normal quantile of ``p`` (0 < p < 1; -inf and inf at 0 and 1, NaN outside);
    a float for a float, an array for an array."""
    if isinstance(p, (int, float)):
        return _norm_ppf_scalar(float(p))
    return _norm_ppf(p)


@lru_cache(maxsize=256)
def _norm_ppf_scalar(p: float) -> float:
    """A float's quantile, kept: a capability asks for the same few (its confidence, a stability
    limit per batch size) for every feature, ~0.05 ms each through the array code."""
    return float(_norm_ppf(p))


def _norm_ppf(p: Any) -> Any:
    pa = np.asarray(p, dtype=float)
    q = pa - 0.5
    central = np.abs(q) <= 0.425
    out = np.empty_like(pa)
    if central.any():
        qc = q[central]
        r = 0.180625 - qc * qc
        out[central] = qc * _horner(_CENTRAL_NUM, r) / _horner(_CENTRAL_DEN, r)
    tail = ~central
    if tail.any():
        pt, qt = pa[tail], q[tail]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.sqrt(-np.log(np.where(qt <= 0.0, pt, 1.0 - pt)))
            near = r <= 5.0
            x = np.where(
                near,
                _horner(_NEAR_NUM, r - 1.6) / _horner(_NEAR_DEN, r - 1.6),
                _horner(_FAR_NUM, r - 5.0) / _horner(_FAR_DEN, r - 5.0),
            )
        x = np.where(np.isinf(r), np.inf, x)
        out[tail] = np.where(qt < 0.0, -x, x)
    out[(pa < 0.0) | (pa > 1.0) | np.isnan(pa)] = np.nan
    return out


def _lower_gamma(a: float, x: float) -> float:
    """P(a, x), the regularized lower incomplete gamma function, by its power series
    (A&S 6.5.29): exact to rounding for the moderate upper tails a quantile is asked for."""
    if x <= 0.0:
        return 0.0
    terms = int(max(0.0, x - a) + 12.0 * math.sqrt(x + 1.0) + 40.0)
    while True:
        ratios = x / (a + np.arange(1.0, terms + 1.0))
        products = np.cumprod(ratios)
        if products[-1] < 1e-17 * (1.0 + float(products.sum())) or terms > 10_000_000:
            break
        terms *= 2
    total = 1.0 + float(products.sum())
    return min(1.0, math.exp(a * math.log(x) - x - math.lgamma(a + 1.0)) * total)


@lru_cache(maxsize=256)
def chi2_isf(q: float, df: float) -> float:
    """The x with P(chi-square with ``df`` degrees of freedom > x) = ``q`` (0 < q < 1, df > 0):
    scipy's ``chdtri(df, q)``. Kept per (q, df): every feature of a batch has the same parts, so
    the same two quantiles, ~0.2 ms each (Newton steps on a series)."""
    if not (0.0 < q < 1.0) or not df > 0.0:
        raise ValueError(f"chi2_isf needs 0 < q < 1 and df > 0, not q={q}, df={df}")
    a = df / 2.0
    target = 1.0 - q  # solve P(a, y) = 1 - q for y = x / 2
    z = norm_ppf(target)
    start = df * (1.0 - 2.0 / (9.0 * df) + z * math.sqrt(2.0 / (9.0 * df))) ** 3
    y = start / 2.0 if start > 0.0 else a * target ** (1.0 / a)  # Wilson-Hilferty; its small-df tail otherwise
    lo, hi = 0.0, math.inf
    for _ in range(200):
        f = _lower_gamma(a, y) - target
        if f > 0.0:
            hi = min(hi, y)
        else:
            lo = max(lo, y)
        density = math.exp((a - 1.0) * math.log(y) - y - math.lgamma(a)) if y > 0.0 else 0.0
        step = f / density if density > 0.0 else math.inf
        new = y - step
        if not (lo < new < hi) or not math.isfinite(new):  # outside the bracket: bisect (or grow it)
            new = (lo + hi) / 2.0 if math.isfinite(hi) else 2.0 * max(y, 1.0)
        if abs(new - y) <= 1e-15 * y:
            return 2.0 * new
        y = new
    return 2.0 * y
