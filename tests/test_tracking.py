"""Part tracking on hand-built observation streams: every untidy case the tracker must survive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import ProgramConfig, TrackingConfig
from monitor.model import GAP_SIGNAL, Observation, PartRecord, PartStatus, Value
from monitor.tracking import PartTracker

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def program(name: str = "O1001", part_end: str = "part_count") -> ProgramConfig:
    return ProgramConfig.model_validate(
        {
            "program": name,
            "part_end": part_end,
            "features": {
                "hole1_dia": {"kind": "size", "signal": "probe.hole1_dia", "nominal": 10.0, "lower": 9.99, "upper": 10.01},
                "hole1_pos": {
                    "kind": "position",
                    "x": {"signal": "probe.hole1_x", "nominal": 25.0},
                    "y": {"signal": "probe.hole1_y", "nominal": 40.0},
                    "tolerance": 0.05,
                },
            },
        }
    )


def obs(t: float, signal: str, value: Value, machine: str = "m1") -> Observation:
    return Observation(machine, signal, T0 + timedelta(seconds=t), value)


def cycle(t0: float, count: int, *, probe: dict[str, Value] | None = None, load: float = 40.0) -> list[Observation]:
    """One ordinary cycle: start, cut with tool 12, probe, counter increments, ready."""
    values = probe if probe is not None else {"probe.hole1_dia": 10.001, "probe.hole1_x": 25.002, "probe.hole1_y": 39.999}
    out = [
        obs(t0, "execution", "ACTIVE"),
        obs(t0 + 0.5, "tool.number", 12),
        obs(t0 + 0.6, "tool.life", 100.0 + count),
        obs(t0 + 1, "spindle.speed", 8000),
        obs(t0 + 1, "spindle.load", load),
        obs(t0 + 2, "spindle.load", load + 10),
        obs(t0 + 3, "spindle.load", load),
        obs(t0 + 4, "spindle.speed", 0),
    ]
    out += [obs(t0 + 5 + i * 0.1, k, v) for i, (k, v) in enumerate(values.items())]
    out += [obs(t0 + 6, "part.count", count), obs(t0 + 6.5, "execution", "READY")]
    return out


def run(tracker: PartTracker, stream: list[Observation], *, close: bool = True) -> list[PartRecord]:
    parts: list[PartRecord] = []
    for o in stream:
        parts += tracker.update(o)
    if close:
        parts += tracker.close()
    return parts


def start(count: int = 0) -> list[Observation]:
    return [obs(-10, "program.name", "O1001"), obs(-10, "part.count", count), obs(-10, "execution", "READY")]


def make(**kw: object) -> PartTracker:
    tracking = TrackingConfig.model_validate(kw)
    return PartTracker("m1", {"O1001": program(), "O2002": program("O2002")}, tracking)


def test_ordinary_parts_are_complete_with_aggregates() -> None:
    parts = run(make(grace_s=2), start() + cycle(0, 1) + cycle(20, 2))
    assert [p.part_number for p in parts] == [1, 2]
    p = parts[0]
    assert p.status is PartStatus.COMPLETE
    assert p.measurements == {"probe.hole1_dia": 10.001, "probe.hole1_x": 25.002, "probe.hole1_y": 39.999}
    assert p.spindle.mean_load == pytest.approx(130 / 3)
    assert p.spindle.peak_load == 50
    assert p.spindle.cutting_time == pytest.approx(3.0)
    assert p.tools[-1].tool == "12" and p.tools[-1].life_end == 101.0
    assert p.counter == 1
    assert p.start == T0 and p.end == T0 + timedelta(seconds=6)
    assert len({p.key for p in parts}) == 2


def test_probe_value_inside_grace_window_belongs_to_the_part() -> None:
    c = cycle(0, 1, probe={"probe.hole1_dia": 10.0, "probe.hole1_x": 25.0})
    late = obs(7.5, "probe.hole1_y", 40.001)  # 1.5 s after the counter moved
    parts = run(make(grace_s=2), [*start(), *c, late, *cycle(20, 2)])
    assert parts[0].status is PartStatus.COMPLETE
    assert parts[0].measurements["probe.hole1_y"] == 40.001


def test_probe_value_after_grace_window_leaves_part_incomplete() -> None:
    c = cycle(0, 1, probe={"probe.hole1_dia": 10.0, "probe.hole1_x": 25.0})
    late = obs(9.0, "probe.hole1_y", 40.001)  # 3 s late, grace is 2 s
    parts = run(make(grace_s=2), [*start(), *c, late, *cycle(20, 2)])
    assert parts[0].status is PartStatus.INCOMPLETE
    assert parts[0].missing == ("probe.hole1_y",)
    assert parts[1].status is PartStatus.COMPLETE


def test_program_change_mid_part_aborts_it_and_numbers_per_program() -> None:
    stream = [*start(), *cycle(0, 1), obs(20, "execution", "ACTIVE"), obs(21, "spindle.load", 30.0)]
    stream += [obs(22, "program.name", "O2002"), *cycle(30, 2), *cycle(50, 3)]
    parts = run(make(grace_s=0), stream)
    assert [(p.program, p.part_number, p.status) for p in parts] == [
        ("O1001", 1, PartStatus.COMPLETE),
        ("O1001", 2, PartStatus.ABORTED),  # the attempt at part 2 was aborted; part 2 is still to come
        ("O2002", 1, PartStatus.COMPLETE),
        ("O2002", 2, PartStatus.COMPLETE),
    ]
    assert "program changed" in parts[1].notes[0]


def test_stopped_cycle_is_aborted() -> None:
    stream = [*start(), obs(0, "execution", "ACTIVE"), obs(1, "spindle.load", 50.0), obs(2, "execution", "STOPPED")]
    stream += cycle(10, 1)
    parts = run(make(grace_s=1), stream)
    assert [p.status for p in parts] == [PartStatus.ABORTED, PartStatus.COMPLETE]


def test_new_cycle_without_counter_moving_aborts_previous() -> None:
    first = [o for o in cycle(0, 1) if o.signal != "part.count"]
    parts = run(make(grace_s=1), [*start(), *first, *cycle(10, 1)])
    assert [p.status for p in parts] == [PartStatus.ABORTED, PartStatus.COMPLETE]


def test_counter_reset_to_zero_is_not_a_part() -> None:
    stream = [*start(5), *cycle(0, 6), obs(10, "part.count", 0), *cycle(20, 1), *cycle(40, 2)]
    tracker = make(grace_s=1)
    parts = run(tracker, stream)
    assert [p.counter for p in parts] == [6, 1, 2]
    assert all(p.status is PartStatus.COMPLETE for p in parts)
    assert tracker.counts["counter_resets"] == 1


def test_replayed_observations_after_reconnect_do_not_duplicate_parts() -> None:
    first = [*start(), *cycle(0, 1), *cycle(20, 2)]
    replay = first[-12:]  # the adapter re-reads what it already delivered
    tracker = make(grace_s=1)
    parts = run(tracker, [*first, *replay, *cycle(40, 3)])
    assert [p.counter for p in parts] == [1, 2, 3]
    assert tracker.counts["duplicates"] == len(replay)


def test_two_sources_with_clock_skew_are_aligned() -> None:
    # the probe source's clock runs 3 s behind the controller's; configured offset +3 s
    tracker = PartTracker(
        "m1",
        {"O1001": program()},
        TrackingConfig(grace_s=0.5, max_skew_s=4.0),
        signal_offsets={"probe.hole1_dia": 3.0, "probe.hole1_x": 3.0, "probe.hole1_y": 3.0},
    )
    stream: list[Observation] = list(start())
    for i, t0 in enumerate((0.0, 20.0, 40.0)):
        c = cycle(t0, i + 1)
        main = [o for o in c if not o.signal.startswith("probe.")]
        probes = [
            Observation(o.machine, o.signal, o.time - timedelta(seconds=3), o.value) for o in c if o.signal.startswith("probe.")
        ]
        stream += main + probes  # probe source delivers after the controller's values
    parts = run(tracker, stream)
    assert [p.status for p in parts] == [PartStatus.COMPLETE] * 3
    assert all(len(p.measurements) == 3 for p in parts)


def test_unavailable_probe_value_makes_part_incomplete() -> None:
    c = cycle(0, 1, probe={"probe.hole1_dia": None, "probe.hole1_x": 25.0, "probe.hole1_y": 40.0})
    parts = run(make(grace_s=1), [*start(), *c, *cycle(20, 2)])
    assert parts[0].status is PartStatus.INCOMPLETE
    assert "probe.hole1_dia" not in parts[0].measurements
    assert parts[0].missing == ("probe.hole1_dia",)


def test_gap_during_part_makes_it_incomplete() -> None:
    c = cycle(0, 1)
    c.insert(4, obs(1.5, GAP_SIGNAL, "agent restarted"))
    parts = run(make(grace_s=1), [*start(), *c, *cycle(20, 2)])
    assert parts[0].status is PartStatus.INCOMPLETE
    assert any("agent restarted" in n for n in parts[0].notes)
    assert parts[1].status is PartStatus.COMPLETE


def test_program_end_rule() -> None:
    tracker = PartTracker("m1", {"O1001": program(part_end="program_end")}, TrackingConfig(grace_s=0))
    stream = [
        *start(),
        *[o for o in cycle(0, 1) if o.signal != "part.count"],
        *[o for o in cycle(20, 1) if o.signal != "part.count"],
    ]
    parts = run(tracker, stream)
    assert [p.status for p in parts] == [PartStatus.COMPLETE, PartStatus.COMPLETE]


def test_explicit_part_complete_signal_rule() -> None:
    tracker = PartTracker("m1", {"O1001": program(part_end="signal:part.complete")}, TrackingConfig(grace_s=0))
    stream = [*start()]
    for t0 in (0.0, 20.0):
        stream += [o for o in cycle(t0, 1) if o.signal != "part.count"]
        stream += [obs(t0 + 6.2, "part.complete", 1), obs(t0 + 6.3, "part.complete", 0)]
    parts = run(tracker, stream)
    assert len(parts) == 2 and all(p.status is PartStatus.COMPLETE for p in parts)


def test_part_numbering_resumes_after_restart() -> None:
    tracker = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), next_part_numbers={"O1001": 41})
    parts = run(tracker, [*start(), *cycle(0, 1)])
    assert parts[0].part_number == 41


def test_machine_without_execution_signal_uses_counter_alone() -> None:
    stream = [obs(-1, "program.name", "O1001"), obs(-1, "part.count", 0)]
    for i in range(3):
        t0 = i * 10.0
        stream += [obs(t0 + 1, "probe.hole1_dia", 10.0), obs(t0 + 1, "probe.hole1_x", 25.0), obs(t0 + 1, "probe.hole1_y", 40.0)]
        stream += [obs(t0 + 2, "part.count", i + 1)]
    parts = run(make(grace_s=0), stream)
    assert [p.status for p in parts] == [PartStatus.COMPLETE] * 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40)), max_size=8))
def test_never_emits_a_part_twice_whatever_the_replay(replays: list[tuple[int, int]]) -> None:
    base: list[Observation] = list(start())
    for i in range(6):
        base += cycle(i * 20.0, i + 1)
    stream = list(base)
    for at, length in replays:  # after a reconnect, the last `length` observations arrive again
        at = min(at, len(stream))
        stream[at:at] = stream[max(0, at - length) : at]
    parts = run(make(grace_s=1), stream)
    keys = [p.key for p in parts]
    assert len(keys) == len(set(keys))
    assert [p.counter for p in parts if p.status is PartStatus.COMPLETE] == [1, 2, 3, 4, 5, 6]


def test_replays_are_recognised_in_a_bounded_window_and_by_each_signals_latest_value() -> None:
    tracker = make(grace_s=1)
    first = [*start(), *cycle(0, 1)]
    run(tracker, first, close=False)
    # far more than the window later: the window has forgotten cycle 1, but what a reconnecting
    # source sends again first, each signal's current value, is still known however old
    loads = [obs(20 + i * 0.001, "spindle.load", float(i % 97)) for i in range(20_000)]
    run(tracker, loads, close=False)
    assert len(tracker._recent) <= 2_048
    current = [first[-1], first[-2]]  # execution READY and part.count 1, as a subscription's initial values
    before = tracker.counts["duplicates"]
    run(tracker, current, close=False)
    assert tracker.counts["duplicates"] == before + 2
    # the bound: a value older than the window that is no signal's latest any more is taken as new
    old = [o for o in first if o.signal == "tool.life"]
    run(tracker, [obs(40, "tool.life", 150.0), *old], close=False)
    assert tracker.counts["duplicates"] == before + 2


def test_a_tool_loaded_again_starts_with_the_life_it_last_reported() -> None:
    tracker = make(grace_s=0)
    stream = [*start(), obs(0, "execution", "ACTIVE"), obs(0.5, "tool.number", 12), obs(0.6, "tool.life", 10.0)]
    stream += [obs(1, "spindle.speed", 8000), obs(1, "spindle.load", 40.0), obs(3, "spindle.load", 40.0)]
    stream += [obs(3, "tool.life", 12.5), obs(3, "spindle.speed", 0), obs(3.5, "tool.number", 7)]
    # a source that reports a tool's life only when it changes (MTConnect assets) says nothing here
    stream += [obs(4, "spindle.speed", 6000), obs(4, "spindle.load", 30.0), obs(6, "spindle.load", 30.0)]
    stream += [obs(6, "tool.life", 3.0), obs(6, "spindle.speed", 0), obs(6.5, "tool.number", 12)]
    stream += [obs(7, "spindle.speed", 8000), obs(7, "spindle.load", 40.0), obs(9, "spindle.load", 40.0)]
    stream += [obs(9, "tool.life", 15.0), obs(9, "spindle.speed", 0), obs(10, "part.count", 1), obs(10.5, "execution", "READY")]
    (part,) = run(tracker, stream)
    assert [(t.tool, t.life_start, t.life_end) for t in part.tools] == [("12", 10.0, 12.5), ("7", 3.0, 3.0), ("12", 12.5, 15.0)]
    resumed = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), context=tracker.context())
    (again,) = run(resumed, [obs(20, "execution", "ACTIVE"), obs(20.5, "tool.number", 7), obs(21, "part.count", 2)])
    assert again.tools[-1].life_start == 3.0  # remembered across a restart, with the context


def test_context_resumes_program_and_counter_after_restart() -> None:
    before = make(grace_s=0)
    run(before, [*start(), *cycle(0, 1), *cycle(20, 2)])
    context = before.context()
    assert context["program"] == "O1001" and context["counter"] == 2
    # the source resumed mid-stream: no program name, no counter baseline repeated
    resumed = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), context=context)
    parts = run(resumed, cycle(40, 3))
    assert [(p.program, p.part_number, p.counter, p.status) for p in parts] == [("O1001", 3, 3, PartStatus.COMPLETE)]
    # the source did not resume and parts were made meanwhile: the counter is taken as a new baseline
    rebased = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), context=context)
    parts = run(rebased, [obs(100, "part.count", 9), *cycle(120, 10)])
    assert [(p.part_number, p.counter) for p in parts] == [(3, 10)]
    assert rebased.counts["counter_rebased_after_restart"] == 1
