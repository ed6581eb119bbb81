"""The store's JSON encoder: text that reads back as the very value ``json.dumps``'s text reads back
as, whatever the value (NaN and infinities, non-text keys, big integers: ``json.dumps``'s own text)."""

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


def _read(text: str) -> str:
    """What a reader gets, to the bit: repr tells 1 from 1.0 and True, -0.0 from 0.0, NaN as nan."""
    return repr(json.loads(text))


@settings(max_examples=400, deadline=None)
@given(_values)
def test_dumps_reads_back_as_json_dumps_does(value: Any) -> None:
    # NaN and infinities, non-ASCII and control characters, int/bool/None/float keys, tuples, big ints
    assert _read(codec.dumps(value)) == _read(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(_values, st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_a_value_with_nan_or_infinity_is_json_dumps_text(value: Any, odd: float) -> None:
    # orjson would write null for them: a reader would get None where the state had NaN
    nested = {"v": [value, {"deep": (1, odd)}]}
    assert codec.dumps(nested) == json.dumps(nested)
    assert codec.dumps(odd) == json.dumps(odd)


def test_dumps_writes_floats_compact_and_exact() -> None:
    value = {"a": [0.1, 1e-05, 1e16, -0.0, 5e-324, 1.7976931348623157e308, 12345678901234567], "n": None, "t": "\u00e9"}
    text = codec.dumps(value)
    assert text == '{"a":[0.1,0.00001,1e+16,-0.0,5e-324,1.7976931348623157e+308,12345678901234567],"n":null,"t":"\u00e9"}'
    assert _read(text) == _read(json.dumps(value))


def test_what_orjson_writes_otherwise_goes_through_json() -> None:
    class Number(float):
        pass

    for value in ({1: "a"}, {None: 1, True: 2}, [2**70], ["\ud800"], [Number(1.5)], {"null": [float("nan")]}):
        assert codec.dumps(value) == json.dumps(value)


def test_dumps_refuses_what_json_dumps_refuses() -> None:
    from dataclasses import dataclass
    from datetime import UTC, datetime

    @dataclass
    class Point:
        x: float

    with pytest.raises(TypeError, match="not JSON serializable"):
        codec.dumps({"when": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        codec.dumps({"when": datetime(2026, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError, match="not JSON serializable"):
        codec.dumps([Point(1.0)])
    with pytest.raises(TypeError):
        codec.dumps({(1, 2): 3})  # a tuple key


def test_dumps_without_the_c_accelerator_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_ENCODE", None)
    value = {"a": [1.0, float("nan"), float("-inf")], 2: "\u00e9\u2028", "n": None}
    assert codec.dumps(value) == json.dumps(value)


def test_nan_in_subclassed_containers_is_json_dumps_text() -> None:
    from collections import OrderedDict, defaultdict

    class Row(list[Any]):
        pass

    nan = float("nan")
    for value in (OrderedDict(a=nan), defaultdict(list, a=[nan]), {"a": Row([1.0, nan])}, [(nan,)]):
        assert codec.dumps(value) == json.dumps(value)


@settings(max_examples=400, deadline=None)
@given(_values, st.sampled_from([codec.dumps, json.dumps, lambda v: json.dumps(v, indent=1)]))
def test_loads_reads_what_json_loads_reads(value: Any, write: Any) -> None:
    # the store's texts (codec.dumps) and json's, NaN, big integers and lone surrogates included
    text = write(value)
    assert repr(codec.loads(text)) == _read(text)
    assert repr(codec.loads(text.encode("utf-8", "surrogatepass"))) == _read(text)


def test_loads_of_what_orjson_reads_otherwise() -> None:
    # integers beyond 64 bits (orjson: a float), numbers beyond float range, NaN, a lone surrogate
    # escaped and as a character, a float with 19 digits in a row, an integer at the 64-bit edges
    for text in (
        "[18446744073709551616]",
        '{"n": -9223372036854775809}',
        "[18446744073709551615, -9223372036854775808]",
        "[1e400, -1e400]",
        "[NaN, Infinity]",
        '["\\ud800"]',
        '"\ud800"',
        "[0.00012345678901234567]",
    ):
        assert repr(codec.loads(text)) == _read(text), text


def test_loads_fails_as_json_loads_fails() -> None:
    for text in ("", "[1", "\ufeff[1]", "[1] x", "{'a': 1}"):
        with pytest.raises(json.JSONDecodeError) as expected:
            json.loads(text)
        with pytest.raises(json.JSONDecodeError) as got:
            codec.loads(text)
        assert str(got.value) == str(expected.value)
