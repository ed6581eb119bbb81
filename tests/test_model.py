"""The domain model's fast constructor builds the very object the dataclass builds."""

from __future__ import annotations

import dataclasses
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
