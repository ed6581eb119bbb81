"""Behaviour of single detectors beyond the shared contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.detect import Attribution, Capability, RunRules, SelfStartingCusum
from monitor.detect.attribution import shift_from_offset, suggest_offset
from monitor.detect.capability import capability
from monitor.detect.forecast import breach_forecast, noncentral_chi2_sf
from monitor.detect.selfstart import QStatistic


def test_position_probability_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    means = np.array([0.010, 0.012])
    sd = 0.004
    tol = 0.05
    p = float(noncentral_chi2_sf(np.array([(tol / 2) ** 2 / sd**2]), 2, np.array([(means**2).sum() / sd**2]))[0])
    x = rng.normal(means[0], sd, 200_000)
    y = rng.normal(means[1], sd, 200_000)
    mc = float(np.mean(2 * np.sqrt(x * x + y * y) > tol))
    assert p == pytest.approx(mc, rel=0.03)


def test_noncentral_chi_square_approximation_is_close_where_decisions_are_made() -> None:
    from scipy.special import chndtr

    for k in (2, 3):
        for lam in np.linspace(0.0, 60.0, 61):
            x = np.linspace(0.01, 120.0, 400)
            exact = 1.0 - chndtr(x, k, lam)
            approx = noncentral_chi2_sf(x, k, np.full_like(x, lam))
            band = (exact > 0.02) & (exact < 0.3)  # around the breach probabilities people choose
            if band.any():
                assert np.max(np.abs(approx - exact)[band] / exact[band]) < 0.035, (k, lam)


def test_forecast_needs_limits_or_a_tolerance() -> None:
    from monitor.detect.trend import TrendModel
    from monitor.errors import DetectionError

    tr = TrendModel()
    tr.update(0.1)
    with pytest.raises(DetectionError):
        breach_forecast([("value", tr.draws(10))])
    with pytest.raises(DetectionError):
        breach_forecast([])


@pytest.mark.parametrize(
    ("rule", "data", "fires_at"),
    [
        (3, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 6),  # six rising
        (5, [0.0, 2.5, 0.1, 2.4], 4),  # two of three beyond 2 sigma
        (6, [1.5, 1.2, 0.2, 1.4, 1.3], 5),  # four of five beyond 1 sigma
        (1, [0.0, -3.2], 2),
    ],
)
def test_run_rules_fire_where_nelson_says(rule: int, data: list[float], fires_at: int) -> None:
    chart = RunRules(rules=(rule,), limit=3.0)
    fired = [r.n for r in map(chart.update, data) if r.alarm]
    assert fired[:1] == [fires_at]


def test_quesenberry_q_is_standard_normal_in_control() -> None:
    rng = np.random.default_rng(2)
    qs = []
    for _ in range(200):
        q = QStatistic()
        qs += [v for v in map(q.update, rng.normal(50.0, 7.0, 30)) if v is not None]
    assert np.mean(qs) == pytest.approx(0.0, abs=0.03)
    assert np.std(qs) == pytest.approx(1.0, abs=0.03)


def test_self_starting_cusum_catches_a_shift_without_known_parameters() -> None:
    rng = np.random.default_rng(5)
    data = list(rng.normal(10.0, 0.1, 25)) + list(rng.normal(10.2, 0.1, 25))
    chart = SelfStartingCusum(k=0.5, arl0=500)
    first = next(r.n for r in map(chart.update, data) if r.alarm)
    assert 25 < first <= 40


def test_capability_intervals_cover_the_true_value() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        r = capability(rng.normal(0.0, 1.0, 40), -4.0, 4.0)  # true Cp = Cpk = 1.333
        assert r.cp is not None and r.cpk is not None
        covered += r.cpk.lo <= 4 / 3 <= r.cpk.hi
    assert covered / 200 >= 0.88  # 95% nominal; moving-range sigma and Bissell are approximations
    one_sided = Capability(-math.inf, 4.0)
    for x in (0.1, -0.2, 0.3):
        res = one_sided.update(x)
    assert res.cp is None and res.cpk is not None


def test_attribution_and_offset_signs() -> None:
    at = Attribution(min_r=0.8, min_parts=6)
    for i in range(12):
        res = at.update(0.001 * i, {"spindle_load": 30 + 0.5 * i, "tool_life": 5.0, "warmup": None})
    assert res.cause == "spindle_load" and res.r is not None and res.r > 0.99
    assert "tool_life" not in res.correlations  # constant: no correlation
    assert suggest_offset(0.004, "diameter").change == pytest.approx(-0.004)
    assert suggest_offset(0.004, "radius").change == pytest.approx(-0.002)
    assert suggest_offset(-0.004, "cutter_radius_hole").change == pytest.approx(-0.002)
    assert suggest_offset(0.004, "cutter_radius_boss").change == pytest.approx(-0.002)
    assert suggest_offset(-0.01, "y").text() == "suggest Y wear offset +0.0100 mm"
    # an applied offset change moves the feature's deviation by the opposite of what it corrected
    for kind in ("diameter", "radius", "cutter_radius_hole", "cutter_radius_boss", "length", "x"):
        change = suggest_offset(0.004, kind).change
        assert shift_from_offset(change, kind) == pytest.approx(-0.004)


def test_trend_scatter_around_a_drift_and_the_batch_start() -> None:
    from monitor.detect.trend import TrendModel

    # a ramp from nominal with little scatter: a stable fit would take the ramp for scatter
    tr = TrendModel(scale=1.0, prior_sigma=0.25)
    rng = np.random.default_rng(4)
    fits = [tr.update(0.12 * i + 0.05 * float(rng.standard_normal())).fit for i in range(8)]
    assert all(f is not None for f in fits) and tr.at_batch_start
    # while the stable model is still chosen, the scatter around the drift is already the smaller one
    assert any(f.model == "stable" and f.sigma_drift < 0.9 * f.sigma for f in fits if f is not None)
    last = fits[-1]
    assert last is not None and last.model != "stable" and last.sigma_drift == last.sigma
    tr.start_regime(keep=3)
    assert not tr.at_batch_start
