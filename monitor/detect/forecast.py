"""When will the first bad part come? The breach forecast from posterior predictive samples.

A feature's channels (one for a size, one per axis for a position) each give :class:`Draws` of
single future parts from their trend model (:meth:`monitor.detect.trend.TrendModel.draws`).
:func:`breach_forecast` turns them into what a machinist needs:

* the probability that part ``h`` ahead is out of tolerance (mixture over the draws), and the first
  part where it reaches the risk threshold (``breach_probability``);
* the part where the mean is expected to reach the limit (average of the drawn mean paths);
* the first out-of-tolerance part as a distribution: its median and a 90% interval, from the
  simulated sequences of single parts (AR(1) scatter included) under the draws that foresee a
  breach, so the interval is calibrated against the part the machinist will actually see fail
  (checked by coverage in ``tests/detect/test_forecast.py`` and ``bench/detection.py``);
* ``breach_share``: the posterior share of draws whose own forecast reaches the risk threshold
  at all (within the search). A breach is forecast only when this share is large, that is when the
  models the data favour agree that the feature is heading out: a saturating drift whose plateau
  lies inside the band forecasts no breach even while a straight line through its first parts
  would.

A position feature is out of tolerance when ``2 sqrt(sum dx^2) > tolerance``; per draw the squared
radius over the pooled variance is non-central chi-square, evaluated with Sankaran's normal
approximation (P. B. Patnaik 1949; M. Sankaran, "Approximations to the non-central chi-square
distribution", Biometrika 50, 1963, pp. 199-204), accurate to about 0.002 here and vectorised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtr

from monitor.detect.trend import PHIS, Draws, DrawSource, PosteriorArrays, TrendModel, noise_tables
from monitor.detect.trend import warm_up as warm_up_tables
from monitor.errors import DetectionError

__all__ = [
    "AxisCone",
    "BreachForecast",
    "breach_forecast",
    "breach_forecast_compiled",
    "breach_forecast_sampled",
    "noncentral_chi2_sf",
    "warm_up",
    "warm_up_compiled",
]


@dataclass(frozen=True, slots=True)
class AxisCone:
    """Forecast of one channel's single parts 1..H ahead: median, and the 5% and 95% quantiles (mm,
    deviation from nominal)."""

    median: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class BreachForecast:
    """The forecast of one feature after a part, in parts *ahead* of that part.

    ``p_out[h - 1]`` is P(part h ahead out of tolerance); ``risk_parts`` the first h where it
    reaches ``threshold`` (None: not within ``searched`` parts); ``mean_limit_parts`` the first h
    where the posterior mean path is beyond the limit; ``first_out`` the lower end, median and
    upper end of the 90% interval of the first out-of-tolerance part (``math.inf``: beyond the
    search); ``breach_share`` the share
    of posterior draws that reach the threshold at all within the search (``breach`` additionally
    needs the mixture to reach it within ``within`` parts). ``cones`` per channel
    (empty unless asked for).
    """

    threshold: float
    within: int
    searched: int
    p_out: tuple[float, ...]
    risk_parts: int | None
    mean_limit_parts: int | None
    first_out: tuple[float, float, float]
    breach_share: float
    cones: dict[str, AxisCone]

    @property
    def breach(self) -> bool:
        """A breach is due within the horizon: the risk threshold is reached, or the first bad part is
        more likely than not, within ``within`` parts."""
        return self.due_parts is not None and self.due_parts <= self.within

    @property
    def due_parts(self) -> int | None:
        """Parts until the earlier of the risk threshold and the median first bad part (None: neither found)."""
        cands = [v for v in (self.risk_parts, self.first_out[1]) if v is not None and math.isfinite(v)]
        return int(min(cands)) if cands else None


_LOWER_TAIL = 0.05
_INTERVAL_MASS = 0.85
"""Share of the first-bad-part draws the "90%" interval holds, above the ``_LOWER_TAIL`` left below it.

Recalibrated (V. Kuleshov et al., "Accurate uncertainties for deep learning using calibrated
regression", ICML 2018: choose the nominal level whose measured coverage is the wanted one):
the posterior predictive's upper tail is heavier than the first bad parts that follow (the top
tenth of its mass held a quarter of its share of them), so an interval holding 90% of the draws
contained the first bad part 97% of the time. Measured on bench/detection.py's tuning seeds
(1000-1007, not those of the reported table), leaving drifts, 877 forecasts: 90% of the draws ->
97.3% coverage at every part with an active forecast, 95.2% at the alert; 85% -> 94.1% and 92.1%."""


def _quantiles(first: np.ndarray) -> tuple[float, float, float]:
    """Lower end, median and upper end of the 90% interval of the first bad part (parts ahead; inf:
    none within the search), from its draws.

    The first bad part is a whole number, and a few parts before a breach much of its distribution
    sits on the very next part: an equal-tailed interval cannot then leave 5% below its lower end
    (nothing lies below the next part). The interval is the discrete one: the lower end leaves at
    most ``_LOWER_TAIL`` of the draws below it, the upper end is the first part by which
    ``_INTERVAL_MASS`` *more* of them have failed (so the tail the lower end could not leave out is
    not added to the interval's width), with the whole numbers' rounding on the generous side."""
    srt = np.sort(first)
    m = srt.size
    k = math.floor(_LOWER_TAIL * m)
    lo = float(srt[k])
    below = int(np.searchsorted(srt, lo, side="left")) if math.isfinite(lo) else k
    top = below + math.ceil(_INTERVAL_MASS * m) - 1
    hi = float(srt[top]) if top < m else math.inf
    pos = 0.5 * (m - 1)
    i = int(pos)
    a, b = float(srt[i]), float(srt[min(i + 1, m - 1)])
    mid = a if pos == i else (a + (pos - i) * (b - a) if math.isfinite(b) else b)
    return lo, float(round(mid)) if math.isfinite(mid) else mid, hi


def noncentral_chi2_sf(x: np.ndarray, k: int, lam: np.ndarray) -> np.ndarray:
    """P(chi'^2(k, lam) > x), Sankaran's approximation (vectorised, only ``ndtr`` and powers)."""
    return _sankaran_sf(np.array(x, dtype=float), k, np.array(lam, dtype=float))


_NDTR_ONE = 8.5
_NDTR_ZERO = -40.0
"""In doubles, scipy's ``ndtr(z)`` is exactly 1.0 from z = 8.2924 on, so ``1 - ndtr(z)`` is exactly
0.0 there; ``ndtr(z)`` is below 1e-17 from z = -8.5 down, so ``1 - ndtr(z)`` is exactly 1.0 there; and
``ndtr(z)`` is exactly 0.0 below z = -37.7 (``tests/detect/test_forecast.py`` checks these bounds on
a fine grid and on millions of random arguments). Beyond them nothing is computed: late in a
drift most (draw, part) probabilities of a breach forecast are exactly 1, and skipping them saves
most of ndtr's cost with every result the same double."""


def _ndtr(z: np.ndarray) -> np.ndarray:
    """``ndtr(z)``, bit for bit, evaluated only where it is not exactly 0 or 1 (see ``_NDTR_ONE``)."""
    one = z >= _NDTR_ONE
    inner = np.flatnonzero(~(one | (z <= _NDTR_ZERO)))  # NaN is inner: ndtr gives NaN
    out = one.astype(float)
    flat = out.reshape(-1)
    flat[inner] = ndtr(z.reshape(-1)[inner])  # not ndtr(where=): scipy 1.17 crashes on masked loops
    return out


def _ndtr_sf(z: np.ndarray) -> np.ndarray:
    """``1.0 - ndtr(z)``, bit for bit, evaluated only where it is not exactly 0 or 1 (see ``_NDTR_ONE``)."""
    one = z <= -_NDTR_ONE
    inner = np.flatnonzero(~(one | (z >= _NDTR_ONE)))  # NaN is inner
    out = one.astype(float)
    flat = out.reshape(-1)
    flat[inner] = 1.0 - ndtr(z.reshape(-1)[inner])
    return out


def _sankaran_sf(x: np.ndarray, k: int, lam: np.ndarray) -> np.ndarray:
    """:func:`noncentral_chi2_sf` on arrays of its own (both are overwritten), in place.

    Every operation is the one of the textbook form ``1 - ndtr(num / den)`` with
    ``h = 1 - 2/3 kl (k + 3 lam) / k2l^2``, ``p = k2l / kl^2``, ``m = (h - 1)(1 - 3h)``,
    ``num = (x / kl)^h - (1 + h p (h - 1 - 0.5 (2 - h) m p))``, ``den = h sqrt(2p) (1 + 0.5 m p)``
    (``kl = k + lam``, ``k2l = k + 2 lam``), in the same order on the same operands (a product or sum
    of two doubles does not depend on their order), so the result is the same double; only fewer
    arrays are allocated, and ``ndtr`` is skipped where it is exactly 0 or 1."""
    np.maximum(lam, 0.0, out=lam)
    kl = lam + k
    k2l = lam * 2
    k2l += k
    h = lam * 3  # k + 3 lam
    h += k
    t = kl * (2.0 / 3.0)
    h *= t  # 2/3 kl (k + 3 lam)
    np.square(k2l, out=t)
    h /= t
    np.subtract(1.0, h, out=h)
    p = np.square(kl, out=t)
    np.divide(k2l, p, out=p)  # p = k2l / kl^2
    m = h - 1.0
    u = h * 3.0
    np.subtract(1.0, u, out=u)
    m *= u  # m = (h - 1)(1 - 3h)
    num = np.maximum(x, 0.0, out=x)
    num /= kl
    np.power(num, h, out=num)  # (x / kl)^h
    np.subtract(2.0, h, out=u)
    u *= 0.5
    u *= m
    u *= p  # 0.5 (2 - h) m p
    c = np.subtract(h, 1.0, out=kl)
    c -= u  # h - 1 - 0.5 (2 - h) m p
    hp = np.multiply(h, p, out=k2l)
    hp *= c
    hp += 1.0  # 1 + h p (...)
    num -= hp
    den = np.multiply(p, 2.0, out=u)
    np.sqrt(den, out=den)
    den *= h  # h sqrt(2p)
    m *= 0.5
    m *= p
    m += 1.0  # 1 + 0.5 m p
    den *= m
    num /= den
    return _ndtr_sf(num)


def _per_draw(
    draws: Sequence[tuple[str, Draws]], lower: float | None, upper: float | None, tolerance: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw and part ahead, the probability the part is out of tolerance and whether the draw's
    simulated part is; per part ahead, whether the mixture's mean path is beyond the limit. A size
    (``tolerance`` None) has one channel and both deviation limits; a position its axes and the zone's
    diameter. Shared by :func:`breach_forecast` and each slice of :func:`breach_forecast_sampled`,
    so both give the same doubles."""
    if tolerance is None:
        assert lower is not None and upper is not None
        d = draws[0][1]
        sd = np.maximum(d.sd, 1e-300)
        # the limit on the mean's side only (the other is many sds away whenever it matters)
        near = d.mean - upper
        below = d.mean < 0.5 * (lower + upper)  # a NaN mean gives NaN either way
        np.subtract(lower, d.mean, out=near, where=below)
        near /= sd
        out_path = d.paths < lower
        out_path |= d.paths > upper
        centre = d.mean.mean(axis=0)
        return _ndtr(near), out_path, (centre < lower) | (centre > upper)
    r0 = tolerance / 2.0
    k = len(draws)
    r2 = np.square(draws[0][1].mean)  # 0 + a^2 is a^2: the same sums as sum(d.mean**2 ...)
    var = np.square(draws[0][1].sd)
    radius2 = np.square(draws[0][1].paths)
    for _, d in draws[1:]:
        r2 += np.square(d.mean)
        var += np.square(d.sd)
        radius2 += np.square(d.paths)
    var /= k
    np.maximum(var, 1e-300, out=var)
    r2 /= var
    p_draw = _sankaran_sf(np.divide(r0 * r0, var, out=var), k, r2)
    centre = np.sqrt(sum(d.mean.mean(axis=0) ** 2 for _, d in draws))
    return p_draw, radius2 > r0 * r0, centre > r0


def breach_forecast(
    draws: Sequence[tuple[str, Draws]],
    *,
    lower: float | None = None,
    upper: float | None = None,
    tolerance: float | None = None,
    threshold: float = 0.1,
    within: int = 20,
    cones: bool = False,
) -> BreachForecast:
    """Forecast from per-channel draws (deviations from nominal): a size feature gives one channel
    and its ``lower``/``upper`` deviation limits, a position feature its axes and ``tolerance``
    (diameter of the true-position zone). ``cones``: also the per-channel 90% bands (for charts)."""
    _check_limits(len(draws), lower, upper, tolerance)
    horizon = draws[0][1].mean.shape[1]
    within = min(within, horizon)
    with np.errstate(all="ignore"):
        p_draw, out_path, beyond = _per_draw(draws, lower, upper, tolerance)
        p_out = np.clip(np.nan_to_num(p_draw.mean(axis=0), nan=1.0), 0.0, 1.0)
        risk = np.nonzero(p_out >= threshold)[0]
        # draws whose own forecast reaches the risk threshold at all within the search (a saturating
        # drift levelling off inside the band does not; a line, or a plateau beyond the limit, does)
        finite = p_draw if not np.isnan(p_draw).any() else np.nan_to_num(p_draw, nan=1.0)
        predicts = np.max(finite, axis=1) >= threshold
        share = float(predicts.mean())
        hit = out_path.any(axis=1)
        first = np.where(hit, np.argmax(out_path, axis=1) + 1.0, math.inf)
        # the first bad part as the models that foresee one extrapolate it (draws under which the
        # feature never reaches the risk threshold say "never", which is what breach_share weighs)
        if predicts.sum() >= 10:
            first = first[predicts]
        q = _quantiles(first)
        limit = np.nonzero(beyond)[0]
        bands = {}
        if cones:
            for axis, d in draws:
                q5, q50, q95 = np.quantile(d.paths, [0.05, 0.5, 0.95], axis=0)
                bands[axis] = AxisCone(tuple(q50.tolist()), tuple(q5.tolist()), tuple(q95.tolist()))
    return BreachForecast(
        threshold=threshold,
        within=within,
        searched=horizon,
        p_out=tuple(p_out.tolist()),
        risk_parts=int(risk[0]) + 1 if risk.size else None,
        mean_limit_parts=int(limit[0]) + 1 if limit.size else None,
        first_out=(float(q[0]), float(q[1]), float(q[2])),
        breach_share=share,
        cones=bands,
    )


def _stops(within: int, horizon: int) -> list[int]:
    """Where the search may stop: after the ``within`` parts whose probabilities are reported, then
    after twice as many, then at the end."""
    stops = [s for s in (max(1, within), 2 * max(1, within)) if s < horizon]
    return [*stops, horizon]


def _check_limits(channels: int, lower: float | None, upper: float | None, tolerance: float | None) -> None:
    """What every form of the breach forecast refuses: no channel, or a size without its two limits."""
    if not channels:
        raise DetectionError("no channels to forecast")
    if tolerance is None and (channels != 1 or lower is None or upper is None):
        raise DetectionError("a size forecast needs one channel and both deviation limits")


def breach_forecast_sampled(
    sources: Sequence[tuple[str, DrawSource]],
    *,
    lower: float | None = None,
    upper: float | None = None,
    tolerance: float | None = None,
    threshold: float = 0.1,
    within: int = 20,
    search: int | None = None,
) -> BreachForecast:
    """:func:`breach_forecast` over parts 1..``search`` ahead (default: the sources' longest horizon),
    computing the draws' parts ahead in slices and stopping once the parts seen decide every result.

    That is once every draw's simulated parts have gone out of tolerance and every draw's own
    forecast has reached the risk threshold, and the mixture's risk and the mean path have reached
    the threshold and the limit: nothing later can move the first bad part's quantiles, the breach
    share (then 1), ``risk_parts`` or ``mean_limit_parts``. Every result is then the same double as
    :func:`breach_forecast` on the whole horizon's draws, but ``p_out``, which holds the parts up
    to where the mixture's risk was still searched (never fewer than ``within``: the evidence keeps
    those). Late in a drift, when a feature is breaching and the forecast is recomputed with every
    part, the search stops after ``within`` parts instead of 100 (``tests/detect/test_fast_paths.py``
    checks both against each other).

    Once the mixture's risk has reached the threshold (after the first slice), the parts further
    ahead change no result but single draws' own: whether a draw's forecast ever reaches the
    threshold and its first simulated bad part (and the mean path, until it reaches the limit).
    ``p_out`` then ends there, so the compiled form (:func:`breach_forecast_compiled`) computes the
    later slices for the draws still undecided alone: typically 1-30 of 128 that hold up a breaching
    feature's search until part 100 (a stable draw among drifting ones)."""
    _check_limits(len(sources), lower, upper, tolerance)
    horizon = min(src.horizon for _, src in sources) if search is None else search
    within = min(within, horizon)
    first: np.ndarray | None = None
    predicts: np.ndarray | None = None
    p_parts: list[np.ndarray] = []
    risk: int | None = None
    limit: int | None = None
    start = 0
    with np.errstate(all="ignore"):
        for stop in _stops(within, horizon):
            draws = [(axis, src.columns(start, stop)) for axis, src in sources]
            p_draw, out_path, beyond = _per_draw(draws, lower, upper, tolerance)
            p_out = np.clip(np.nan_to_num(p_draw.mean(axis=0), nan=1.0), 0.0, 1.0)
            if risk is None or not p_parts:  # the mixture's risk still searched (see above)
                p_parts.append(p_out)
            if risk is None:
                at = np.nonzero(p_out >= threshold)[0]
                risk = start + int(at[0]) + 1 if at.size else None
            if limit is None:
                at = np.nonzero(beyond)[0]
                limit = start + int(at[0]) + 1 if at.size else None
            finite = p_draw if not np.isnan(p_draw).any() else np.nan_to_num(p_draw, nan=1.0)
            seen = np.max(finite, axis=1) >= threshold
            predicts = seen if predicts is None else predicts | seen
            hit = out_path.any(axis=1)
            here = np.where(hit, np.argmax(out_path, axis=1) + (start + 1.0), math.inf)
            first = here if first is None else np.where(np.isfinite(first), first, here)
            start = stop
            if risk is not None and limit is not None and bool(predicts.all()) and bool(np.isfinite(first).all()):
                break
        assert first is not None and predicts is not None
        share = float(predicts.mean())
        if predicts.sum() >= 10:
            first = first[predicts]
        q = _quantiles(first)
        p_all = p_parts[0] if len(p_parts) == 1 else np.concatenate(p_parts)
    return BreachForecast(
        threshold=threshold,
        within=within,
        searched=horizon,
        p_out=tuple(p_all.tolist()),
        risk_parts=risk,
        mean_limit_parts=limit,
        first_out=(float(q[0]), float(q[1]), float(q[2])),
        breach_share=share,
        cones={},
    )


_PHIS = np.asarray(PHIS)


@lru_cache(maxsize=64)
def _stop_array(within: int, horizon: int) -> np.ndarray:
    out = np.array(_stops(within, horizon), dtype=np.int64)
    out.setflags(write=False)
    return out


def breach_forecast_compiled(
    channels: Sequence[tuple[str, PosteriorArrays]],
    *,
    lower: float | None = None,
    upper: float | None = None,
    tolerance: float | None = None,
    threshold: float = 0.1,
    within: int = 20,
    search: int | None = None,
) -> BreachForecast:
    """:func:`breach_forecast_sampled` from the channels' posteriors (:meth:`TrendModel.posterior_arrays
    <monitor.detect.trend.TrendModel.posterior_arrays>`), drawn and searched in one compiled loop
    (:mod:`monitor.detect.kernels`): the same draws, slices and early stop, so the same forecast up to
    an ulp or two of the power and normal tail functions (``tests/detect/test_kernels.py`` compares
    both). This is what detection runs on every part; the numpy forms stay the reference and serve
    the dashboard's cone charts."""
    from monitor.detect.kernels import breach  # numba, imported by the first trend fit already

    _check_limits(len(channels), lower, upper, tolerance)
    carry, sd_table, noise, z_sigma, z_param = noise_tables()
    full = carry.shape[1]
    horizon = full if search is None else min(int(search), full)
    within = min(within, horizon)
    size = tolerance is None
    limits = np.array(
        [
            1.0 if size else 0.0,
            0.0,
            lower if lower is not None else math.nan,
            upper if upper is not None else math.nan,
            tolerance / 2.0 if tolerance is not None else math.nan,
            threshold,
        ]
    )
    per_kind = tuple(zip(*(a.arrays for _, a in channels), strict=True))
    p_all, risk, limit, first, n_predicts = breach(
        *per_kind,
        np.array([a.scalars for _, a in channels]),
        _PHIS,
        carry,
        sd_table,
        noise,
        z_sigma,
        z_param,
        limits,
        _stop_array(within, horizon),
    )
    share = n_predicts / z_sigma.shape[1]
    q = _quantiles(first)
    return BreachForecast(
        threshold=threshold,
        within=within,
        searched=horizon,
        p_out=tuple(p_all.tolist()),
        risk_parts=int(risk) if risk >= 0 else None,
        mean_limit_parts=int(limit) if limit >= 0 else None,
        first_out=(float(q[0]), float(q[1]), float(q[2])),
        breach_share=share,
        cones={},
    )


def warm_up_compiled() -> None:
    """Compile the compiled forecast for one, two and three channels (a size, positions in a plane
    and in space) and the attribution's correlations, or load them from numba's cache beside
    :mod:`monitor.detect.kernels`: about 8 s of CPU the first time after an install, then about 0.3 s
    (mostly numba's import), and what the first forecasts of a daemon would pay otherwise."""
    from monitor.detect.attribution import Attribution

    models = []
    for k in range(3):
        tr = TrendModel(scale=1.0, window=8)
        for x in (0.0, 0.1, 0.2):
            tr.update(x + k)
        models.append((str(k), tr.posterior_arrays(k)))
    breach_forecast_compiled(models[:1], lower=-1.0, upper=1.0, search=2, within=1)
    breach_forecast_compiled(models[:2], tolerance=1.0, search=2, within=1)
    breach_forecast_compiled(models, tolerance=1.0, search=2, within=1)
    att = Attribution(min_parts=3)  # and the attribution's correlations
    for i in range(3):
        att.add(float(i), {"tool_life": float(-i)})
    assert att.last.correlations


def warm_up(windows: Iterable[int]) -> None:
    """What a daemon builds and loads at start (:func:`monitor.detect.trend.warm_up`'s tables for
    these windows, and the compiled kernels: :func:`warm_up_compiled`), so that neither its memory
    nor its first parts' cost creep up later."""
    lengths = list(windows)
    warm_up_tables(lengths)
    if lengths:
        warm_up_compiled()
