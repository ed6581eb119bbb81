"""ARL of the Markov-chain approximations against published tables (within 1%).

Sources:
- EWMA: J. M. Lucas and M. S. Saccucci, "Exponentially weighted moving average control schemes:
  properties and enhancements", Technometrics 32(1), 1990, Table 3; reproduced in D. C.
  Montgomery, *Introduction to Statistical Quality Control*, 6th ed., Table 9.11 (ARL0 = 500
  designs: lambda 0.05 L 2.615, 0.10 L 2.814, 0.20 L 2.962, 0.25 L 2.998, 0.40 L 3.054).
- CUSUM: two-sided tabular CUSUM with k = 0.5, Montgomery 6th ed., Table 9.3 (from Hawkins 1993,
  "Cumulative sum control charting: an underutilized SPC tool", Quality Engineering 5(3)):
  h = 4: 168, 74.2, 26.6, 13.3, 8.38, 4.75, 3.34 ; h = 5: 465, 139, 38.0, 17.0, 10.4, 5.75, 4.01
  at shifts 0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0 sigma.
"""

from __future__ import annotations

from typing import Any

import pytest

from monitor.detect import arl
from monitor.detect.arl import arl_table, cusum_arl, cusum_h, ewma_arl, ewma_limit, shewhart_limit
from monitor.errors import DetectionError

EWMA_TABLE = [
    # (lambda, L, shift, published ARL)
    (0.05, 2.615, 0.0, 500.0),
    (0.05, 2.615, 0.5, 28.8),
    (0.05, 2.615, 1.0, 11.4),
    (0.05, 2.615, 2.0, 5.2),
    (0.10, 2.814, 0.0, 500.0),
    (0.10, 2.814, 0.5, 31.3),
    (0.10, 2.814, 1.0, 10.3),
    (0.10, 2.814, 2.0, 4.4),
    (0.20, 2.962, 0.0, 500.0),
    (0.20, 2.962, 0.5, 41.8),
    (0.20, 2.962, 1.0, 10.5),
    (0.20, 2.962, 2.0, 3.7),
    (0.25, 2.998, 0.0, 500.0),
    (0.25, 2.998, 0.5, 48.2),
    (0.25, 2.998, 1.0, 11.1),
    (0.25, 2.998, 3.0, 2.3),
    (0.40, 3.054, 0.0, 500.0),
    (0.40, 3.054, 0.5, 71.2),
    (0.40, 3.054, 1.0, 14.3),
    (0.40, 3.054, 3.0, 2.0),
]

CUSUM_TABLE = [
    # (k, h, shift, published ARL)
    (0.5, 4.0, 0.0, 168.0),
    (0.5, 4.0, 0.25, 74.2),
    (0.5, 4.0, 0.5, 26.6),
    (0.5, 4.0, 0.75, 13.3),
    (0.5, 4.0, 1.0, 8.38),
    (0.5, 4.0, 1.5, 4.75),
    (0.5, 4.0, 2.0, 3.34),
    (0.5, 5.0, 0.0, 465.0),
    (0.5, 5.0, 0.25, 139.0),
    (0.5, 5.0, 0.5, 38.0),
    (0.5, 5.0, 0.75, 17.0),
    (0.5, 5.0, 1.0, 10.4),
    (0.5, 5.0, 1.5, 5.75),
    (0.5, 5.0, 2.0, 4.01),
]


@pytest.mark.parametrize(("lam", "limit", "shift", "published"), EWMA_TABLE)
def test_ewma_arl_matches_lucas_saccucci(lam: float, limit: float, shift: float, published: float) -> None:
    # the table's entries are rounded to 3 significant digits; allow that plus 1%
    assert ewma_arl(lam, limit, shift) == pytest.approx(published, rel=0.01, abs=0.05)


@pytest.mark.parametrize(("k", "h", "shift", "published"), CUSUM_TABLE)
def test_cusum_arl_matches_montgomery_table(k: float, h: float, shift: float, published: float) -> None:
    assert cusum_arl(k, h, shift) == pytest.approx(published, rel=0.01, abs=0.005)


@pytest.mark.parametrize(("lam", "published_limit"), [(0.05, 2.615), (0.10, 2.814), (0.20, 2.962), (0.40, 3.054)])
def test_ewma_limit_for_arl0_500_matches_table(lam: float, published_limit: float) -> None:
    assert ewma_limit(lam, 500.0) == pytest.approx(published_limit, rel=0.01)


def test_cusum_h_for_arl0_370_and_465() -> None:
    # Montgomery 6th ed. 9.1.4: k = 0.5, h = 4.77 gives ARL0 = 370; Table 9.3: h = 5 gives 465
    assert cusum_h(0.5, 370.0) == pytest.approx(4.77, rel=0.01)
    assert cusum_h(0.5, 465.0) == pytest.approx(5.0, rel=0.01)


def test_fast_initial_response_shortens_run_lengths() -> None:
    # Lucas & Crosier 1982: an h/2 head start barely changes ARL0 but cuts the out-of-control ARL
    # of an early shift sharply. (Their two-sided values come from a 2-D chain; the sum-of-rates
    # combination used here is approximate with a head start, so only the qualitative effect is checked.)
    plain0, fir0 = cusum_arl(0.5, 5.0), cusum_arl(0.5, 5.0, headstart=2.5)
    plain1, fir1 = cusum_arl(0.5, 5.0, 1.0), cusum_arl(0.5, 5.0, 1.0, headstart=2.5)
    assert 0.9 * plain0 < fir0 < plain0
    assert fir1 < 0.75 * plain1
    with pytest.raises(DetectionError):
        cusum_arl(0.5, 5.0, headstart=5.0)


def test_shewhart_limit_for_arl0_370_is_three_sigma() -> None:
    assert shewhart_limit(370.4) == pytest.approx(3.0, abs=1e-3)


def test_solving_limits_is_cheap_enough_for_config_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded work, counted in Markov-chain solves (not wall-clock time: the CPU is shared): a
    limit takes a few dozen small solves, and a second program with the same budget none."""
    solves = {"ewma": 0, "cusum": 0}
    ewma_chain, cusum_chain = arl._ewma_chain, arl._cusum_one_sided

    def count_ewma(*args: Any, **kwargs: Any) -> float:
        solves["ewma"] += 1
        return ewma_chain(*args, **kwargs)

    def count_cusum(*args: Any, **kwargs: Any) -> float:
        solves["cusum"] += 1
        return cusum_chain(*args, **kwargs)

    monkeypatch.setattr(arl, "_ewma_chain", count_ewma)
    monkeypatch.setattr(arl, "_cusum_one_sided", count_cusum)
    ewma_limit.cache_clear()
    cusum_h.cache_clear()
    ewma_limit(0.2, 1234.0)
    cusum_h(0.5, 1234.0)
    assert 0 < solves["ewma"] <= 30 and 0 < solves["cusum"] <= 30, solves
    before = dict(solves)
    ewma_limit(0.2, 1234.0)
    cusum_h(0.5, 1234.0)
    assert solves == before  # cached


def test_tune_table_shapes_and_errors() -> None:
    out = arl_table("ewma", lam=0.1, arl0=500.0)
    arl = out["arl"]
    assert isinstance(arl, dict)
    assert out["L"] == pytest.approx(2.814, abs=0.002) and set(arl) >= {"0.5", "1.0", "2.0"}
    out = arl_table("cusum", k=0.5, limit=4.0)
    assert out["h"] == 4.0 and out["arl0"] == pytest.approx(168.0, rel=0.01)
    with pytest.raises(DetectionError):
        arl_table("ewma", lam=0.1)
    with pytest.raises(DetectionError):
        arl_table("xbar", arl0=100.0)
    with pytest.raises(DetectionError):
        ewma_limit(1.5, 500.0)


def test_ewma_with_lambda_one_is_the_shewhart_chart() -> None:
    # lambda = 1 makes the EWMA the individuals chart: ARL0 = 1 / (2 (1 - Phi(L)))
    assert ewma_limit(1.0, 3000.0) == pytest.approx(shewhart_limit(3000.0), rel=1e-4)
    assert ewma_arl(1.0, 3.0) == pytest.approx(370.4, rel=1e-3)


def test_unreachable_targets_raise_a_detection_error_naming_the_program() -> None:
    from monitor.config import ProgramConfig
    from monitor.detect.watch import WatchPlan

    program = ProgramConfig.model_validate(
        {
            "program": "O7",
            "features": {"d": {"kind": "size", "signal": "probe.d", "nominal": 0.0, "lower": -1, "upper": 1}},
            "detection": {"arl0": 1e12, "cusum_k": 0.0},
        }
    )
    with pytest.raises(DetectionError, match="program O7"):
        WatchPlan.for_program(program)
