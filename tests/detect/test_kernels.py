"""The compiled breach forecast (monitor/detect/kernels.py, what detection runs on every part) gives the
numpy forecast it replaces: the same draws, the same early stop, the same decisions.

The numpy form (:func:`monitor.detect.forecast.breach_forecast_sampled`, itself checked bit for bit
against the whole-horizon textbook forecast in test_fast_paths.py) is the reference. The kernel
computes the power in Sankaran's approximation and the normal tail with libm instead of numpy's and
scipy's own routines, so the risks per part may differ in the last bits (checked to 1e-12); every
decision (first part at risk, mean at the limit, the first bad part's interval, the breach share,
where the search stopped) must be the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.detect import forecast
from monitor.detect.trend import TrendModel

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


def test_numba_is_imported_by_the_first_forecast_not_by_detection() -> None:
    """Commands and tests that build detectors without forecasting do not pay numba's import."""
    probe = (
        "import json, sys\n"
        "from monitor.detect.trend import TrendModel\n"
        "import monitor.engine, monitor.detect.forecast as fc\n"
        "before = 'numba' in sys.modules\n"
        "tr = TrendModel(scale=1.0)\n"
        "[tr.update(0.1 * i) for i in range(5)]\n"
        "fc.breach_forecast_compiled([('v', tr.posterior_arrays())], lower=-1.0, upper=1.0)\n"
        "print(json.dumps([before, 'numba' in sys.modules]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == [False, True]
