"""The domain model's fast constructor builds the very object the dataclass builds."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.model import Observation, new_observation

_VALUES = st.one_of(st.none(), st.floats(allow_nan=False), st.text(max_size=8))


@given(
    st.text(max_size=6),
    st.sampled_from(["spindle.load", "program.name", "probe.x"]),
    st.integers(0, 10**9),
    _VALUES,
    st.one_of(st.none(), st.integers(0, 2**40)),
)
def test_new_observation_is_the_dataclass(machine: str, signal: str, ms: int, value: float | str | None, seq: int | None) -> None:
    time = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    fast, plain = new_observation(machine, signal, time, value, seq), Observation(machine, signal, time, value, seq)
    assert type(fast) is Observation
    assert fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    assert fast.end is None and fast.number == plain.number
    assert dataclasses.replace(fast, value=None) == dataclasses.replace(plain, value=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.value = 1.0  # type: ignore[misc]


@given(
    st.one_of(
        st.integers(),
        st.integers(2**1023, 10**5000),
        st.floats(),
        st.booleans(),
        st.text(max_size=12),
        st.sampled_from(["1e400", "-1e400", "9" * 400, "nan", "Infinity", " 7 ", "0x10"]),
    )
)
def test_number_is_a_finite_float_or_none_and_never_raises(value: object) -> None:
    """An int beyond float range (``10**400`` on a JSON replay line) is not finite: None, no
    OverflowError out of the tracker's hot path."""
    obs = Observation("m1", "probe.x", datetime(2026, 1, 1, tzinfo=UTC), value)  # type: ignore[arg-type]
    number = obs.number
    assert number is None or (type(number) is float and math.isfinite(number))
    if isinstance(value, int) and not isinstance(value, bool):
        assert (number is None) == (abs(value) >= 2**1024 - 2**970)  # rounds past the largest float
        if number is not None:
            assert number == float(value)


def test_number_of_an_int_beyond_float_range_is_none() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert Observation("m1", "probe.x", t, 10**400).number is None
    assert Observation("m1", "probe.x", t, -(10**400)).number is None
    assert Observation("m1", "probe.x", t, "1" + "0" * 400).number is None
    assert Observation("m1", "probe.x", t, 10**300).number == 1e300


_reading = st.one_of(st.none(), st.floats(), st.sampled_from([0.0, -0.0, 1.7e308, 25.0, 40.0]))


@given(st.lists(_reading, min_size=3, max_size=3), st.booleans())
def test_true_position_and_judge_are_the_formula_over_the_axes(values: list[float | None], with_z: bool) -> None:
    from types import MappingProxyType

    from monitor.model import AxisRef, PositionFeature

    z = AxisRef("probe.z", -3.5) if with_z else None
    feature = PositionFeature("bore", AxisRef("probe.x", 25.0), AxisRef("probe.y", 40.0), 0.05, z=z)
    readings = {s: v for s, v in zip(("probe.x", "probe.y", "probe.z"), values, strict=True) if v is not None}
    # the oracle: 2 sqrt(sum of squared deviations) over feature.axes, in that order
    expected: float | None = 0.0
    for _, axis in feature.axes:
        if axis.signal not in readings:
            expected = None
            break
        assert expected is not None
        try:
            expected += (readings[axis.signal] - axis.nominal) ** 2
        except OverflowError:
            expected = None  # a deviation whose square is beyond float range: pow raises
            break
    else:
        assert expected is not None
        expected = 2.0 * math.sqrt(expected)
    try:
        got = feature.true_position(MappingProxyType(readings))  # any mapping, not copied
    except OverflowError:  # as before: an absurd reading (1.7e308) is refused by judge too
        assert expected is None
        with pytest.raises(OverflowError):
            feature.judge(readings)
        return
    assert repr(got) == repr(expected)
    judged = None if got is None or not math.isfinite(got) else got <= 0.05
    assert feature.judge(MappingProxyType(readings)) is judged
