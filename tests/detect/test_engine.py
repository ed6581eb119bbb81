"""The drift engine's alert management: open, escalate, acknowledge, close, persist."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.config import ProgramConfig
from monitor.engine import DriftEngine
from monitor.feature_view import feature_view
from monitor.model import AlertKind, AlertState, ConditionState, PartRecord, PartStatus, Severity

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _program(**detection: Any) -> ProgramConfig:
    return ProgramConfig.model_validate(
        {
            "program": "O1234",
            "features": {
                "hole1_pos": {
                    "kind": "position",
                    "x": {"signal": "probe.hole1_x", "nominal": 25.0},
                    "y": {"signal": "probe.hole1_y", "nominal": 40.0},
                    "tolerance": 0.05,
                },
                "hole1_dia": {
                    "kind": "size",
                    "signal": "probe.hole1_dia",
                    "nominal": 10.0075,
                    "lower": 10.0,
                    "upper": 10.015,
                },
            },
            "detection": detection,
        }
    )


def _part(
    n: int,
    x: float = 25.0,
    y: float = 40.0,
    dia: float = 10.0075,
    *,
    machine: str = "vmc-01",
    status: PartStatus = PartStatus.COMPLETE,
    program: str = "O1234",
) -> PartRecord:
    t = T0 + timedelta(minutes=n)
    return PartRecord(
        key=f"{machine}/{program}/{n}",
        machine=machine,
        program=program,
        part_number=n,
        start=t,
        end=t,
        status=status,
        measurements={"probe.hole1_x": x, "probe.hole1_y": y, "probe.hole1_dia": dia},
    )


def test_out_of_tolerance_opens_once_and_closes_after_quiet_parts() -> None:
    engine = DriftEngine({"O1234": _program(close_after=2)}, machine_kinds={"vmc-01": "mill"})
    assert engine.process(_part(1)) == []
    opened = engine.process(_part(2, dia=10.02))
    (alert,) = [a for a in opened if a.feature == "hole1_dia"]
    assert alert.id == "vmc-01/O1234/hole1_dia/2" and alert.kind is AlertKind.OUT_OF_TOLERANCE
    assert alert.condition is ConditionState.OUT_OF_TOLERANCE
    assert alert.severity is Severity.CRITICAL and alert.state is AlertState.OPEN
    assert "hole1_dia" in alert.message and "\n" not in alert.message
    assert alert.evidence["advice"]["action"].startswith("quarantine part 2 and apply D-wear")
    json.dumps(alert.evidence, allow_nan=False)
    # still out: no change to announce, the condition's advice is refreshed (stored) on the part
    still = engine.assess(_part(3, dia=10.02))
    assert [a for a in still.alerts if a.feature == "hole1_dia"] == []
    assert [(a.id, a.last_part) for a in still.refreshed if a.feature == "hole1_dia"] == [(alert.id, 3)]
    assert [a.id for a in engine.open_alerts() if a.feature == "hole1_dia"] == [alert.id]
    recovering = [a for a in engine.process(_part(4)) if a.feature == "hole1_dia"]
    assert [(a.id, a.condition, a.state) for a in recovering] == [(alert.id, ConditionState.RECOVERING, AlertState.OPEN)]
    closed = [a for a in engine.process(_part(5)) if a.feature == "hole1_dia"]
    assert [(a.id, a.state, a.condition) for a in closed] == [(alert.id, AlertState.CLOSED, ConditionState.OK)]


def test_true_position_judges_both_axes() -> None:
    engine = DriftEngine({"O1234": _program()})
    # dx = dy = 0.02 -> TP = 2*sqrt(2)*0.02 = 0.0566 > 0.05 although each axis alone is inside 0.025
    alerts = engine.process(_part(1, x=25.02, y=40.02))
    assert [a.feature for a in alerts if a.kind is AlertKind.OUT_OF_TOLERANCE] == ["hole1_pos"]
    assert alerts[0].evidence["true_position"] == pytest.approx(2 * math.sqrt(2) * 0.02)
    # a hole position on a mill is corrected by the work offset, both axes at once
    assert "apply G54 X -0.020 Y -0.020 mm" in alerts[0].message


def test_odd_inputs_are_counted_not_raised() -> None:
    engine = DriftEngine({"O1234": _program()})
    assert engine.process(_part(1, program="O9999")) == []
    assert engine.process(_part(2, status=PartStatus.INCOMPLETE)) == []
    assert engine.process(_part(3, dia=math.nan)) == []
    assert engine.process(_part(4, x=math.inf)) == []
    assert engine.counters["unknown_program"] == 1
    assert engine.counters["part_not_complete"] == 1
    assert engine.counters["nonfinite_measurement"] == 2


def test_acknowledged_stays_acknowledged_until_closed_by_hand() -> None:
    engine = DriftEngine({"O1234": _program()})
    [alert] = engine.process(_part(1, dia=10.02))
    acked = engine.acknowledge(alert.id, T0)
    assert acked is not None and acked.state is AlertState.ACKNOWLEDGED
    assert engine.acknowledge(alert.id, T0) is None  # no change the second time
    engine.process(_part(2, dia=10.03))
    assert engine.open_alerts()[0].state is AlertState.ACKNOWLEDGED
    closed = engine.close(alert.id, T0)
    assert closed is not None and closed.state is AlertState.CLOSED
    assert engine.close(alert.id, T0) is None
    assert engine.acknowledge("nope", T0) is None
    # the condition persists: a new alert with a new id opens on the next part
    [again] = [a for a in engine.process(_part(3, dia=10.03)) if a.kind is AlertKind.OUT_OF_TOLERANCE]
    assert again.id != alert.id and again.state is AlertState.OPEN


def test_signal_lost_opens_and_closes() -> None:
    engine = DriftEngine({"O1234": _program()})
    engine.process(_part(7))
    [lost] = engine.connection_changed("vmc-01", False, T0)
    assert lost.kind is AlertKind.SIGNAL_LOST and lost.state is AlertState.OPEN and lost.part_number == 7
    assert engine.connection_changed("vmc-01", False, T0) == []
    [back] = engine.connection_changed("vmc-01", True, T0 + timedelta(minutes=1))
    assert back.id == lost.id and back.state is AlertState.CLOSED
    assert engine.connection_changed("vmc-01", True, T0) == []


def test_state_round_trips_through_json_and_resumes() -> None:
    programs = {"O1234": _program()}
    a = DriftEngine(programs)
    for n in range(1, 15):
        a.process(_part(n, x=25.0 + 0.001 * math.sin(n), dia=10.0075 + 0.0002 * n))
    a.process(_part(15, dia=10.02))
    a.connection_changed("vmc-02", False, T0)
    b = DriftEngine.from_state(programs, json.loads(json.dumps(a.state(), allow_nan=False)))
    assert [x.id for x in b.open_alerts()] == [x.id for x in a.open_alerts()]
    for n in range(16, 30):
        p = _part(n, x=25.0 + 0.0005 * n, dia=10.0075 + 0.0003 * n)
        assert a.process(p) == b.process(p)
    assert a.state() == b.state()
    assert feature_view(a.snapshot("vmc-01", "O1234", "hole1_dia")) == feature_view(b.snapshot("vmc-01", "O1234", "hole1_dia"))


def test_feature_view_is_json_able() -> None:
    engine = DriftEngine({"O1234": _program()})
    for n in range(1, 12):
        engine.process(_part(n, dia=10.0075 + 0.0001 * n))
    view = feature_view(engine.snapshot("vmc-01", "O1234", "hole1_dia"))
    json.dumps(view, allow_nan=False)
    assert [v["part_number"] for v in view["values"]] == list(range(1, 12))
    assert view["limits"]["upper"] == 10.015
    empty = feature_view(engine.snapshot("vmc-09", "O1234", "hole1_pos"))
    assert empty["values"] == []


_ODD = [math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0, 25.0, 40.0, 10.0075, 10.02, 25.03]


def test_odd_values_never_raise_and_state_stays_strict_json() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.one_of(st.sampled_from(_ODD), st.floats(allow_nan=True, allow_infinity=True))

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(values, values, values), min_size=1, max_size=25))
    def run(rows: list[tuple[float, float, float]]) -> None:
        engine = DriftEngine({"O1234": _program()})
        for n, (x, y, d) in enumerate(rows, 1):
            engine.process(_part(n, x=x, y=y, dia=d))
        json.dumps(engine.state(), allow_nan=False)
        for feature in ("hole1_pos", "hole1_dia"):
            json.dumps(feature_view(engine.snapshot("vmc-01", "O1234", feature)), allow_nan=False)

    run()
    empty = feature_view(DriftEngine({"O1234": _program()}).snapshot("vmc-01", "O1234", "hole1_pos"))
    json.dumps(empty, allow_nan=False)


def test_restore_after_the_program_file_changed() -> None:
    a = DriftEngine({"O1234": _program(forecast_window=20)})
    for n in range(1, 25):
        a.process(_part(n, dia=10.0075 + 0.0001 * n))
    saved = json.loads(json.dumps(a.state()))
    # same settings: the trend keeps its window of parts
    same = DriftEngine.from_state({"O1234": _program(forecast_window=20)}, saved)
    assert same.state()["watches"] == saved["watches"]
    # edited window: the trend restarts with the new setting, the rest of the feature is kept
    edited = DriftEngine.from_state({"O1234": _program(forecast_window=30)}, saved)
    watch = {w["feature"]: w["state"] for w in edited.state()["watches"]}["hole1_dia"]
    assert watch["channels"]["value"]["trend"]["window"] == 30
    assert watch["channels"]["value"]["trend"]["values"] == []
    assert watch["channels"]["value"]["fed"] == 24
    # a feature that changed shape (size -> position) starts afresh instead of crashing
    reshaped = ProgramConfig.model_validate(
        {
            "program": "O1234",
            "features": {
                "hole1_dia": {
                    "kind": "position",
                    "x": {"signal": "probe.hole1_x", "nominal": 25.0},
                    "y": {"signal": "probe.hole1_y", "nominal": 40.0},
                    "tolerance": 0.05,
                }
            },
        }
    )
    saved["watches"][1]["state"]["channels"] = {"x": {"broken": True}}
    fresh = DriftEngine.from_state({"O1234": reshaped}, saved)
    assert fresh.counters.get("state_discarded") == 1
    fresh.process(_part(30))


def test_ids_stay_unique_when_a_new_batch_repeats_part_numbers() -> None:
    engine = DriftEngine({"O1234": _program(close_after=1)})
    [first] = engine.process(_part(2, dia=10.02))
    engine.process(_part(3))
    # next batch: part numbers start again (new part keys)
    next_batch = replace(_part(2, dia=10.02), key="vmc-01/O1234/batch2/2")
    again = [a for a in engine.process(next_batch) if a.kind is AlertKind.OUT_OF_TOLERANCE]
    assert [a.id for a in again] == [first.id + "#2"]
    restored = DriftEngine.from_state({"O1234": _program(close_after=1)}, json.loads(json.dumps(engine.state())))
    assert restored.state()["ids"] == engine.state()["ids"]


def test_a_new_batch_restarts_the_feature_and_closes_its_old_alerts() -> None:
    engine = DriftEngine({"O1234": _program()})
    for n in range(1, 20):
        engine.process(_part(n, dia=10.0075 + 0.00005 * n))
    [oot] = [a for a in engine.process(_part(20, dia=10.02)) if a.kind is AlertKind.OUT_OF_TOLERANCE]
    fresh = replace(_part(1), key="vmc-01/O1234/batch2/1")
    closed = [a for a in engine.process(fresh) if a.state is AlertState.CLOSED]
    assert oot.id in [a.id for a in closed]
    assert all(a.evidence["close_reason"].startswith("new batch") for a in closed)
    assert [a for a in engine.open_alerts() if a.feature == "hole1_dia"] == []
    view = feature_view(engine.snapshot("vmc-01", "O1234", "hole1_dia"))
    assert [v["part_number"] for v in view["values"]] == [1]


def test_state_of_an_older_version_restarts_the_detectors_and_keeps_the_alerts() -> None:
    programs = {"O1234": _program()}
    a = DriftEngine(programs)
    for n in range(1, 6):
        a.process(_part(n))
    a.process(_part(6, dia=10.02))
    saved = json.loads(json.dumps(a.state()))
    saved["version"] = 1
    b = DriftEngine.from_state(programs, saved)
    assert [x.id for x in b.open_alerts()] == [x.id for x in a.open_alerts()]
    assert b.counters["state_discarded"] == 2 and b.evidence("vmc-01", "O1234", "hole1_dia") is None
    b.process(_part(7))


def test_a_machines_book_names_its_own_alert_ids_as_the_whole_state_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each machine's alert book saves the ids its alerts were given (kept by machine, not picked out
    of every machine's with each part), the oldest of all machines forgotten first when too many."""
    import monitor.engine

    monkeypatch.setattr(monitor.engine, "_MAX_IDS", 7)
    engine = DriftEngine({"O1234": _program()})
    for n in range(6):
        for machine in ("vmc-01", "vmc-02", "vmc-10"):
            engine._new_id(f"{machine}/O1234/hole1_dia/ewma/{n % 4}")
    whole = engine.state()["ids"]
    assert len(whole) == 7  # the oldest of the 12 went
    again = DriftEngine.from_state({"O1234": _program()}, engine.state())
    for e in (engine, again):
        for machine in ("vmc-01", "vmc-02", "vmc-10", "vmc-99"):
            mine = {b: n for b, n in whole.items() if b.split("/", 1)[0] == machine}
            assert e.state_book(machine)["ids"] == mine
            assert list(e.state_book(machine)["ids"]) == list(mine)  # in the order they were first given
    kept = next(b for b in whole if b.startswith("vmc-02/"))
    assert engine._new_id(kept) == f"{kept}#{whole[kept] + 1}" and engine.state_book("vmc-02")["ids"][kept] == whole[kept] + 1
