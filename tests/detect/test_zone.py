"""The zone chart (monitor/detect/zone.py): an acceptance chart of the EWMA mean against the tolerance
zone from nominal. Its standard deviation is the EWMA's exact one for AR(1) scatter, a position is
judged radially as its zone is, a one-sided limit only on its side, and a mean sitting on the
acceptable process level raises it at about the rate of the program's budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.detect.arl import ewma_limit
from monitor.detect.zone import ZoneChart, apl_fraction

LAM = 0.2


def _ar1(rng: np.random.Generator, n: int, phi: float, reps: int = 1) -> np.ndarray:
    e = rng.standard_normal((reps, n))
    x = np.empty((reps, n))
    x[:, 0] = e[:, 0]
    s = math.sqrt(1.0 - phi * phi)
    for i in range(1, n):
        x[:, i] = phi * x[:, i - 1] + s * e[:, i]
    return x


def test_apl_is_where_the_declared_capability_still_gives_cpk_1() -> None:
    assert apl_fraction(1.33) == pytest.approx(0.248, abs=0.001)
    assert apl_fraction(2.0) == pytest.approx(0.5)
    assert apl_fraction(1.0) == 0.0


@pytest.mark.parametrize("phi", [0.0, 0.6])
@pytest.mark.parametrize("parts", [3, 60])
def test_the_limit_uses_the_exact_sd_of_the_ewma_for_ar1_scatter(phi: float, parts: int) -> None:
    # width 1 and APL 0: the limit is one sd of the EWMA after `parts` values; compare with 4000 runs
    rng = np.random.default_rng(7)
    sigma = 0.002
    x = sigma * _ar1(rng, parts, phi, reps=4000)
    finals = []
    limit = 0.0
    for run in x:
        chart = ZoneChart(("value",), 0.0, 0.01, 1, 0.0, LAM, 1.0)
        for v in run:
            r = chart.update({"value": float(v)}, {"value": (sigma, phi)})
        finals.append(chart.z["value"])
        limit = r.limit
    assert limit == pytest.approx(float(np.std(finals)), rel=0.06)


def test_a_position_is_judged_radially_whatever_the_direction() -> None:
    # the same mean distance from nominal (0.45 of the zone radius) along X, along the diagonal, along -Y
    radius, sigma = 0.025, 0.025 / 6.0
    width = ewma_limit(LAM, 500.0)
    first = {}
    for name, (ux, uy) in {"x": (1.0, 0.0), "diagonal": (math.sqrt(0.5), math.sqrt(0.5)), "-y": (0.0, -1.0)}.items():
        chart = ZoneChart(("x", "y"), 0.0, radius, 0, apl_fraction(1.33), LAM, width)
        rng = np.random.default_rng(3)
        for part in range(1, 60):
            d = 0.45 * radius
            r = chart.update(
                {"x": d * ux + sigma * float(rng.standard_normal()), "y": d * uy + sigma * float(rng.standard_normal())},
                {"x": (sigma, 0.0), "y": (sigma, 0.0)},
            )
            if r.alarm:
                first[name] = part
                break
    assert set(first) == {"x", "diagonal", "-y"}
    assert max(first.values()) - min(first.values()) <= 3
    # the axis that carries the excursion is named, with its side
    chart = ZoneChart(("x", "y"), 0.0, radius, 0, 0.25, LAM, width)
    for _ in range(30):
        r = chart.update({"x": 0.001, "y": -0.02}, {"x": (sigma, 0.0), "y": (sigma, 0.0)})
    assert r.alarm and r.axis == "y" and r.direction == -1


def test_a_one_sided_limit_is_only_watched_on_its_side() -> None:
    sigma = 0.001
    below = ZoneChart(("value",), 0.0, 0.01, 1, 0.25, LAM, 3.0)
    above = ZoneChart(("value",), 0.0, 0.01, 1, 0.25, LAM, 3.0)
    for _ in range(40):
        rb = below.update({"value": -0.009}, {"value": (sigma, 0.0)})
        ra = above.update({"value": 0.009}, {"value": (sigma, 0.0)})
    assert not rb.alarm and rb.statistic < 0
    assert ra.alarm and ra.direction == 1


def test_a_centred_capable_process_is_quiet_and_a_mean_on_the_apl_spends_about_the_budget() -> None:
    arl0 = 500.0
    width = ewma_limit(LAM, arl0)
    radius = 0.0075
    sigma = radius / (3 * 1.33)
    apl = apl_fraction(1.33)
    rng = np.random.default_rng(11)
    n = 100_000
    alarms = {}
    for name, mean in {"centred": 0.0, "on the apl": apl * radius}.items():
        chart = ZoneChart(("value",), 0.0, radius, 0, apl, LAM, width)
        noise = sigma * rng.standard_normal(n)
        opened, quiet = 0, True
        for v in noise:
            r = chart.update({"value": mean + float(v)}, {"value": (sigma, 0.0)})
            if r.alarm and quiet:
                opened += 1
            quiet = not r.alarm
        alarms[name] = opened
    assert alarms["centred"] == 0
    # one side of a two-sided limit solved for arl0: about one alarm per 2 arl0 parts
    assert n / (4 * arl0) < alarms["on the apl"] < n / (0.5 * arl0)


def test_state_round_trips_and_reset_starts_at_nominal() -> None:
    chart = ZoneChart(("x", "y"), 0.0, 0.025, 0, 0.25, LAM, 3.0)
    scatter = {"x": (0.003, 0.3), "y": (0.003, 0.3)}
    for v in (0.004, 0.006, 0.009):
        chart.update({"x": v, "y": -v}, scatter)
    copy = ZoneChart(("x", "y"), 0.0, 0.025, 0, 0.25, LAM, 3.0)
    copy.load(chart.state())
    assert copy.update({"x": 0.01, "y": 0.0}, scatter) == chart.update({"x": 0.01, "y": 0.0}, scatter)
    chart.reset()
    assert chart.z == {"x": 0.0, "y": 0.0} and chart.n == 0
    # a saved state of other axes (an edited program) is not loaded
    other = ZoneChart(("value",), 0.0, 0.01, 0, 0.25, LAM, 3.0)
    other.load(copy.state())
    assert other.n == 0
