"""Feature chart points: the values the drift engine judges, JSON-safe as built; and the JSON the
dashboard answers (``monitor.codec.json_bytes``, orjson) parses to what ``json_safe`` and
``json.dumps`` would have written."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.codec import json_bytes, json_safe
from monitor.dashboard.api import _chart_json, _points
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


def _as_json_wrote(obj: object) -> object:
    """What the dashboard answered before orjson: ``json.dumps(json_safe(obj), default=str)``, parsed."""
    return json.loads(json.dumps(json_safe(obj), allow_nan=False, default=str))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**9), _keys, st.dictionaries(st.sampled_from(
    ["probe.hole1_x", "probe.hole1_y", "probe.hole1_dia", "probe.bx", "probe.by", "probe.bz", "probe.thread_ok"]), _readings)),
    max_size=12))  # fmt: skip
def test_the_points_json_parses_to_the_points(rows: list[tuple[int, str, dict[str, float | None]]]) -> None:
    series = [
        SeriesPoint(number, (T0 + timedelta(seconds=number)).isoformat(), f"m/O\"1/{key}",
                    {k: v for k, v in values.items() if v is not None})
        for number, key, values in rows
    ]  # fmt: skip
    features: list[Feature] = [POS, POS3, DIA, GO]
    for feature in features:
        points = _points(feature, series)
        assert json.loads(json_bytes(points)) == _as_json_wrote(points) == json.loads(json.dumps(points, allow_nan=False))
        assert _chart_json(points) == json_bytes(points)  # the very bytes


def test_chart_json_writes_what_orjson_alone_would_write_otherwise_as_json_bytes() -> None:
    """The chart's points go through orjson without json_bytes' options; a point holding what those
    options (or its default) are for is written as json_bytes writes it, byte for byte."""
    import numpy as np

    point = {"part_number": 7, "value": 0.0125, "axes": {"x": -0.0, "y": 1e-7}, "end": "2026-01-05T06:00:00+00:00", "key": "k"}
    odd: list[dict[Any, Any]] = [
        {"when": T0},  # orjson alone would write RFC 3339, json_bytes writes str()
        {"value": np.float64(0.5)},
        {"n": np.int64(3)},
        {1: "a key not text"},
        {"part_number": 2**70},
        {"key": "\ud800"},
        {"value": _Reading(1.25)},
        {"value": math.nan, "axes": {"x": math.inf}},
    ]
    for extra in odd:
        points = [point, {**point, **extra}]
        assert _chart_json(points) == json_bytes(points), extra
    assert _chart_json([]) == b"[]"


class _Reading(float):
    """A float subclass (a library's number type): sent as its float."""


def test_json_bytes_scrubs_as_json_safe_and_writes_what_json_lacks_as_text() -> None:
    import numpy as np

    when = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    body = {
        "limits": {"lower": -math.inf, "upper": 0.05},
        "forecast": {"mean": [0.01, math.nan], "n": np.int64(3), "sd": np.float64(0.5)},
        "notes": ("re-probed",),
        1: "key not text",
        "reading": _Reading(1.25),
        "when": when,
        "tools": {"T1"},
        "name": 'Ø 10 H7 "bore"',
    }
    sent = json.loads(json_bytes(body))
    # numpy's integers as numbers (json.dumps wrote their text)
    wrote = _as_json_wrote(body)
    assert isinstance(wrote, dict) and sent == {**wrote, "forecast": {"mean": [0.01, None], "n": 3, "sd": 0.5}}
    assert sent["limits"] == {"lower": None, "upper": 0.05} and sent["1"] == "key not text"
    assert sent["reading"] == 1.25 and sent["when"] == str(when) and sent["tools"] == "{'T1'}"
    # what orjson refuses goes through json: an integer beyond 64 bits, a lone surrogate
    for odd in ({"big": 2**70, "x": math.nan}, {"text": "\ud800"}):
        assert json.loads(json_bytes(odd)) == _as_json_wrote(odd)


def test_part_rows_are_sent_as_json_safe_writes_them() -> None:
    from monitor.dashboard.api import _json

    rows = {"parts": [{"part": 1, "measurements": {"probe.a": 1.5, "probe.b": math.nan}, "tool_life": math.inf}], "total": 1}
    fine = {"parts": [{"part": 2, "measurements": {"probe.a": 1.5}, "notes": ("re-probed",)}], "total": 1}
    for body in (rows, fine):
        response = _json(body)
        assert response.content_type == "application/json"
        assert isinstance(response.body, bytes) and json.loads(response.body) == _as_json_wrote(body)


def _points_by_the_axes_loop(feature: PositionFeature, series: list[SeriesPoint]) -> list[dict[str, object]]:
    """The position points as _points made them for every position before its two-axis path: the oracle."""
    out: list[dict[str, object]] = []
    for part in series:
        devs: dict[str, float] = {}
        total = 0.0
        for name, axis in feature.axes:
            raw = part.values.get(axis.signal)
            if raw is None or not math.isfinite(raw):
                break
            dev = devs[name] = raw - axis.nominal
            try:
                total += dev**2
            except OverflowError:
                total = math.inf
        else:
            value = 2.0 * math.sqrt(total)
            point = {"part_number": part.part_number, "value": value, "axes": devs, "end": part.end, "key": part.key}
            out.append(point if math.isfinite(value) else json_safe(point))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["probe.hole1_x", "probe.hole1_y", "probe.bx", "probe.by", "probe.bz"]), _readings),
        max_size=20,
    )
)
def test_two_axis_points_are_the_points_of_the_axes_loop(rows: list[dict[str, float | None]]) -> None:
    series = _series([{k: v for k, v in r.items() if v is not None} for r in rows])
    for feature in (POS, POS3):
        assert repr(_points(feature, series)) == repr(_points_by_the_axes_loop(feature, series))  # repr: NaN, -0.0
