"""An open breach forecast is reused, shifted by the parts since, while the fit stays where it said."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from monitor.detect import watch
from monitor.detect.forecast import BreachForecast, breach_forecast_compiled
from monitor.engine import DriftEngine
from monitor.model import PartRecord
from tests.detect.test_engine import _part, _program


def _wear(n: int, rng: np.random.Generator) -> PartRecord:
    """Linear tool wear towards the upper limit (10.015) from part 10, 0.3 um scatter."""
    return _part(n, dia=10.0075 + 0.00012 * max(0, n - 10) + rng.normal(0.0, 0.0003))


def _run(engine: DriftEngine, parts: list[PartRecord]) -> list[tuple[int, int, int | None, tuple[float, ...]]]:
    """(part, alarm, risk part, first-bad-part interval) of hole1_dia's forecast, for parts with one."""
    out = []
    for p in parts:
        ev = engine.assess(p).evidence.get("hole1_dia")
        if ev is not None and ev.forecast is not None:
            fc = ev.forecast
            risk = None if fc.risk_parts is None else p.part_number + fc.risk_parts
            out.append((p.part_number, int(ev.forecast_alarm), risk, tuple(p.part_number + v for v in fc.first_out)))
    return out


def test_an_alarming_forecast_is_shifted_not_computed_again_while_the_fit_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    compiled = breach_forecast_compiled

    def counted(*args: Any, **kwargs: Any) -> BreachForecast:
        calls.append(1)
        return compiled(*args, **kwargs)

    monkeypatch.setattr(watch, "breach_forecast_compiled", counted)
    rng = np.random.default_rng(7)
    parts = [_wear(n, rng) for n in range(1, 61)]
    seen = _run(DriftEngine({"O1234": _program()}), parts)
    alarms = [s for s in seen if s[1]]
    assert len(alarms) >= 10
    # fewer kernel calls than forecasts: at most _REUSE_PARTS parts of each alarm reuse the last one
    assert len(calls) < len(seen) - 5
    assert len(calls) >= len(seen) / (watch._REUSE_PARTS + 1)
    # a reused forecast names the same absolute parts as the one it was shifted from
    reused = [b for a, b in itertools.pairwise(alarms) if b[0] == a[0] + 1 and b[2:] == a[2:]]
    assert reused


def test_resume_in_the_middle_of_a_reuse_repeats_the_continuous_run() -> None:
    rng = np.random.default_rng(7)
    parts = [_wear(n, rng) for n in range(1, 61)]
    programs = {"O1234": _program()}
    a = DriftEngine(programs)
    first = _run(a, parts[:45])
    assert first[-1][1], "the forecast alarms before the state is saved"
    b = DriftEngine.from_state(programs, json.loads(json.dumps(a.state(), allow_nan=False)))
    assert _run(a, parts[45:]) == _run(b, parts[45:])
    assert a.state() == b.state()
