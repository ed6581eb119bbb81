"""The store's JSON encoder: the very text ``json.dumps`` makes, whatever the value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import codec

_keys = st.one_of(st.text(max_size=5), st.integers(-3, 3), st.booleans(), st.none(), st.floats(allow_nan=False, width=32))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text())
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.tuples(inner, inner), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_dumps_is_json_dumps_to_the_character(value: Any) -> None:
    # NaN and infinities, non-ASCII and control characters, int/bool/None/float keys, tuples, big ints
    assert codec.dumps(value) == json.dumps(value)


def test_dumps_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        codec.dumps({"when": object()})
    with pytest.raises(TypeError):
        codec.dumps({(1, 2): 3})  # a tuple key


def test_dumps_without_the_c_accelerator_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_ENCODE", None)
    value = {"a": [1.0, float("nan"), float("-inf")], 2: "\u00e9\u2028", "n": None}
    assert codec.dumps(value) == json.dumps(value)
