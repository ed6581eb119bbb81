"""Feature chart points: the values the drift engine judges, JSON-safe as built (the feature handler
sends them without json_safe's walk), and written as JSON text point by point exactly as
``json.dumps`` writes the points."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.codec import json_safe
from monitor.dashboard.api import _json_text, _points, _points_text
from monitor.model import AttributeFeature, AxisRef, Feature, PositionFeature, SizeFeature
from monitor.store import SeriesPoint

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
POS = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.0), AxisRef("probe.hole1_y", 40.0), 0.05)
DIA = SizeFeature("hole1_dia", "probe.hole1_dia", 10.0, 9.99, 10.01)


def _series(rows: list[dict[str, float]]) -> list[SeriesPoint]:
    return [SeriesPoint(n + 1, (T0 + timedelta(minutes=n)).isoformat(), f"m1/O1/{n}", values) for n, values in enumerate(rows)]


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


POS3 = PositionFeature("bore", AxisRef("probe.bx", -3.5), AxisRef("probe.by", 1e-3), 0.1, z=AxisRef("probe.bz", 12.0))
GO = AttributeFeature("thread", "probe.thread_ok")
_readings = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e3, 1e3),
    st.sampled_from([0.0, -0.0, 1e-300, 1.7e308, 25.0, 40.0, 10.0]),
)
_keys = st.text(st.characters(codec="utf-8"), max_size=12)  # machine ids and program names are free text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**9), _keys, st.dictionaries(st.sampled_from(
    ["probe.hole1_x", "probe.hole1_y", "probe.hole1_dia", "probe.bx", "probe.by", "probe.bz", "probe.thread_ok"]), _readings)),
    max_size=12))  # fmt: skip
def test_the_points_text_is_the_json_of_the_points(rows: list[tuple[int, str, dict[str, float | None]]]) -> None:
    series = [
        SeriesPoint(number, (T0 + timedelta(seconds=number)).isoformat(), f"m/O\"1/{key}",
                    {k: v for k, v in values.items() if v is not None})
        for number, key, values in rows
    ]  # fmt: skip
    features: list[Feature] = [POS, POS3, DIA, GO]
    for feature in features:
        assert _points_text(feature, series) == _json_text(_points(feature, series))
        assert json.loads(_points_text(feature, series)) == json.loads(json.dumps(_points(feature, series), allow_nan=False))


def test_part_rows_are_sent_as_json_safe_writes_them() -> None:
    from monitor.dashboard.api import _json_rows

    rows = {"parts": [{"part": 1, "measurements": {"probe.a": 1.5, "probe.b": math.nan}, "tool_life": math.inf}], "total": 1}
    fine = {"parts": [{"part": 2, "measurements": {"probe.a": 1.5}, "notes": ("re-probed",)}], "total": 1}
    for body in (rows, fine):
        response = _json_rows(body)
        assert response.content_type == "application/json"
        assert response.text == _json_text(json_safe(body))


def test_a_feature_body_is_sent_as_json_safe_writes_it_with_the_points_last() -> None:
    from monitor.dashboard.api import _body_text

    def body(evidence: dict[str, object]) -> dict[str, object]:
        alerts = [{"id": "m1/O1/hole1_pos/1", "evidence": evidence, "parts": "3-9"}, {"id": "a2", "evidence": {}}]
        return {
            "machine": "m1",
            "limits": {"lower": -math.inf, "upper": 0.05},
            "forecast": {"mean": [0.01, math.nan]},
            "capability": None,
            "values": None,
            "total_parts": 12,
            "alerts": alerts,
            "evidence": alerts[0],
        }

    points = _points_text(POS, _series([{"probe.hole1_x": 25.001, "probe.hole1_y": 40.0}]))
    for evidence in ({"slope": 0.001, "window": [1.0, 2.0]}, {"slope": math.nan, "r": [math.inf, 0.5]}):
        whole = body(evidence)
        without = _json_text(json_safe({k: v for k, v in whole.items() if k != "values"}))
        assert _body_text(whole, points) == f'{without[:-1]}, "values": {points}}}'
