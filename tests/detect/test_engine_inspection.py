"""The drift engine on the new feature kinds (one-sided, angle, attribute) and on inspection
sources: a CMM's values of a feature watched in part order whenever they arrive, late data
rebuilding the source's watch without alerting history twice, state surviving a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from monitor.config import ProgramConfig
from monitor.engine import DriftEngine, SeriesPoint
from monitor.errors import MonitorError
from monitor.model import Alert, AlertKind, AlertState, ConditionState, PartRecord, PartStatus

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)

PROGRAM: dict[str, Any] = {
    "program": "O7",
    "features": {
        "flat": {"kind": "one_sided", "signal": "probe.flat", "upper": 0.02},
        "chamfer": {"kind": "angle", "signal": "probe.chamfer", "nominal": 45.0, "lower": 44.5, "upper": 45.5},
        "thread": {"kind": "attribute", "signal": "probe.thread_ok", "measured_by": {"bench": {"characteristic": "M6 gauge"}}},
        "bore": {
            "kind": "size",
            "signal": "probe.bore",
            "nominal": 10.0,
            "lower": 9.99,
            "upper": 10.01,
            "measured_by": {"cmm": {"characteristic": "DIA_B"}},
        },
        "ra": {"kind": "one_sided", "upper": 0.0016, "measured_by": {"bench": {"characteristic": "Ra"}}},
    },
}


def _part(n: int, **values: float) -> PartRecord:
    end = T0 + timedelta(minutes=3 * n)
    return PartRecord(f"m1/O7/{n}", "m1", "O7", n, end - timedelta(minutes=2), end, PartStatus.COMPLETE, dict(values))


def _ok(n: int, rng: np.random.Generator) -> PartRecord:
    return _part(
        n,
        **{
            "probe.flat": float(abs(rng.normal(0.008, 0.0015))),
            "probe.chamfer": float(rng.normal(45.0, 0.08)),
            "probe.thread_ok": 1.0,
            "probe.bore": float(rng.normal(10.0, 0.0012)),
        },
    )


def _kinds(alerts: list[Alert], feature: str) -> set[str]:
    return {str(a.kind) for a in alerts if a.feature == feature and a.state is AlertState.OPEN}


def test_new_kinds_are_watched_and_a_stable_batch_raises_nothing() -> None:
    engine = DriftEngine({"O7": ProgramConfig.model_validate(PROGRAM)})
    rng = np.random.default_rng(11)
    alerts = [a for n in range(1, 61) for a in engine.process(_ok(n, rng))]
    assert alerts == []
    snap = engine.snapshot("m1", "O7", "flat")
    assert snap is not None and snap.plan.tolerance_limits() == {
        "kind": "one_sided",
        "nominal": 0.01,
        "lower": None,
        "upper": 0.02,
        "unit": "mm",
    }
    counts = engine.attribute_counts("m1", "O7", "thread")
    assert counts is not None and counts.result().n == 60 and counts.result().fails == 0
    assert counts.result().hi == pytest.approx(0.0602, abs=1e-4)  # 0 of 60: below 6% (Wilson, 95%)


def test_a_one_sided_feature_drifting_up_and_an_angle_out_of_tolerance_alert() -> None:
    engine = DriftEngine({"O7": ProgramConfig.model_validate(PROGRAM)})
    rng = np.random.default_rng(3)
    alerts: list[Alert] = []
    for n in range(1, 41):
        part = _ok(n, rng)
        part.measurements["probe.flat"] = 0.006 + 0.0004 * n + float(rng.normal(0, 0.0005))  # breaks 0.02 near part 35
        if n == 30:
            part.measurements["probe.chamfer"] = 45.7
        alerts += engine.process(part)
    flat = [a for a in alerts if a.feature == "flat"]  # one condition: its changes, part by part (last_part)
    first_warning = min(a.last_part or a.part_number for a in flat)
    oot = [a for a in flat if a.condition is ConditionState.OUT_OF_TOLERANCE]
    assert first_warning < min(a.last_part or a.part_number for a in oot)  # warned before the first bad part
    assert "upper limit 0.0200" in next(a.message for a in flat if a.kind is AlertKind.FORECAST)
    [angle] = [
        a
        for a in alerts
        if a.feature == "chamfer" and a.condition is ConditionState.OUT_OF_TOLERANCE and a.state is AlertState.OPEN
    ]
    assert angle.last_part == 30 and "45.7000 deg above upper limit 45.5000" in angle.message


def test_every_failed_go_no_go_check_is_an_out_of_tolerance_alert_that_closes_when_parts_pass() -> None:
    engine = DriftEngine({"O7": ProgramConfig.model_validate(PROGRAM)})
    rng = np.random.default_rng(5)
    changes: list[Alert] = []
    for n in range(1, 21):
        part = _ok(n, rng)
        if n == 7:
            part.measurements["probe.thread_ok"] = 0.0
        changes += engine.process(part)
    thread = [a for a in changes if a.feature == "thread"]
    assert (thread[0].part_number, thread[0].state) == (7, AlertState.OPEN)
    assert "1 of 7 parts failed" in thread[0].message and thread[0].evidence["fails"] == 1
    assert thread[-1].state is AlertState.CLOSED  # passes again: back in control after close_after parts


def test_a_cmm_every_fifth_part_an_hour_later_is_watched_in_part_order() -> None:
    program = ProgramConfig.model_validate(PROGRAM)
    engine = DriftEngine({"O7": program})
    rng = np.random.default_rng(9)
    parts = [_ok(n, rng) for n in range(1, 81)]
    for p in parts:
        engine.process(p)
    # the CMM measured every fifth part; its values drift up 0.25 um per part from part 20 on
    measured = [p for p in parts if p.part_number % 5 == 0]

    def value(p: PartRecord) -> float:
        return 10.0 + max(0, p.part_number - 20) * 0.00025 + float(rng.normal(0, 0.0008))

    values = {p.key: value(p) for p in measured}
    points = [SeriesPoint(p, values[p.key]) for p in measured]
    alerts: list[Alert] = []
    for k in range(1, len(points) + 1):  # results arrive one file at a time
        alerts += engine.assess_series("m1", "O7", "bore@cmm", points[:k])
    assert alerts and {a.feature for a in alerts} == {"bore"} and {a.evidence["source"] for a in alerts} == {"cmm"}
    assert all("bore (cmm)" in a.message for a in alerts)
    assert "bore@cmm" in alerts[0].id
    before = engine.counters.get("series_rebuilt", 0)
    # a re-import of the same results changes nothing
    assert engine.assess_series("m1", "O7", "bore@cmm", points) == []
    # an older part measured later: the source is rebuilt quietly, history is not alerted again
    late = [*points[:3], SeriesPoint(parts[11], 10.0004), *points[3:]]
    again = engine.assess_series("m1", "O7", "bore@cmm", late)
    assert engine.counters["series_rebuilt"] == before + 1
    assert all(a.part_number == late[-1].part.part_number for a in again)
    # the state survives a restart
    restored = DriftEngine.from_states({"O7": program}, [engine.state("m1")])
    assert restored.assess_series("m1", "O7", "bore@cmm", late) == []
    assert {a.id for a in restored.open_alerts()} == {a.id for a in engine.open_alerts()}


def test_a_bench_go_no_go_source_and_a_one_sided_inspection_only_feature() -> None:
    engine = DriftEngine({"O7": ProgramConfig.model_validate(PROGRAM)})
    rng = np.random.default_rng(2)
    parts = [_ok(n, rng) for n in range(1, 11)]
    alerts = engine.assess_series("m1", "O7", "thread@bench", [SeriesPoint(p, None, p.part_number != 4) for p in parts])
    # one condition: out of tolerance at part 4, recovering from the next good part, then closed
    assert [(a.feature, a.condition, a.part_number, a.evidence["source"], a.state) for a in alerts] == [
        ("thread", ConditionState.OUT_OF_TOLERANCE, 4, "bench", AlertState.OPEN),
        ("thread", ConditionState.RECOVERING, 4, "bench", AlertState.OPEN),
        ("thread", ConditionState.OK, 4, "bench", AlertState.CLOSED),
    ]
    assert alerts[-1].last_part == 7  # three good parts (close_after) after it
    assert engine.series_labels("O7") == {
        "bore@cmm": ("bore", "cmm"),
        "ra@bench": ("ra", "bench"),
        "thread@bench": ("thread", "bench"),
    }
    ra = engine.assess_series("m1", "O7", "ra@bench", [SeriesPoint(p, 0.0017 if p.part_number == 9 else 0.0007) for p in parts])
    oot = [(a.part_number, a.state, a.evidence["source"]) for a in ra if a.kind is AlertKind.OUT_OF_TOLERANCE]
    assert oot[0] == (9, AlertState.OPEN, "bench")  # a single wild reading: also a re-probe notice
    assert len({a.id for a in ra}) == 1 and ra[0].condition is ConditionState.OUT_OF_TOLERANCE  # one condition
    assert "ra (bench) out of tolerance: 0.0017 mm above upper limit 0.0016" in ra[0].message


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"kind": "one_sided", "signal": "probe.f", "upper": 0.02, "lower": 0.0}, "give exactly one limit"),
        ({"kind": "one_sided", "signal": "probe.f", "lower": 2.0}, "needs the nominal"),
        ({"kind": "one_sided", "upper": 0.02}, "give the probe signal that measures it"),
        ({"kind": "angle", "signal": "probe.a", "nominal": 46.0, "lower": 44.0, "upper": 45.0}, "outside"),
        ({"kind": "attribute"}, "give the probe signal"),
    ],
)
def test_feature_kinds_refuse_what_cannot_be_judged(feature: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, MonitorError), match=message):
        ProgramConfig.model_validate({"program": "O8", "features": {"f": feature}})


def _machine_part(machine: str, n: int, rng: np.random.Generator, *, thread_ok: bool = True) -> PartRecord:
    end = T0 + timedelta(minutes=3 * n)
    values = {"probe.flat": float(abs(rng.normal(0.008, 0.0015))), "probe.bore": float(rng.normal(10.0, 0.0012))}
    values["probe.thread_ok"] = 1.0 if thread_ok else 0.0
    return PartRecord(f"{machine}/O7/{n}", machine, "O7", n, end - timedelta(minutes=2), end, PartStatus.COMPLETE, values)


def _assert_each_share_is_the_whole_states_own(engine: DriftEngine, machines: tuple[str, ...]) -> None:
    whole = engine.state()
    for machine in machines:
        mine = engine.state(machine)
        assert mine["watches"] == [w for w in whole["watches"] if w["machine"] == machine]
        assert list(engine.shares(machine)) == [""] + [f"/{w['program']}/{w['feature']}" for w in mine["watches"]]
        assert mine["alerts"] == [a for a in whole["alerts"] if a["key"][0] == machine]
        assert mine["counts"] == [c for c in whole["counts"] if c["machine"] == machine]
        assert mine["fed"] == [f for f in whole["fed"] if f["machine"] == machine]
        for key in ("lost", "gaps", "last_part"):
            assert mine[key] == {m: v for m, v in whole[key].items() if m == machine}


def test_a_machines_share_is_its_part_of_the_whole_state_in_order_through_every_change() -> None:
    """A machine's share is built from that machine's entries (kept apart as the engine changes
    them), not by scanning the cell's: it must stay exactly the whole state's entries of that
    machine, in the same order, as features are added, alerts open and close, a program changes."""
    program = ProgramConfig.model_validate(PROGRAM)
    features = {k: v for k, v in PROGRAM["features"].items() if k != "bore"}
    without_bore = ProgramConfig.model_validate({**PROGRAM, "features": features})
    machines = ("m1", "m2", "m3")
    engine = DriftEngine({"O7": program})
    rng = np.random.default_rng(5)
    for n in range(1, 13):
        for machine in machines[: 1 + n % 3]:  # m3 joins late: its entries come after the others'
            engine.process(_machine_part(machine, n, rng, thread_ok=n % 4 != 0))
    engine.connection_changed("m2", False, T0)
    points = [SeriesPoint(_machine_part("m1", n, rng), 10.0 + 0.0001 * n) for n in range(1, 6)]
    engine.assess_series("m1", "O7", "bore@cmm", points)
    engine.assess_series("m2", "O7", "bore@cmm", points[1:])
    engine.assess_series("m1", "O7", "ra@bench", [SeriesPoint(p.part, 0.0007) for p in points])
    engine.assess_series("m1", "O7", "bore@cmm", [SeriesPoint(_machine_part("m1", 0, rng), 10.0), *points])  # rebuilt: last now
    assert engine.counters["series_rebuilt"] == 1
    assert all(engine.state()[k] for k in ("counts", "fed", "lost", "alerts", "last_part"))
    _assert_each_share_is_the_whole_states_own(engine, machines)
    first = engine.open_alerts()
    assert len({a.machine for a in first}) >= 2  # go/no-go fails opened conditions on several machines
    assert engine.acknowledge(first[0].id, T0) is not None
    assert engine.close(first[-1].id, T0) is not None
    _assert_each_share_is_the_whole_states_own(engine, machines)
    engine.reprogram({"O7": without_bore}, T0)  # the bore watches and the cmm source's feed go
    assert not [w for w in engine.state()["watches"] if w["feature"] == "bore"]
    _assert_each_share_is_the_whole_states_own(engine, machines)
    engine.reprogram({"O7": program}, T0)  # and come back, last in the whole state's order
    for n in range(13, 16):
        for machine in reversed(machines):
            engine.process(_machine_part(machine, n, rng))
    _assert_each_share_is_the_whole_states_own(engine, machines)
    restored = DriftEngine.from_states({"O7": program}, [engine.state(m) for m in machines])
    _assert_each_share_is_the_whole_states_own(restored, machines)
    with pytest.raises(TypeError):
        engine._watches.update({})  # a way of changing the dict that would not keep the machines' view
