"""The per-part fast paths of detection give the same doubles as the textbook forms they replace.

Detection runs on every part of every feature, so its hot spots are written for speed: in-place
numpy, ``ndtr`` skipped where it is exactly 0 or 1, shared halves of Pearson's r, a ternary search
over the points that can matter. Each is checked here against the plain form, bit for bit, on
seeded random inputs shaped like real ones (and on the edge values), so that "faster" can never
mean "decides differently".
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.special import ndtr

from monitor.detect import attribution, evidence, forecast, trend
from monitor.detect.trend import Draws, TrendModel
from monitor.model import AlertKind, Register, RegisterKind
from monitor.registers import OffsetChange, SharedFeature, share_register


def _sankaran_textbook(x: np.ndarray, k: int, lam: np.ndarray) -> np.ndarray:
    lam = np.maximum(lam, 0.0)
    kl = k + lam
    k2l = k + 2 * lam
    h = 1.0 - (2.0 / 3.0) * kl * (k + 3 * lam) / k2l**2
    p = k2l / kl**2
    m = (h - 1.0) * (1.0 - 3.0 * h)
    num = (np.maximum(x, 0.0) / kl) ** h - (1.0 + h * p * (h - 1.0 - 0.5 * (2.0 - h) * m * p))
    den = h * np.sqrt(2.0 * p) * (1.0 + 0.5 * m * p)
    return np.asarray(1.0 - ndtr(num / den))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal as doubles, NaN where NaN."""
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_ndtr_is_exactly_zero_or_one_beyond_the_bounds_it_skips() -> None:
    rng = np.random.default_rng(7)
    high = np.concatenate([[forecast._NDTR_ONE, np.inf], rng.uniform(forecast._NDTR_ONE, 60.0, 200_000)])
    high = np.concatenate([high, np.exp(rng.uniform(math.log(60.0), math.log(1e300), 20_000))])
    assert np.all(ndtr(high) == 1.0)
    assert np.all(1.0 - ndtr(-high) == 1.0)  # ndtr(z) < 2**-54 from -_NDTR_ONE down
    low = np.concatenate([[forecast._NDTR_ZERO, -np.inf], rng.uniform(-1e6, forecast._NDTR_ZERO, 200_000)])
    assert np.all(ndtr(low) == 0.0)
    # and the bounds are not far from where it happens (they skip most of what can be skipped)
    assert ndtr(8.2) < 1.0 and 1.0 - ndtr(-8.2) < 1.0 and ndtr(-37.0) > 0.0


def test_ndtr_fast_paths_equal_ndtr_everywhere() -> None:
    rng = np.random.default_rng(11)
    z = np.concatenate([rng.normal(0.0, 15.0, 50_000), [np.nan, np.inf, -np.inf, 0.0, -0.0, 8.5, -8.5, -40.0, 8.29, -37.7]])
    z = z.reshape(-1, 10)
    assert _same(forecast._ndtr(z), ndtr(z))
    assert _same(forecast._ndtr_sf(z), 1.0 - ndtr(z))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_in_place_sankaran_is_the_textbook_formula_bit_for_bit(k: int) -> None:
    rng = np.random.default_rng(k)
    # squared radius over variance and non-centrality as forecasts make them: near the zone and far out
    x = np.abs(rng.normal(2.0, 3.0, (128, 100))) * 10.0 ** rng.uniform(-3, 3, (128, 100))
    lam = np.abs(rng.normal(1.0, 5.0, (128, 100))) * 10.0 ** rng.uniform(-4, 4, (128, 100))
    x[0, :5] = [0.0, np.nan, np.inf, -1.0, 1e-300]
    lam[1, :5] = [0.0, np.nan, np.inf, -1.0, 1e300]
    with np.errstate(all="ignore"):  # the extremes overflow, in both forms alike
        assert _same(forecast.noncentral_chi2_sf(x, k, lam), _sankaran_textbook(x, k, lam))


def _breach_textbook(
    draws: list[tuple[str, Draws]], lower: float | None, upper: float | None, tolerance: float | None, threshold: float
) -> tuple[object, ...]:
    """The forecast's numbers as the plain formulas give them (before the in-place rewrite)."""
    with np.errstate(all="ignore"):
        return _breach_numbers(draws, lower, upper, tolerance, threshold)


def _breach_numbers(
    draws: list[tuple[str, Draws]], lower: float | None, upper: float | None, tolerance: float | None, threshold: float
) -> tuple[object, ...]:
    if tolerance is None:
        assert lower is not None and upper is not None
        d = draws[0][1]
        sd = np.maximum(d.sd, 1e-300)
        near = np.where(d.mean >= 0.5 * (lower + upper), d.mean - upper, lower - d.mean)
        p_draw = ndtr(near / sd)
        out_path = (d.paths < lower) | (d.paths > upper)
    else:
        r0 = tolerance / 2.0
        k = len(draws)
        r2 = sum(d.mean**2 for _, d in draws)
        var = np.maximum(sum(d.sd**2 for _, d in draws) / k, 1e-300)
        p_draw = _sankaran_textbook(r0 * r0 / var, k, r2 / var)
        out_path = np.asarray(sum(d.paths**2 for _, d in draws)) > r0 * r0
    p_out = np.clip(np.nan_to_num(p_draw.mean(axis=0), nan=1.0), 0.0, 1.0)
    predicts = np.max(np.nan_to_num(p_draw, nan=1.0), axis=1) >= threshold
    first = np.where(out_path.any(axis=1), np.argmax(out_path, axis=1) + 1.0, math.inf)
    if predicts.sum() >= 10:
        first = first[predicts]
    return tuple(float(v) for v in p_out), float(predicts.mean()), forecast._quantiles(first)


def _drifting_draws(axes: int, slope: float, seed: int) -> list[tuple[str, Draws]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(axes):
        tr = TrendModel(scale=0.0075 if axes == 1 else 0.025, window=60)
        for i in range(40):
            tr.update(slope * i + rng.normal(0.0, 0.001))
        out.append(("xyz"[k] if axes > 1 else "value", tr.draws(100, axis=k)))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("axes", [1, 2])
def test_breach_forecast_is_the_textbook_forecast(axes: int, seed: int) -> None:
    slope = (0.0, 1e-5, 1e-4, 3e-4, 1e-3, 5e-3)[seed]  # stable, slow drift ... far beyond the limit
    draws = _drifting_draws(axes, slope, seed)
    if axes == 1:
        fc = forecast.breach_forecast(draws, lower=-0.0075, upper=0.0075, threshold=0.1)
        want = _breach_textbook(draws, -0.0075, 0.0075, None, 0.1)
    else:
        fc = forecast.breach_forecast(draws, tolerance=0.05, threshold=0.1)
        want = _breach_textbook(draws, None, None, 0.05, 0.1)
    assert (fc.p_out, fc.breach_share, fc.first_out) == want


def _drifting_models(axes: int, slope: float, seed: int, step: bool = False) -> list[tuple[str, TrendModel]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(axes):
        tr = TrendModel(scale=0.0075 if axes == 1 else 0.025, window=60)
        for i in range(40):
            if step and i == 25:
                tr.expect_step(-0.002)  # a recorded offset change: the draws carry a known step
            tr.update(slope * i + rng.normal(0.0, 0.001) - (0.002 if step and i >= 25 else 0.0))
        out.append(("xyz"[k] if axes > 1 else "value", tr))
    return out


def test_draw_columns_are_the_whole_horizons_columns() -> None:
    for axes, slope, step in ((1, 3e-4, False), (2, 1e-3, True)):
        for k, (_, tr) in enumerate(_drifting_models(axes, slope, 3, step)):
            whole = tr.draws(100, axis=k)
            src = tr.sampler(axis=k)
            for a, b in ((0, 20), (20, 40), (40, 100), (0, 100), (99, 100)):
                part = src.columns(a, b)
                for name in ("mean", "sd", "paths"):
                    assert _same(getattr(part, name), getattr(whole, name)[:, a:b]), (name, a, b)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("axes", [1, 2])
def test_sampled_forecast_stops_early_with_the_whole_searchs_results(axes: int, seed: int) -> None:
    # stable, slow drift (runs the whole search), ... far beyond the limit (stops after `within`)
    slope = (0.0, 1e-5, 1e-4, 2e-4, 3e-4, 1e-3, 5e-3, 3e-4)[seed]
    models = _drifting_models(axes, slope, seed, step=seed == 7)
    draws = [(axis, tr.draws(100, axis=k)) for k, (axis, tr) in enumerate(models)]
    sources = [(axis, tr.sampler(axis=k)) for k, (axis, tr) in enumerate(models)]
    lower, upper, tolerance = (-0.0075, 0.0075, None) if axes == 1 else (None, None, 0.05)
    for within in (20, 7):
        whole = forecast.breach_forecast(draws, lower=lower, upper=upper, tolerance=tolerance, threshold=0.1, within=within)
        fc = forecast.breach_forecast_sampled(
            sources, lower=lower, upper=upper, tolerance=tolerance, threshold=0.1, within=within, search=100
        )
        seen = len(fc.p_out)
        assert within <= seen <= 100 and fc.p_out == whole.p_out[:seen]
        assert dataclasses.replace(fc, p_out=whole.p_out) == whole
        if slope >= 1e-3:  # breaching: every draw out within the parts first looked at
            assert seen == within and fc.breach_share == 1.0
        if slope == 0.0:
            assert seen == 100


def _pearson_textbook(a: list[float], b: list[float]) -> float | None:
    n = len(a)
    if max(a) == min(a) or max(b) == min(b):
        return None
    ma, mb = attribution._plain_sum(a) / n, attribution._plain_sum(b) / n
    sab = saa = sbb = 0.0
    for x, y in zip(a, b, strict=True):
        dx, dy = x - ma, y - mb
        sab += dx * dy
        saa += dx * dx
        sbb += dy * dy
    if saa <= 0 or sbb <= 0:
        return None
    r = sab / math.sqrt(saa * sbb)
    return max(-1.0, min(1.0, r)) if math.isfinite(r) else None


@pytest.mark.parametrize("uneven", [False, True])
def test_attribution_correlations_are_the_textbook_pearson(uneven: bool) -> None:
    rng = np.random.default_rng(3)
    att = attribution.Attribution(window=60, min_r=0.7, min_parts=4)
    rows: list[tuple[float, dict[str, float]]] = []
    for i in range(90):
        cov = {"tool_life": float(i), "spindle_load": float(rng.normal(30, 2)), "warmup": float(np.log1p(i))}
        if i % 7 or not uneven:  # a covariate some parts lack
            cov["cutting_time"] = float(i * 40 + rng.normal(0, 5))
        if i > 70 and uneven:  # one that is constant
            cov["coolant"] = 1.0
        x = float(1e-4 * i + rng.normal(0, 1e-3))
        att.add(x, cov)
        rows = [*rows, (x, cov)][-60:]
        want = {}
        for name in [*attribution.COVARIATES, "coolant"]:
            pairs = [(v, c[name]) for v, c in rows if name in c]
            if len(pairs) >= 4:
                r = _pearson_textbook([p[0] for p in pairs], [p[1] for p in pairs])
                if r is not None:
                    want[name] = r
        assert att.last.correlations == want


def _searched(change: OffsetChange, others: list[SharedFeature]) -> float | None:
    """share_register's combined change as the plain ternary search over every feature finds it."""
    points = [(change.change, abs(change.register.factor) or 1.0)] + [(o.want, abs(o.register.factor) or 1.0) for o in others]
    lo, hi = min(w for w, _ in points), max(w for w, _ in points)
    for _ in range(80):
        a, b = lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0
        if max(abs(w - a) / f for w, f in points) <= max(abs(w - b) / f for w, f in points):
            hi = b
        else:
            lo = a
    combined = round((lo + hi) / 2.0, 6)
    own = abs(combined - change.change) <= max(0.001, 0.1 * abs(change.change))
    return None if not others or own else combined


def test_shared_register_change_is_the_search_over_every_feature() -> None:
    rng = np.random.default_rng(5)
    cases: list[tuple[list[float], list[float]]] = []
    for _ in range(3000):
        m = int(rng.integers(1, 6))
        factors = [float(f) for f in rng.choice([1.0, -1.0, 2.0, -2.0, 0.5, 0.001], size=m)]
        scale = float(10.0 ** rng.uniform(-4, -0.5))
        cases.append((factors, [float(w) for w in rng.normal(0, scale, size=m)]))
    # changes whose best compromise sits on (or next to) a rounding boundary, and repeated values
    cases += [([1.0, 1.0], [0.0, 1e-6]), ([1.0, -1.0], [0.0123, 0.0133]), ([1.0, 1.0, 1.0], [0.002, 0.002, 0.002])]
    cases += [([1.0, 1.0], [0.0, 1e-6 + 1e-15]), ([2.0, 1.0], [-0.0000015, 0.0000015]), ([1.0, 1.0], [0.01, 0.05])]
    # midpoints on a half-micrometre boundary where the closed form and the search round apart
    cases += [([1.0, 1.0], [-0.0013210486329130189, 0.004724048632913019])]
    cases += [([1.0, -1.0], [0.006404226504432821, -0.003857226504432821])]
    for factors, wants in cases:
        registers = [Register(RegisterKind.WORK_OFFSET, "x", f, None, "G54") for f in factors]
        change = OffsetChange(registers[0], wants[0], wants[0] / registers[0].factor)
        pairs = zip(registers[1:], wants[1:], strict=True)
        others = [SharedFeature(f"f{i}", r, w / r.factor, False) for i, (r, w) in enumerate(pairs)]
        got = share_register("me", change, others)
        assert (got.change if got is not None else None) == _searched(change, others), (factors, wants)


def _jsonable_textbook(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable_textbook(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable_textbook(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def test_jsonable_is_the_textbook_conversion() -> None:
    class Sub(dict[str, object]):
        pass

    fit = _drifting_draws(1, 1e-4, 0)  # a Draws dataclass of arrays is left as it is, as before
    value = {
        "a": [1.0, math.nan, math.inf, -math.inf, -0.0, np.float64(2.5), np.float64(math.nan), True, 3, None, "s"],
        "b": (1, (2.0, [math.nan])),
        "c": Sub(x=1.0, y=math.nan),
        7: attribution.AttributionResult(3, {"tool_life": 0.5}, "tool_life", 0.5, False),
        "d": fit[0][1],
        # plain values straight in a dict (answered there without a call), keys not strings
        "e": {"nan": math.nan, "inf": math.inf, "x": 2.0, "np": np.float64(math.inf), "t": True, "n": None, 9: "s", 10: 4},
        8: -math.inf,
        AlertKind.CUSUM: {"deeper": {"v": math.nan, "w": [math.inf, 1.0]}},
    }
    got, want = evidence.jsonable(value), _jsonable_textbook(value)
    assert repr(got) == repr(want)


def test_channels_with_the_same_settings_share_their_prior_terms() -> None:
    """The prior terms of a window length are computed once for every channel with the same settings
    (the same feature on every machine, both axes of a position), not once per channel."""
    trend._shared_priors.cache_clear()
    rng = np.random.default_rng(2)
    a, b = TrendModel(scale=0.025, window=30), TrendModel(scale=0.025, window=30)
    for _ in range(20):
        a.update(float(rng.normal(0.0, 0.003)))
        b.update(float(rng.normal(0.0, 0.003)))
    info = trend._shared_priors.cache_info()
    assert (info.misses, info.hits) == (20, 20)
    c = TrendModel(scale=0.025, window=30, prior_sigma=0.004)  # other settings: terms of its own
    c.update(0.001)
    assert trend._shared_priors.cache_info().misses == 21


def test_ar_noise_pools_are_lfilters_ar1_sequences() -> None:
    from scipy.signal import lfilter

    pools = trend._ar_noise()
    for k, phi in enumerate(trend.PHIS):
        assert _same(pools[:, k], lfilter([1.0], [1.0, -phi], trend._Z_NOISE, axis=-1))


def test_attribution_columns_kept_by_add_follow_covariates_that_come_and_go() -> None:
    """The columns ``add`` keeps while every row has the same covariates: right after a part
    without one, once those parts left the window, and after a restore from the saved state."""
    rng = np.random.default_rng(11)
    att = attribution.Attribution(window=20, min_r=0.7, min_parts=4)
    rows: list[tuple[float, dict[str, float]]] = []
    for i in range(120):
        cov = {"tool_life": float(100 - i), "spindle_load": float(rng.normal(30, 2))}
        if not 30 <= i < 35 and i != 70:  # missing on some parts: the columns differ for a window
            cov["warmup"] = float(np.log1p(i))
        x = float(1e-4 * i + rng.normal(0, 1e-3))
        att.add(x, cov)
        rows = [*rows, (x, cov)][-20:]
        if i % 3 == 0 or 28 <= i <= 95:
            want = {}
            for name in attribution.COVARIATES:
                pairs = [(v, c[name]) for v, c in rows if name in c]
                if len(pairs) >= 4:
                    r = _pearson_textbook([p[0] for p in pairs], [p[1] for p in pairs])
                    if r is not None:
                        want[name] = r
            assert att.last.correlations == want, i
        if i in (40, 80):
            att = attribution.Attribution.from_state(json.loads(json.dumps(att.state())))
    assert att.state()["rows"] == [[x, c] for x, c in rows]


def test_attribution_compiled_correlations_leave_out_constant_sides() -> None:
    """Rows with every covariate go through the compiled loop: a constant covariate has no r, constant
    values none at all, and the rest is the textbook's double."""
    att = attribution.Attribution(window=10, min_r=0.7, min_parts=4)
    xs = [1e-3 * i + 1e-4 * (-1) ** i for i in range(12)]
    for i, x in enumerate(xs):
        att.add(x, {"tool_life": float(100 - i), "spindle_load": 30.0, "warmup": float(i % 3)})
    got = att.last.correlations
    assert set(got) == {"tool_life", "warmup"}
    assert got["tool_life"] == _pearson_textbook(xs[-10:], [float(100 - i) for i in range(2, 12)])
    assert got["warmup"] == _pearson_textbook(xs[-10:], [float(i % 3) for i in range(2, 12)])
    flat = attribution.Attribution(window=10, min_r=0.7, min_parts=4)
    for i in range(12):
        flat.add(0.002, {"tool_life": float(i)})
    assert flat.last.correlations == {} and flat.last.cause is None


def test_plain_sum_adds_left_to_right_as_the_compiled_correlations_do() -> None:
    """One rounding per addition, whatever the Python: 1e16 + 1 rounds back to 1e16, so the three
    give 0.0 (a compensated sum, Python 3.12's ``sum`` of floats, would give 1.0)."""
    assert attribution._plain_sum([1e16, 1.0, -1e16]) == 0.0
    assert attribution._plain_sum([0.1] * 10) == 0.9999999999999999
    assert attribution._plain_sum([]) == 0.0
