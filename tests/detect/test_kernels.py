"""The compiled kernels (monitor/detect/kernels.py, what detection runs on every part) give what the
numpy forms they replace give: the trend fit (posterior, summary, next value) and the breach forecast
(the same draws, the same early stop, the same decisions).

The numpy forms (``trend._fit_models(compiled=False)``; :func:`monitor.detect.forecast.breach_forecast_sampled`,
itself checked bit for bit against the whole-horizon textbook forecast in test_fast_paths.py) are the
reference. The kernels sum over the window in a plain loop (BLAS in blocks) and take log, exp, the
power in Sankaran's approximation and the normal tail from libm instead of numpy's and scipy's own
routines, so numbers may differ in the last bits (checked to 1e-9 relative); every decision (the
model chosen, first part at risk, mean at the limit, the first bad part's interval, the breach share,
where the search stopped) must be the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.detect import forecast, trend
from monitor.detect.trend import TrendFit, TrendModel

SLOPES = (0.0, 1e-5, 1e-4, 2e-4, 3e-4, 1e-3, 5e-3, 3e-4)
"""Stable, slow drifts (the whole search), ... far beyond the limit (the search stops after ``within``)."""


def _models(axes: int, slope: float, seed: int, step: bool = False, sigma: float | None = None) -> list[tuple[str, TrendModel]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(axes):
        tr = TrendModel(scale=0.0075 if axes == 1 else 0.025, window=60, sigma=sigma)
        for i in range(40 + 7 * k):
            if step and i == 25:
                tr.expect_step(-0.002)  # a recorded offset change: the posterior carries a known step
            tr.update(slope * i * (1 + k) + rng.normal(0.0, 0.001) - (0.002 if step and i >= 25 else 0.0))
        out.append(("xyz"[k] if axes > 1 else "value", tr))
    return out


def _both(models: list[tuple[str, TrendModel]], within: int) -> tuple[forecast.BreachForecast, forecast.BreachForecast]:
    kw: dict[str, float | None] = (
        {"lower": -0.0075, "upper": 0.0075, "tolerance": None} if len(models) == 1 else {"tolerance": 0.05}
    )
    sources = [(axis, tr.sampler(axis=k)) for k, (axis, tr) in enumerate(models)]
    arrays = [(axis, tr.posterior_arrays(axis=k)) for k, (axis, tr) in enumerate(models)]
    want = forecast.breach_forecast_sampled(sources, threshold=0.1, within=within, search=100, **kw)
    got = forecast.breach_forecast_compiled(arrays, threshold=0.1, within=within, search=100, **kw)
    return want, got


def _assert_same(want: forecast.BreachForecast, got: forecast.BreachForecast) -> None:
    assert len(got.p_out) == len(want.p_out)
    assert np.allclose(got.p_out, want.p_out, rtol=0.0, atol=1e-12)
    decisions = ("threshold", "within", "searched", "risk_parts", "mean_limit_parts", "first_out", "breach_share")
    assert {k: getattr(got, k) for k in decisions} == {k: getattr(want, k) for k in decisions}
    assert got.breach == want.breach and got.due_parts == want.due_parts and got.cones == {}


@pytest.mark.parametrize("seed", range(len(SLOPES)))
@pytest.mark.parametrize("axes", [1, 2, 3])
def test_compiled_forecast_is_the_numpy_forecast(axes: int, seed: int) -> None:
    models = _models(axes, SLOPES[seed], seed, step=seed == 7)
    for within in (20, 7):
        want, got = _both(models, within)
        _assert_same(want, got)
        if SLOPES[seed] >= 1e-3:  # breaching: the search stops after the parts first looked at
            assert len(got.p_out) == within and got.breach_share == 1.0 and got.breach
        if SLOPES[seed] == 0.0:
            assert len(got.p_out) == 100 and not got.breach


@pytest.mark.parametrize(("axes", "slope", "seed"), [(1, 1e-4, 0), (1, 1e-4, 1), (2, 2e-4, 0), (2, 2e-4, 2)])
def test_compiled_forecast_searches_on_for_the_undecided_draws_alone(axes: int, slope: float, seed: int) -> None:
    # the mixture at risk within the first slice of parts (or the second), while some draws never
    # predict a breach or never go out within the 100 parts: the later parts are searched for those
    # draws alone, p_out ends with the slice where the risk was reached, and every decision is the
    # whole search's
    models = _models(axes, slope, seed)
    lower, upper, tolerance = (-0.0075, 0.0075, None) if axes == 1 else (None, None, 0.05)
    draws = [(axis, tr.draws(100, axis=k)) for k, (axis, tr) in enumerate(models)]
    whole = forecast.breach_forecast(draws, lower=lower, upper=upper, tolerance=tolerance, threshold=0.1, within=20)
    want, got = _both(models, 20)
    _assert_same(want, got)
    assert whole.risk_parts is not None and whole.risk_parts <= 40 and 0.5 < whole.breach_share < 1.0
    assert len(got.p_out) == (20 if whole.risk_parts <= 20 else 40)
    assert np.allclose(got.p_out, whole.p_out[: len(got.p_out)], rtol=0.0, atol=1e-12)
    decisions = ("risk_parts", "mean_limit_parts", "first_out", "breach_share", "searched")
    assert {k: getattr(got, k) for k in decisions} == {k: getattr(whole, k) for k in decisions}


@pytest.mark.parametrize("axes", [1, 2])
def test_compiled_forecast_with_a_known_scatter_and_a_recorded_step(axes: int) -> None:
    for slope in (0.0, 3e-4, 2e-3):
        _assert_same(*_both(_models(axes, slope, 11, step=True, sigma=0.001), 20))


def test_compiled_forecast_of_a_nan_value_channel_says_at_risk_like_numpy() -> None:
    # an absurd posterior (a channel fed only huge values) must not crash the kernel or disagree
    tr = TrendModel(scale=0.0075, window=60)
    for i in range(12):
        tr.update(1e200 * (i % 2))
    _assert_same(*_both([("value", tr)], 20))


def _series(kind: str, seed: int, n: int = 90) -> list[float]:
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=float)
    mean = {
        "stable": 0.0 * i,
        "wear": 2e-4 * i,
        "thermal": 0.004 * (1.0 - np.exp(-i / 8.0)),
        "step": np.where(i >= 37, 0.003, 0.0),
        "onset": np.maximum(0.0, i - 50) * 3e-4,
        "ar": 0.0 * i,
    }[kind]
    noise = rng.normal(0.0, 0.001, n)
    if kind == "ar":
        for k in range(1, n):
            noise[k] += 0.6 * noise[k - 1]
    return [float(v) for v in mean + noise]


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None or not np.isfinite(b):
        return a == b or (a is not None and b is not None and np.isnan(a) and np.isnan(b))
    return abs(a - b) <= 1e-9 * max(abs(b), 1e-6)


def _same_fit(got: TrendFit, want: TrendFit) -> None:
    assert (got.n, got.regime_start, got.model, got.plateau is None, got.tau, got.step_parts_ago) == (
        want.n,
        want.regime_start,
        want.model,
        want.plateau is None,
        want.tau,
        want.step_parts_ago,
    )
    for name in ("model_probability", "level", "level_sd", "slope", "plateau", "sigma", "sigma_innovation", "phi", "sigma_drift"):
        assert _close(getattr(got, name), getattr(want, name)), (name, getattr(got, name), getattr(want, name))
    assert _close(min(got.drift_odds, 1e9), min(want.drift_odds, 1e9))
    assert all(_close(got.slope_interval[k], want.slope_interval[k]) for k in (0, 1))
    assert all(abs(got.families[f] - want.families[f]) <= 1e-9 for f in trend.FAMILIES)


@pytest.mark.parametrize("kind", ["stable", "wear", "thermal", "step", "onset", "ar"])
@pytest.mark.parametrize("sigma", [None, 0.001])
def test_compiled_fit_is_the_numpy_fit(kind: str, sigma: float | None) -> None:
    """Every window a channel goes through (filling from the batch start, then sliding; a step the
    data show starting a new regime): posterior, summary and the next value's prediction."""
    model = TrendModel(scale=0.0075, window=60, sigma=sigma)
    compared = 0
    for x in _series(kind, 3):
        model.update(x)
        post = model._post
        assert post is not None and post.stats is not None  # no recorded step: the compiled fit
        at_start = model._count == post.y.size  # as TrendModel._refit keys its prior terms
        pri = model._prior_cache[(post.y.size, at_start, at_start and model._from_start)]
        ref = trend._fit_models(post.y, post.grid, [], model.scale, pri, model.sigma, compiled=False)
        assert ref.stats is None
        assert np.allclose(post.weights, ref.weights, rtol=1e-9, atol=1e-12)
        assert np.allclose(post.b, ref.b, rtol=1e-9, atol=0.0)
        for got_c, want_c in zip(post.coef, ref.coef, strict=True):
            assert np.allclose(got_c, want_c, rtol=1e-9, atol=1e-15)
        count, regime = model._count, model._regime
        _same_fit(post.summary(count, regime), ref.summary(count, regime))
        (m1, s1), (m2, s2) = post.predict_next(), ref.predict_next()
        assert _close(m1, m2) and _close(s1, s2)
        assert np.allclose(post.phi_weights, ref.phi_weights, rtol=1e-9, atol=1e-15)
        compared += 1
    assert compared == 90


def test_a_window_with_a_recorded_step_is_fitted_with_numpy() -> None:
    model = TrendModel(scale=0.0075, window=60)
    for i, x in enumerate(_series("wear", 5, 40)):
        if i == 20:
            model.expect_step(-0.002)
        model.update(x - (0.002 if i >= 20 else 0.0))
    assert model._post is not None and model._post.stats is None and model.fit is not None


def test_numba_is_imported_by_the_first_fit_not_by_detection() -> None:
    """Commands and tests that read configurations, stores or charts without fitting a trend do not
    pay numba's import (0.15 s of CPU, 0.4 s with loading the kernels)."""
    probe = (
        "import json, sys\n"
        "from monitor.detect.trend import TrendModel\n"
        "import monitor.engine, monitor.detect.forecast as fc\n"
        "before = 'numba' in sys.modules\n"
        "tr = TrendModel(scale=1.0)\n"
        "[tr.update(0.1 * i) for i in range(5)]\n"
        "fc.breach_forecast_compiled([('v', tr.posterior_arrays())], lower=-1.0, upper=1.0)\n"
        "print(json.dumps([before, 'numba' in sys.modules, 'scipy.signal' in sys.modules]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    # nor scipy.signal (and the scipy.stats it loads): the forecast's AR(1) pools are a plain recursion
    assert json.loads(done.stdout.splitlines()[-1]) == [False, True, False]


def test_kernels_load_where_numba_has_no_folder_to_cache_them() -> None:
    """A read-only install whose user has no writable home (a sandboxed service without its
    NUMBA_CACHE_DIR): numba refuses to cache; the kernels are then compiled in the process, with a
    warning that says what to set, instead of failing to import."""
    probe = (
        "import logging, json\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "import monitor.detect.kernels as k\n"
        "print(json.dumps([type(k._fit._cache).__name__, type(k._breach._cache).__name__]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    # a locator list whose only entry never applies (sources that are not in a zip file)
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "numba.core.caching.ZipCacheLocator"}
    env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout.splitlines()[-1]) == ["NullCache", "NullCache"]
    assert "set NUMBA_CACHE_DIR" in done.stderr
