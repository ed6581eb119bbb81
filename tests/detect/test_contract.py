"""One contract over every registered detector (after river's ``checks``): defaults construct, a
docstring with a doctest exists, state round-trips through JSON and the next outputs match, NaN is
skipped without changing state, and a seeded run repeats exactly."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
from typing import Any

import numpy as np
import pytest

import monitor.detect
from monitor.detect import REGISTRY

NAMES = sorted(REGISTRY)


def _stream(seed: int, n: int = 60) -> list[float]:
    rng = np.random.default_rng(seed)
    drift = np.concatenate([np.zeros(n // 2), 0.08 * np.arange(n - n // 2)])
    return [float(v) for v in rng.normal(0.0, 0.3, n) + drift]


def _plain(result: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(result), default=str))


def test_registry_holds_every_detector() -> None:
    assert set(NAMES) >= {"ewma", "cusum", "selfstart", "trend", "runrules", "capability", "attribution"}


def test_all_lists_are_complete() -> None:
    for info in pkgutil.iter_modules(monitor.detect.__path__):
        mod = importlib.import_module(f"monitor.detect.{info.name}")
        public = {n for n, v in vars(mod).items() if not n.startswith("_") and getattr(v, "__module__", None) == mod.__name__}
        assert public <= set(mod.__all__), (info.name, public - set(mod.__all__))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_construct_and_are_documented(name: str) -> None:
    cls = REGISTRY[name]
    cls()
    doc = cls.__doc__ or ""
    assert len(doc) > 200 and ">>>" in doc, f"{name} needs a docstring with parameters, reference and a doctest"


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_and_next_outputs_match(name: str) -> None:
    cls = REGISTRY[name]
    data = _stream(7)
    a = cls()
    for x in data[:35]:
        a.update(x)
    b = cls.from_state(json.loads(json.dumps(a.state(), allow_nan=False)))
    assert b.state() == a.state()
    for x in data[35:]:
        assert _plain(a.update(x)) == _plain(b.update(x))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_is_skipped_without_changing_state(name: str, bad: float) -> None:
    det = REGISTRY[name]()
    for x in _stream(3)[:20]:
        det.update(x)
    before = det.state()
    result = det.update(bad)
    assert result.skipped is True
    assert getattr(result, "alarm", False) is False
    assert det.state() == before


@pytest.mark.parametrize("name", NAMES)
def test_seeded_run_repeats_exactly_and_reset_restores_the_start(name: str) -> None:
    det = REGISTRY[name]()
    start = det.state()
    first = [_plain(det.update(x)) for x in _stream(11)]
    det.reset()
    assert det.state() == start
    second = [_plain(det.update(x)) for x in _stream(11)]
    assert first == second


@pytest.mark.parametrize("name", ["ewma", "cusum", "selfstart", "trend", "runrules", "capability", "attribution"])
def test_bad_hyper_parameters_raise_detection_error(name: str) -> None:
    from monitor.errors import DetectionError

    bad: dict[str, dict[str, Any]] = {
        "ewma": {"lam": 0.0},
        "cusum": {"k": -1.0},
        "selfstart": {"h": -2.0},
        "trend": {"window": 2},
        "runrules": {"rules": (4,)},
        "capability": {"lower": 2.0, "upper": 1.0},
        "attribution": {"min_r": 2.0},
    }
    with pytest.raises(DetectionError):
        REGISTRY[name](**bad[name])


@pytest.mark.parametrize("name", NAMES)
def test_update_returns_a_frozen_typed_result(name: str) -> None:
    from monitor.detect import DetectorResult

    det = REGISTRY[name]()
    result = det.update(0.25)
    assert dataclasses.is_dataclass(result) and isinstance(result, DetectorResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.n = 99
    assert isinstance(result.n, int) and result.skipped is False
