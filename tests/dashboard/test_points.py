"""Feature chart points: the values the drift engine judges, JSON-safe as built (the feature handler
sends them without json_safe's walk)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from monitor.codec import json_safe
from monitor.dashboard.api import _points
from monitor.model import AxisRef, PositionFeature, SizeFeature
from monitor.store import SeriesPoint

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
POS = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.0), AxisRef("probe.hole1_y", 40.0), 0.05)
DIA = SizeFeature("hole1_dia", "probe.hole1_dia", 10.0, 9.99, 10.01)


def _series(rows: list[dict[str, float]]) -> list[SeriesPoint]:
    return [SeriesPoint(n + 1, T0 + timedelta(minutes=n), f"m1/O1/{n}", values) for n, values in enumerate(rows)]


def test_position_points_are_the_true_position_of_each_complete_reading() -> None:
    rows = [{"probe.hole1_x": 25.0 + 0.001 * i, "probe.hole1_y": 40.0 - 0.0007 * i, "probe.hole1_dia": 10.0} for i in range(50)]
    rows += [{"probe.hole1_x": 25.01}, {"probe.hole1_x": math.nan, "probe.hole1_y": 40.0}]  # an axis missing, a NaN
    rows += [{"probe.hole1_x": 1.7e308, "probe.hole1_y": 40.0}]  # a deviation whose square is beyond float range
    points = _points(POS, _series(rows))
    assert [p["part_number"] for p in points] == [*range(1, 51), 53]
    for p, row in zip(points[:50], rows, strict=False):
        assert p["value"] == POS.true_position(row)  # the very same float
        assert p["axes"] == {"x": row["probe.hole1_x"] - 25.0, "y": row["probe.hole1_y"] - 40.0}
        assert p["end"] == (T0 + timedelta(minutes=p["part_number"] - 1)).isoformat()
    assert points[-1]["value"] is None and points[-1]["axes"] == {"x": 1.7e308 - 25.0, "y": 0.0}
    assert json.loads(json.dumps(points, allow_nan=False)) == json_safe(points)


def test_size_points_leave_out_missing_and_non_finite_readings() -> None:
    rows = [{"probe.hole1_dia": 10.001}, {"probe.hole1_dia": math.inf}, {}, {"probe.hole1_dia": 9.998}]
    points = _points(DIA, _series(rows))
    assert [(p["part_number"], p["value"]) for p in points] == [(1, 10.001), (4, 9.998)]
    assert json.dumps(points, allow_nan=False)
