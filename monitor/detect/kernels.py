"""Detection's per-part numerics as compiled loops (numba): the trend fit of a channel, the breach
forecast of a feature and the attribution's correlations.

With numpy, every step of these is a call on a small array (5 x 60 models, 128 draws x 20 parts),
1.5-3 us of overhead each for little work: the fit of one channel was about 25 such calls plus the
summary's and the next value's, the forecast of a position about 35 per axis plus the draws' header.
On every part of every feature that was most of detection's time. Here each is one loop over pairs,
draws and parts with the operations of the numpy forms in their order, except that sums over the
window are plain loops (BLAS sums in blocks) and log, exp, the power in Sankaran's approximation and
the normal tail come from libm (numpy and scipy have their own): results agree to the last bits, and
every decision is the same (``tests/detect/test_kernels.py``, against the numpy forms that stay as the
reference: ``trend._fit_models(compiled=False)`` and :func:`monitor.detect.forecast.breach_forecast_sampled`).

Importing this module imports numba (0.15 s of CPU): :mod:`monitor.detect.trend` and
:mod:`monitor.detect.forecast` import it on the first fit, so commands that never fit a trend do not
pay it. The kernels are compiled once (``scripts/install.sh``, about 8 s) and cached beside this file
(``cache=True``); a process loads them on first use (about 0.25 s more), a daemon at start
(:func:`monitor.detect.warm_up`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

__all__ = ["breach", "correlations", "fit"]

_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])


def _cached_njit(**options: Any) -> Callable[[_F], _F]:
    """numba's ``njit(cache=True)``, or without the cache where numba finds no writable folder for it
    (a read-only install whose user has no home, as under the systemd unit's sandbox without its
    ``NUMBA_CACHE_DIR``): numba refuses to decorate then, and the kernels would not load at all."""

    def decorate(func: _F) -> _F:
        try:
            return cast(_F, njit(cache=True, **options)(func))
        except RuntimeError as exc:
            _log.warning(
                "detection kernels compiled in this process, not cached (%s): set NUMBA_CACHE_DIR to a writable"
                " folder to compile them once (about 8 s of CPU)",
                exc,
            )
            return cast(_F, njit(**options)(func))

    return decorate


_NDTR_ONE = 8.5
_NDTR_ZERO = -40.0
_SQRT1_2 = 0.7071067811865476


@_cached_njit(error_model="numpy")
def _ndtr(a: float) -> float:  # pragma: no cover - compiled
    """The standard normal cdf, as scipy's ``ndtr`` forms it (erf near 0, erfc in the tails)."""
    if a >= _NDTR_ONE:
        return 1.0
    if a <= _NDTR_ZERO:
        return 0.0
    x = a * _SQRT1_2
    z = abs(x)
    if z < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(z)
    return 1.0 - y if x > 0 else y


@_cached_njit(error_model="numpy")
def _sankaran_sf(x: float, k: int, lam: float) -> float:  # pragma: no cover - compiled
    """P(chi'^2(k, lam) > x) by Sankaran's approximation: the operations of
    :func:`monitor.detect.forecast._sankaran_sf`, in its order, on one pair."""
    lam = max(lam, 0.0)
    kl = lam + k
    k2l = lam * 2 + k
    h = lam * 3 + k
    h *= kl * (2.0 / 3.0)
    h /= k2l * k2l
    h = 1.0 - h
    p = k2l / (kl * kl)
    m = (h - 1.0) * (1.0 - h * 3.0)
    num = max(x, 0.0) / kl
    num = num**h
    u = (2.0 - h) * 0.5 * m * p
    c = (h - 1.0) - u
    hp = h * p * c + 1.0
    num -= hp
    den = math.sqrt(p * 2.0) * h
    den *= m * 0.5 * p + 1.0
    z = num / den
    if z <= -_NDTR_ONE:
        return 1.0
    if z >= _NDTR_ONE:
        return 0.0
    return 1.0 - _ndtr(z)


@_cached_njit(error_model="numpy")
def _breach(
    weights: tuple[np.ndarray, ...],
    b: tuple[np.ndarray, ...],
    c0: tuple[np.ndarray, ...],
    c1: tuple[np.ndarray, ...],
    v00: tuple[np.ndarray, ...],
    v01: tuple[np.ndarray, ...],
    v11: tuple[np.ndarray, ...],
    steps: tuple[np.ndarray, ...],
    step_on: tuple[np.ndarray, ...],
    f_last: tuple[np.ndarray, ...],
    future: tuple[np.ndarray, ...],
    scalars: np.ndarray,
    phis: np.ndarray,
    carry: np.ndarray,
    sd_table: np.ndarray,
    noise: np.ndarray,
    z_sigma: np.ndarray,
    z_param: np.ndarray,
    limits: np.ndarray,
    stops: np.ndarray,
) -> tuple[np.ndarray, int, int, np.ndarray, int]:  # pragma: no cover - compiled
    """The sampled breach forecast of one feature (a size: one channel; a position: its axes).

    Per channel ``i`` (the tuples): the posterior's (phi, model) ``weights``, inverse-gamma ``b``,
    coefficient means ``c0``/``c1``, covariances / sigma^2 ``v00``/``v01``/``v11`` (all P x G),
    recorded steps' coefficients (nk x P x G) and whether each is in effect at the latest value
    (``step_on``), the grid's shape at the latest value (G) and past the window (G x S);
    ``scalars[i]`` = (a, known sigma or NaN, latest value, pool). ``limits`` = (size: 1, position: 0,
    lower, upper, zone radius, threshold). The search stops at the first of ``stops`` where nothing
    later can change the result (see :func:`monitor.detect.forecast.breach_forecast_sampled`).

    Returns the mixture's risk per part up to where it was searched (the stop, or the end of the
    slice where it reached the threshold, see below), the first part at risk and the first with the
    mean beyond the limit (parts ahead, -1: none), the first simulated bad part (inf: none) of the
    draws whose own forecast reaches the threshold (of every draw when fewer than 10 do) and how many
    do."""
    k = len(weights)
    n_draws = z_sigma.shape[1]
    size = limits[0] > 0.5
    lower, upper, r0, threshold = limits[2], limits[3], limits[4], limits[5]
    # ---- the draws' header per channel: model and phi by systematic resampling, scatter,
    # coefficients (as trend._Posterior.sampler)
    p_idx = np.empty((k, n_draws), dtype=np.int64)
    g_idx = np.empty((k, n_draws), dtype=np.int64)
    b0 = np.empty((k, n_draws))
    b1 = np.empty((k, n_draws))
    resid = np.empty((k, n_draws))
    sigma = np.empty((k, n_draws))
    n_steps = 0
    for i in range(k):
        n_steps = max(n_steps, steps[i].shape[0])
    step_b = np.zeros((k, max(n_steps, 1), n_draws))
    for i in range(k):
        w, bi, c0i, c1i, v00i, v01i, v11i = weights[i], b[i], c0[i], c1[i], v00[i], v01[i], v11[i]
        st_i, on_i, fl_i = steps[i], step_on[i], f_last[i]
        n_st = st_i.shape[0]
        n_models = w.shape[1]
        flat = w.ravel()
        cum = np.empty(flat.size)
        acc = 0.0
        for j in range(flat.size):
            acc = acc + flat[j] if j else flat[0]
            cum[j] = acc
        total = cum[flat.size - 1]
        a, known_sigma, y_last, pool = scalars[i, 0], scalars[i, 1], scalars[i, 2], int(scalars[i, 3])
        j = 0
        for d in range(n_draws):
            u = (d + 0.5) / n_draws * total
            while j < flat.size and cum[j] < u:
                j += 1
            idx = min(j, flat.size - 1)
            p, g = idx // n_models, idx % n_models
            p_idx[i, d], g_idx[i, d] = p, g
            phi = phis[p]
            if not math.isnan(known_sigma):
                s2 = known_sigma * known_sigma * (1 - phi * phi)
            else:
                nu = 2.0 * a
                wh = max(1.0 - 2.0 / (9 * nu) + z_sigma[pool, d] * math.sqrt(2.0 / (9 * nu)), 0.05)
                chi = nu * wh**3.0
                s2 = 2.0 * bi[p, g] / chi
            e00 = v00i[p, g] * s2
            e01 = v01i[p, g] * s2
            e11 = v11i[p, g] * s2
            ch00 = math.sqrt(max(e00, 0.0))
            ch10 = e01 / ch00 if ch00 > 0 else 0.0
            ch11 = math.sqrt(max(e11 - ch10 * ch10, 0.0))
            z0, z1 = z_param[pool, d, 0], z_param[pool, d, 1]
            lvl = c0i[p, g] + ch00 * z0
            shp = c1i[p, g] + (ch10 * z0 + ch11 * z1)
            b0[i, d], b1[i, d] = lvl, shp
            fitted = lvl + shp * fl_i[g]
            for s in range(n_st):
                st = st_i[s, p, g]
                step_b[i, s, d] = st
                fitted = fitted + st * on_i[s]
            resid[i, d] = y_last - fitted
            sigma[i, d] = math.sqrt(s2)
    # ---- parts ahead, slice by slice, until the parts seen decide the forecast. Draw by draw,
    # each step a pass over the slice's parts: the passes without library calls vectorise, and those
    # with (power, erf) are independent from part to part, so they overlap in the processor
    horizon = stops[stops.size - 1]
    p_sum = np.zeros(horizon)
    centre = np.zeros((k, horizon))
    first = np.full(n_draws, np.inf)
    predicts = np.zeros(n_draws, dtype=np.bool_)
    risk, limit = -1, -1
    width = 0
    prev = 0
    for stop in stops:
        width = max(width, stop - prev)
        prev = stop
    mean = np.empty((k, n_draws, width))
    sds = np.empty((k, n_draws, width))
    paths = np.empty((k, n_draws, width))
    t1 = np.empty(width)
    t2 = np.empty(width)
    t3 = np.empty(width)
    t4 = np.empty(width)
    pr = np.empty(width)
    # once the mixture's risk has reached the threshold (after the first slice), later parts decide
    # nothing but single draws' own results (whether a draw's forecast reaches the threshold, its
    # first simulated bad part) and, until it reaches the limit, the mean path: the later slices are
    # computed for the draws still undecided alone, with the same operations on the same values, and
    # ``p_out`` ends where the mixture was last searched (as forecast.breach_forecast_sampled's)
    todo = np.ones(n_draws, dtype=np.bool_)
    p_end = 0
    start = 0
    for stop in stops:
        span = stop - start
        mix = risk < 0 or start == 0  # the mixture's risk per part is still searched
        means = mix or limit < 0  # every draw's mean path (the mean path's limit)
        for d in range(n_draws):
            todo[d] = mix or not predicts[d] or not math.isfinite(first[d])
        for i in range(k):
            fut_i = future[i]
            n_st = steps[i].shape[0]
            pool = int(scalars[i, 3])
            for d in range(n_draws):
                if not (means or todo[d]):
                    continue
                p, g = p_idx[i, d], g_idx[i, d]
                lvl, shp, res, sig = b0[i, d], b1[i, d], resid[i, d], sigma[i, d]
                for j in range(span):
                    h = start + j
                    m = fut_i[g, h] * shp
                    m += lvl
                    for s in range(n_st):
                        m += step_b[i, s, d]
                    m += carry[p, h] * res
                    mean[i, d, j] = m
                if todo[d]:
                    for j in range(span):
                        h = start + j
                        sds[i, d, j] = sd_table[p, h] * sig
                        paths[i, d, j] = noise[pool, p, d, h] * sig + mean[i, d, j]
        for d in range(n_draws):
            if means:
                for i in range(k):
                    for j in range(span):
                        centre[i, start + j] += mean[i, d, j]
            if not todo[d]:
                continue
            need_pr = mix or not predicts[d]
            need_path = not math.isfinite(first[d])
            if size:
                if need_pr:
                    for j in range(span):
                        sd = max(sds[0, d, j], 1e-300)
                        m = mean[0, d, j]
                        near = (lower - m) if m < 0.5 * (lower + upper) else (m - upper)
                        t1[j] = near / sd
                    for j in range(span):
                        pr[j] = _ndtr(t1[j])
                if need_path:
                    for j in range(span):
                        path = paths[0, d, j]
                        if (path < lower or path > upper) and not math.isfinite(first[d]):
                            first[d] = start + j + 1.0
            else:
                r00 = r0 * r0
                if need_path:
                    for j in range(span):
                        rad2 = paths[0, d, j] * paths[0, d, j]
                        for i in range(1, k):
                            rad2 = rad2 + paths[i, d, j] * paths[i, d, j]
                        if rad2 > r00 and not math.isfinite(first[d]):
                            first[d] = start + j + 1.0
                if need_pr:
                    for j in range(span):
                        r2 = mean[0, d, j] * mean[0, d, j]
                        var = sds[0, d, j] * sds[0, d, j]
                        for i in range(1, k):
                            r2 = r2 + mean[i, d, j] * mean[i, d, j]
                            var = var + sds[i, d, j] * sds[i, d, j]
                        var /= k
                        var = max(var, 1e-300)
                        # Sankaran's approximation up to the power (see _sankaran_sf)
                        lam = max(r2 / var, 0.0)
                        kl = lam + k
                        k2l = lam * 2 + k
                        hh = lam * 3 + k
                        hh *= kl * (2.0 / 3.0)
                        hh /= k2l * k2l
                        hh = 1.0 - hh
                        pp = k2l / (kl * kl)
                        mm = (hh - 1.0) * (1.0 - hh * 3.0)
                        t1[j] = max(r00 / var, 0.0) / kl
                        t2[j] = hh
                        u = (2.0 - hh) * 0.5 * mm * pp
                        t3[j] = hh * pp * ((hh - 1.0) - u) + 1.0
                        den = math.sqrt(pp * 2.0) * hh
                        den *= mm * 0.5 * pp + 1.0
                        t4[j] = den
                    for j in range(span):
                        t1[j] = t1[j] ** t2[j]
                    for j in range(span):
                        t1[j] = (t1[j] - t3[j]) / t4[j]
                    for j in range(span):
                        z = t1[j]
                        pr[j] = 1.0 if z <= -_NDTR_ONE else (0.0 if z >= _NDTR_ONE else 1.0 - _ndtr(z))
            if need_pr:
                for j in range(span):
                    v = pr[j]
                    if mix:
                        p_sum[start + j] = p_sum[start + j] + v if d else v
                    if math.isnan(v) or v >= threshold:
                        predicts[d] = True
        for h in range(start, stop):
            if mix:
                risk_h = p_sum[h] / n_draws
                if math.isnan(risk_h):
                    risk_h = 1.0
                risk_h = min(max(risk_h, 0.0), 1.0)
                p_sum[h] = risk_h
                if risk < 0 and risk_h >= threshold:
                    risk = h + 1
            if limit < 0:
                if size:
                    c = centre[0, h] / n_draws
                    if c < lower or c > upper:
                        limit = h + 1
                else:
                    r = 0.0
                    for i in range(k):
                        c = centre[i, h] / n_draws
                        r = r + c * c if i else 0 + c * c
                    if math.sqrt(r) > r0:
                        limit = h + 1
        if mix:
            p_end = stop
        start = stop
        if risk >= 0 and limit >= 0 and predicts.all() and np.isfinite(first).all():
            break
    n_predicts = 0
    for d in range(n_draws):
        n_predicts += predicts[d]
    if n_predicts >= 10:
        kept = np.empty(n_predicts)
        j = 0
        for d in range(n_draws):
            if predicts[d]:
                kept[j] = first[d]
                j += 1
        first = kept
    return p_sum[:p_end], risk, limit, first, n_predicts


breach = cast(Callable[..., tuple[np.ndarray, int, int, np.ndarray, int]], _breach)
"""The compiled :func:`_breach` (numba's dispatcher, typed for callers)."""


@_cached_njit(error_model="numpy")
def _fit(
    y: np.ndarray,
    f_t: np.ndarray,
    f0: np.ndarray,
    family: np.ndarray,
    pg: np.ndarray,
    p1: np.ndarray,
    phis: np.ndarray,
    a0: float,
    known_sigma: float,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Posterior of every (phi, model) of a window without a recorded step, and what the fit reports
    of it: :func:`monitor.detect.trend._fit_models`, :meth:`_Posterior.summary
    <monitor.detect.trend._Posterior.summary>`'s choices and :meth:`_Posterior.predict_next
    <monitor.detect.trend._Posterior.predict_next>` in one loop, in their order but for the sums over
    the window (a plain loop here, BLAS's blocks there) and libm's log and exp.

    The prior terms come stacked as the prior keeps them (``_Priors.fit_pg``: a11, inv, ml_base,
    half_logdet, log_prior, spread and the grid's scf, each P x G; ``fit_p``: a00, b0, s_e2 per phi)
    and the results go out stacked: numba types and unboxes every argument and boxes every array it
    returns, about 0.25 and 1 us each, which with 17 arguments and 5 arrays was a third of a full
    window's fit.

    Returns the weights, the coefficient means (level, shape) and the inverse-gamma ``b`` (4 x P x G),
    and ``stats``: the five family probabilities, the heaviest (phi, model) pair of the likeliest
    family and of any drift family (flat indices), the posterior mean phi, and the next value's
    mean and variance."""
    a11, inv, ml_base, half_logdet, log_prior, spread, scf = pg[0], pg[1], pg[2], pg[3], pg[4], pg[5], pg[6]
    a00, b_0, s_e2 = p1[0], p1[1], p1[2]
    n = y.size
    n_phi, n_models = scf.shape
    qy = np.empty(n)
    sfy = np.empty((n_phi, n_models))
    out = np.empty((4, n_phi, n_models))
    w, m_c, m_f, b_n = out[0], out[1], out[2], out[3]
    logw = np.empty((n_phi, n_models))
    a_n = a0 + n / 2.0
    for p in range(n_phi):
        phi = phis[p]
        phi2 = phi * phi
        one = 1.0 + phi2
        for i in range(n):
            q = one * y[i]
            if i == 0:
                q -= phi2 * y[0]
            if i == n - 1:
                q -= phi2 * y[n - 1]
            if i > 0:
                q -= phi * y[i - 1]
            if i < n - 1:
                q -= phi * y[i + 1]
            qy[i] = q
        syy = 0.0
        scy = 0.0
        for i in range(n):
            syy += qy[i] * y[i]
            scy += qy[i]
        row = sfy[p]
        row[:] = 0.0
        for i in range(n):
            q = qy[i]
            fi = f_t[i]
            for g in range(n_models):
                row[g] += q * fi[g]
        for g in range(n_models):
            s_f = row[g]
            mc = (a11[p, g] * scy - scf[p, g] * s_f) * inv[p, g]
            mf = (a00[p] * s_f - scf[p, g] * scy) * inv[p, g]
            m_c[p, g], m_f[p, g] = mc, mf
            resid = syy - (scy * mc + s_f * mf)
            if math.isnan(known_sigma):
                b = b_0[p] + 0.5 * max(resid, 1e-300)
                log_ml = ml_base[p, g] - a_n * math.log(b)
            else:
                b = s_e2[p] * a_n
                log_ml = half_logdet[p, g] - resid / (2 * s_e2[p]) - 0.5 * n * math.log(s_e2[p])
            b_n[p, g] = b
            logw[p, g] = log_ml + log_prior[p, g]
    top = -np.inf
    for p in range(n_phi):
        for g in range(n_models):
            top = max(top, logw[p, g])
    total = 0.0
    for p in range(n_phi):
        for g in range(n_models):
            x = logw[p, g] - top
            e = math.exp(x) if x > -746.0 else 0.0  # exp is exactly 0 below -745.2
            w[p, g] = e
            total += e
    if not math.isfinite(total) or total <= 0:
        w[:] = 1.0 / w.size
    else:
        for p in range(n_phi):
            for g in range(n_models):
                w[p, g] /= total
    # what the fit reports: family probabilities, representative pairs, phi, the next value
    stats = np.zeros(12)
    phi_mean = 0.0
    for p in range(n_phi):
        row_w = 0.0
        for g in range(n_models):
            row_w += w[p, g]
            stats[family[g]] += w[p, g]
        phi_mean += row_w * phis[p]
    fam_total = 0.0
    for f in range(5):
        fam_total += stats[f]
    best, best_w = 0, -1.0
    for f in range(5):
        stats[f] /= fam_total
        if stats[f] > best_w:
            best, best_w = f, stats[f]
    rep, rep_w, drift, drift_w = 0, -2.0, 0, -2.0
    for p in range(n_phi):
        for g in range(n_models):
            v = w[p, g]
            if family[g] == best and v > rep_w:
                rep, rep_w = p * n_models + g, v
            if family[g] != 0 and v > drift_w:
                drift, drift_w = p * n_models + g, v
    stats[5], stats[6], stats[7] = rep, drift, phi_mean
    # the next value, moment-matched over the mixture (carry-over of the latest residual included)
    y_last = y[n - 1]
    f_last = f_t[n - 1]
    mean_next = 0.0
    for p in range(n_phi):
        for g in range(n_models):
            resid_last = y_last - (m_c[p, g] + m_f[p, g] * f_last[g])
            mean_next += w[p, g] * (m_c[p, g] + m_f[p, g] * f0[g] + phis[p] * resid_last)
    var_next = 0.0
    for p in range(n_phi):
        s2 = known_sigma * known_sigma * (1 - phis[p] * phis[p])
        for g in range(n_models):
            if math.isnan(known_sigma):
                s2 = b_n[p, g] / max(a_n - 1.0, 0.5)
            resid_last = y_last - (m_c[p, g] + m_f[p, g] * f_last[g])
            m = m_c[p, g] + m_f[p, g] * f0[g] + phis[p] * resid_last
            var_next += w[p, g] * (s2 * spread[p, g] + (m - mean_next) ** 2)
    stats[8], stats[9] = mean_next, var_next
    return out, stats


fit = cast(Callable[..., tuple[np.ndarray, np.ndarray]], _fit)
"""The compiled :func:`_fit` (numba's dispatcher, typed for callers)."""


@_cached_njit(error_model="numpy")
def _span_and_sum(v: np.ndarray) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """The smallest and largest of ``v`` and its plain left-to-right sum, in one pass: whether a side
    of :func:`_correlations` is constant, and its mean."""
    lo = hi = v[0]
    total = 0.0
    for i in range(v.size):
        x = v[i]
        lo = min(lo, x)
        hi = max(hi, x)
        total += x
    return lo, hi, total


@_cached_njit(error_model="numpy")
def _correlations(xs: np.ndarray, cols: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Pearson's r of ``xs`` with each row of ``cols`` (NaN where there is none: either side constant,
    a sum of squares not positive, r not finite), as :class:`monitor.detect.attribution._Centred`
    forms it, in its order: means as plain sums left to right (``attribution._plain_sum``), the
    deviations' products summed part by part, so r is the same double. About 3 us for four
    covariates over 30 parts, against about 100 us in Python (every part of a signalling feature)."""
    n = xs.size
    m = cols.shape[0]
    out = np.full(m, np.nan)
    lo, hi, total = _span_and_sum(xs)
    if hi == lo:
        return out
    ma = total / n
    dev = np.empty(n)
    ss = 0.0
    for i in range(n):
        d = xs[i] - ma
        dev[i] = d
        ss += d * d
    for k in range(m):
        b = cols[k]
        lo, hi, total = _span_and_sum(b)
        if hi == lo:
            continue
        mb = total / n
        sab = 0.0
        sbb = 0.0
        for i in range(n):
            dy = b[i] - mb
            sab += dev[i] * dy
            sbb += dy * dy
        if ss <= 0 or sbb <= 0:
            continue
        r = sab / math.sqrt(ss * sbb)
        if math.isfinite(r):
            out[k] = max(-1.0, min(1.0, r))
    return out


correlations = cast(Callable[[np.ndarray, np.ndarray], np.ndarray], _correlations)
"""The compiled :func:`_correlations` (numba's dispatcher, typed for callers)."""
