"""Our Shapiro-Wilk test and normal / chi-square functions are scipy's: the same W and p on every size
range of the approximation, the same quantiles over the range capability studies use; and a
capability study needs no scipy import (0.2-0.6 s of CPU, more than the study)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import special, stats

from monitor.detect.capability import capability
from monitor.detect.distributions import chi2_isf, norm_cdf, norm_ppf
from monitor.detect.normality import shapiro_wilk


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 11, 12, 13, 25, 60, 199, 1000, 5000])
@pytest.mark.parametrize("shape", ["normal", "exponential", "t3", "uniform"])
def test_w_and_p_agree_with_scipy(n: int, shape: str) -> None:
    rng = np.random.default_rng(n)
    draws: dict[str, Callable[[int], Any]] = {
        "normal": lambda size: rng.normal(size=size),
        "exponential": lambda size: rng.exponential(size=size),
        "t3": lambda size: rng.standard_t(3, size=size),
        "uniform": lambda size: rng.uniform(size=size),
    }
    for _ in range(5):
        x = 25.0 + 0.004 * draws[shape](n)  # a hole position in mm: large mean, small scatter
        expected = stats.shapiro(x)
        w, p = shapiro_wilk(x)
        assert w == pytest.approx(float(expected.statistic), abs=1e-7)
        assert p == pytest.approx(float(expected.pvalue), abs=1e-6, rel=1e-5)


def test_ties_and_outliers_agree_with_scipy() -> None:
    for x in ([1.0, 1.0, 2.0], [0, 0, 0, 0, 1], [0] * 10 + [1], [5] * 20 + [6], [0, 0, 1, 1], list(range(12))):
        expected = stats.shapiro(x)
        w, p = shapiro_wilk(x)
        assert w == pytest.approx(float(expected.statistic), abs=1e-7)
        assert p == pytest.approx(float(expected.pvalue), abs=1e-7)


def test_outside_its_domain_it_refuses() -> None:
    for x in ([1.0, 2.0], [3.0] * 10, [1.0, 2.0, float("nan")], np.zeros(5001)):
        with pytest.raises(ValueError):
            shapiro_wilk(x)


def test_a_skewed_batch_is_flagged_and_a_normal_one_is_not() -> None:
    rng = np.random.default_rng(7)
    normal = capability(10.0 + 0.002 * rng.normal(size=80), 9.99, 10.01)
    skewed = capability(10.0 + 0.002 * rng.exponential(size=80), 9.99, 10.01)
    assert normal.normal is True and skewed.normal is False


def test_normal_quantiles_and_distribution_agree_with_scipy() -> None:
    p = np.concatenate([np.logspace(-300, -1, 300), np.linspace(0.001, 0.999, 999), 1 - np.logspace(-16, -1, 100)])
    assert np.allclose(norm_ppf(p), special.ndtri(p), rtol=1e-14, atol=0)
    assert norm_ppf(0.975) == pytest.approx(float(special.ndtri(0.975)), rel=1e-15)
    assert (norm_ppf(0.0), norm_ppf(1.0), norm_ppf(0.5)) == (-math.inf, math.inf, 0.0)
    assert math.isnan(norm_ppf(1.5)) and math.isnan(norm_ppf(-0.1))
    for x in np.linspace(-37.0, 9.0, 500):
        assert norm_cdf(float(x)) == pytest.approx(float(special.ndtr(x)), rel=1e-10, abs=0)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 9, 19, 49, 199, 999, 4899, 99_999])
def test_chi_square_quantiles_agree_with_scipy(df: int) -> None:
    for q in (0.0005, 0.005, 0.025, 0.05, 0.5, 0.95, 0.975, 0.995, 0.9995):
        assert chi2_isf(q, df) == pytest.approx(float(special.chdtri(df, q)), rel=1e-9)
    for q, bad in ((0.0, df), (1.0, df), (0.5, 0)):
        with pytest.raises(ValueError):
            chi2_isf(q, bad)


def test_a_capability_study_does_not_import_scipy() -> None:
    """Importing scipy.special (0.2 s) or scipy.stats (0.6 s) costs more CPU than a whole 70-row
    study on a 100,000-part store: the CLI's capability, the report and their maths go without."""
    code = (
        "import sys; import monitor.report, monitor.queries; from monitor.detect.capability import capability;"
        "from monitor.detect.attribute import wilson_interval; wilson_interval(1, 40);"
        "r = capability([10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.02], 9.7, 10.3);"
        "assert r.normality_p is not None and r.cp is not None; print('scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
