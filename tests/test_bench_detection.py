"""bench/detection.py's generator profiles: each draws what it says, and profiles differ only there.

The detection figures themselves are the benchmark's (run it); here the generator's promises, which
the figures in docs/detection.md rest on: the harsh profile is the default, the calibrated one
changes Cp, the position scatter's relation to the zone and the fast warm-up's shape, and a seed's
random draws are shared by every profile (so a profile's effect is measured on the same batches).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from scipy import stats

from tests.bench_scripts import load_bench


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("detection.py", "bench_detection_under_test")


def _unit_noise(batch: Any, signal: str) -> np.ndarray:
    """A bench Batch's readings minus their mean: the scatter (sd times unit noise)."""
    return np.asarray(batch.readings[signal] - batch.mean[signal])


def test_the_harsh_profile_is_the_default_and_every_profile_is_documented(bench: ModuleType) -> None:
    assert {"harsh", "calibrated"} <= set(bench.PROFILES)
    assert bench.generate.__defaults__ == ("harsh",)
    for name, prof in bench.PROFILES.items():
        assert prof.about, name
        assert prof.cp[0] < prof.cp[1]
        assert prof.position_scatter in ("axis", "zone")


@pytest.mark.parametrize("profile", ["harsh", "calibrated"])
def test_cp_and_the_fast_warm_up_are_drawn_as_the_profile_says(bench: ModuleType, profile: str) -> None:
    prof = bench.PROFILES[profile]
    for seed in range(40):
        batch = bench.generate("fast_warmup", "normal", 50, seed, profile)
        assert prof.cp[0] <= batch.detail["cp"] <= prof.cp[1]
        assert batch.detail["profile"] == profile
        lo, hi = prof.warmup_cross
        assert lo <= batch.detail["mean_crosses"] <= hi
        # the mean path really crosses the limit there: out at the crossing part rounded up, not before it
        out = batch.out_of_tolerance(batch.drifting, batch.mean)
        first_out = int(np.argmax(out)) + 1
        assert math.ceil(batch.detail["mean_crosses"]) - 1 <= first_out <= math.ceil(batch.detail["mean_crosses"]) + 1


def test_zone_scatter_leaves_the_zone_as_often_as_a_size_leaves_its_band(bench: ModuleType) -> None:
    zone = bench.PROFILES["calibrated"]
    assert zone.position_scatter == "zone"
    for cp in (1.33, 1.6, 2.0):
        sd_size = zone.axis_sd(0.0075, cp, position=False)
        sd_axis = zone.axis_sd(0.025, cp, position=True)
        p_size = 2.0 * stats.norm.sf(0.0075 / sd_size)  # centred size out of its band
        p_zone = stats.chi2.sf((0.025 / sd_axis) ** 2, df=2)  # centred hole: radius^2 / sd^2 is chi-square(2)
        assert p_zone == pytest.approx(p_size, rel=1e-9)
        # the harsh profile's per-axis size formula puts a centred hole out 5-10x as often
        harsh = bench.PROFILES["harsh"].axis_sd(0.025, cp, position=True)
        assert 4.0 < stats.chi2.sf((0.025 / harsh) ** 2, df=2) / p_size < 11.0


def test_profiles_share_a_seeds_draws(bench: ModuleType) -> None:
    """Same seed, other profile: the standardised noise of every reading is the same."""
    for family, noise in (("stable", "ar06"), ("pos_xy", "t4"), ("fast_warmup", "outliers"), ("wear", "normal")):
        a = bench.generate(family, noise, 100, 7, "harsh")
        b = bench.generate(family, noise, 100, 7, "calibrated")
        for signal, (_, _, half) in bench.CHANNELS.items():
            pos = signal != "probe.dia"
            za = _unit_noise(a, signal) / bench.PROFILES["harsh"].axis_sd(half, a.detail["cp"], pos)
            zb = _unit_noise(b, signal) / bench.PROFILES["calibrated"].axis_sd(half, b.detail["cp"], pos)
            assert np.allclose(za, zb, rtol=1e-3, atol=1e-6), (family, noise, signal)  # detail["cp"] is rounded
        assert a.drift_start == b.drift_start
        assert a.detail.get("direction") == b.detail.get("direction")


def test_a_run_reports_its_profile(bench: ModuleType) -> None:
    result = bench.run(1, sizes=[50], families=["wear"], noises=["normal"], profile="calibrated")
    assert result["profile"] == "calibrated"
    assert result["profile_settings"]["position_scatter"] == "zone"
    assert result["issue_table"]["ours"]["leaving_drifts"] == 1
