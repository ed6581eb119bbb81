"""Part tracking on hand-built observation streams: every untidy case the tracker must survive."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import ProgramConfig, TrackingConfig
from monitor.model import GAP_SIGNAL, Observation, PartRecord, PartStatus, Value
from monitor.tracking import PartTracker, _RecentObservations

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


def test_part_end_signal_follows_the_running_program_and_a_reload() -> None:
    """The signal that ends a part is the running program's (looked up when the program changes, not
    per observation): it ends nothing under a part_count program, and a reload that gives the program
    a signal rule takes effect from the next observation."""
    tracker = PartTracker(
        "m1", {"O1001": program(part_end="signal:part.complete"), "O2002": program("O2002")}, TrackingConfig(grace_s=0)
    )

    def signalled(t0: float, name: str) -> list[Observation]:
        body = [o for o in cycle(t0, 1) if o.signal not in ("part.count", "execution")]
        return [obs(t0 - 1, "program.name", name), obs(t0, "execution", "ACTIVE"), *body, obs(t0 + 7, "part.complete", 1)]

    parts = run(tracker, [*start(), *signalled(0, "O1001"), *signalled(20, "O2002")], close=False)
    tracker.programs = {"O1001": program(), "O2002": program("O2002", part_end="signal:part.complete")}
    parts += run(tracker, [obs(35, "part.complete", 0), obs(36, "part.complete", 1)], close=False)
    tracker.programs = {"O2002": program("O2002")}
    parts += run(tracker, [obs(37, "execution", "ACTIVE"), obs(38, "part.complete", 0), obs(39, "part.complete", 1)])
    assert [(p.program, p.status) for p in parts] == [("O1001", PartStatus.COMPLETE), ("O2002", PartStatus.COMPLETE)]
    assert parts[1].start == T0 + timedelta(seconds=20)  # the O2002 cycle ran on past its part.complete


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
    assert [t.cutting_time for t in part.tools] == pytest.approx([2.0, 2.0, 2.0])  # each use its own cutting time
    resumed = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), context=tracker.context())
    (again,) = run(resumed, [obs(20, "execution", "ACTIVE"), obs(20.5, "tool.number", 7), obs(21, "part.count", 2)])
    assert again.tools[-1].life_start == 3.0  # remembered across a restart, with the context


def test_a_tool_number_that_is_no_number_changes_no_tool() -> None:
    """NaN or infinity as the tool number (a Double node) is no tool; a text tool number is one."""
    stream = [*start(), obs(0, "execution", "ACTIVE"), obs(0.5, "tool.number", 12), obs(1, "tool.number", float("nan"))]
    stream += [obs(1.5, "tool.number", float("inf")), obs(2, "tool.number", "T7"), obs(3, "part.count", 1)]
    (part,) = run(make(grace_s=0), stream)
    assert [t.tool for t in part.tools] == ["12", "T7"]


def test_context_resumes_program_and_counter_after_restart() -> None:
    before = make(grace_s=0)
    run(before, [*start(), *cycle(0, 1), *cycle(20, 2)])
    context = before.context()
    assert context["program"] == "O1001" and context["counter"] == 2
    # the source resumed mid-stream: no program name, no counter baseline repeated
    resumed = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), context=context)
    parts = run(resumed, cycle(40, 3))
    assert [(p.program, p.part_number, p.counter, p.status) for p in parts] == [("O1001", 3, 3, PartStatus.COMPLETE)]
    # the source did not resume and parts were made meanwhile: each counter value is a placeholder
    # and part numbers keep following the counter
    later = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), context=context)
    parts = run(later, [obs(100, "part.count", 9), *cycle(120, 10)])
    assert [(p.part_number, p.counter, p.status) for p in parts] == [
        *[(n, n, PartStatus.NOT_OBSERVED) for n in range(3, 10)],
        (10, 10, PartStatus.COMPLETE),
    ]
    assert "while the monitor was not reading" in parts[0].notes[0]
    # a controller reset while the daemon was down is a new baseline, not parts
    rebased = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=0), context=context)
    parts = run(rebased, [obs(100, "part.count", 0), *cycle(120, 1)])
    assert [(p.part_number, p.counter) for p in parts] == [(3, 1)]
    assert rebased.counts["counter_rebased_after_restart"] == 1


# ------------------------------------------------------------------ gaps: every counter value accounted for


def gap(t: float, until: float | None, reason: str = "connection lost") -> Observation:
    end = None if until is None else T0 + timedelta(seconds=until)
    return Observation("m1", GAP_SIGNAL, T0 + timedelta(seconds=t), reason, end=end)


def test_gap_window_accounts_every_counter_value_it_hid() -> None:
    # parts 3-5 are made while the connection is down; after it the source's current values show
    # counter 5 and part 6 running: 3 and 4 were never seen, 5 only by its counter
    stream = [*start(), *cycle(0, 1), *cycle(20, 2), *cycle(40, 3)[:3]]
    stream += [gap(41, 95), obs(86, "part.count", 5), obs(90, "execution", "ACTIVE"), *cycle(90, 6)[1:], *cycle(110, 7)]
    parts = run(make(grace_s=1), stream)
    assert [(p.part_number, p.counter, p.status) for p in parts] == [
        (1, 1, PartStatus.COMPLETE),
        (2, 2, PartStatus.COMPLETE),
        (3, 3, PartStatus.NOT_OBSERVED),
        (4, 4, PartStatus.NOT_OBSERVED),
        (5, 5, PartStatus.INCOMPLETE),  # the part open when the gap began: its end is all we saw
        (6, 6, PartStatus.INCOMPLETE),  # started inside the gap
        (7, 7, PartStatus.COMPLETE),
    ]
    hidden = parts[2]
    assert hidden.start == T0 + timedelta(seconds=41) and hidden.end == T0 + timedelta(seconds=86)  # counter showed 5
    assert "connection lost" in hidden.notes[0] and "source clock" in hidden.notes[0]
    assert hidden.measurements == {} and hidden.missing == ()
    assert len({p.key for p in parts}) == len(parts)


def test_a_gap_where_nothing_moved_costs_no_part() -> None:
    stream = [*start(), *cycle(0, 1), gap(10, 12), *cycle(20, 2), *cycle(40, 3)]
    parts = run(make(grace_s=1), stream)
    assert [(p.counter, p.status) for p in parts] == [(n, PartStatus.COMPLETE) for n in (1, 2, 3)]


def test_counter_jump_without_a_gap_is_accounted_and_the_part_is_not_complete() -> None:
    stream = [*start(), *cycle(0, 1), *cycle(20, 2)[:-2], obs(26, "part.count", 5), *cycle(40, 6)]
    tracker = make(grace_s=1)
    parts = run(tracker, stream)
    assert [(p.part_number, p.counter, p.status) for p in parts] == [
        (1, 1, PartStatus.COMPLETE),
        (2, 2, PartStatus.NOT_OBSERVED),
        (3, 3, PartStatus.NOT_OBSERVED),
        (4, 4, PartStatus.NOT_OBSERVED),
        (5, 5, PartStatus.INCOMPLETE),  # its values may belong to any of the parts between
        (6, 6, PartStatus.COMPLETE),
    ]
    assert "without the source delivering" in parts[1].notes[0]
    assert tracker.counts["counter_jumps"] == 1


def test_placeholders_keep_their_place_behind_a_part_in_grace() -> None:
    late = obs(7.5, "probe.hole1_y", 40.001)
    stream = [*start(), *cycle(0, 1, probe={"probe.hole1_dia": 10.0, "probe.hole1_x": 25.0}), gap(7, 30), late]
    stream += [obs(29, "part.count", 3), *cycle(40, 4)]
    parts = run(make(grace_s=2), stream)
    assert [(p.part_number, p.counter) for p in parts] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert parts[0].status is PartStatus.INCOMPLETE  # the gap began inside its grace window
    assert parts[0].measurements["probe.hole1_y"] == 40.001


def test_an_absurd_counter_jump_is_a_new_baseline() -> None:
    tracker = make(grace_s=0, max_counter_jump=50)
    parts = run(tracker, [*start(), *cycle(0, 1), obs(10, "part.count", 90_000), *cycle(20, 90_001)])
    assert [(p.part_number, p.counter) for p in parts] == [(1, 1), (2, 90_001)]
    assert tracker.counts["counter_jumps_too_large"] == 1


def test_gap_in_source_time_is_processed_in_order_whatever_the_host_clock() -> None:
    # the controller's clock is a year behind the host; the gap comes in the controller's clock
    tracker = make(grace_s=1, max_skew_s=5)
    c = cycle(20, 2)
    stream = [*start(), *cycle(0, 1), *c[:4], gap(21.6, 22.5), *c[4:], *cycle(40, 3)]
    parts = run(tracker, stream)
    assert [(p.counter, p.status) for p in parts] == [
        (1, PartStatus.COMPLETE),
        (2, PartStatus.INCOMPLETE),
        (3, PartStatus.COMPLETE),
    ]


def test_probe_value_from_the_year_2999_is_kept_with_a_note_off_complete_parts() -> None:
    tracker = make(grace_s=1, max_skew_s=5)
    c = cycle(20, 2)
    odd = Observation("m1", "probe.hole1_x", datetime(2999, 1, 1, tzinfo=UTC), 25.001)
    c = [o for o in c if o.signal != "probe.hole1_x"]
    c.insert(9, odd)
    parts = run(tracker, [*start(), *cycle(0, 1), *c, *cycle(40, 3), *cycle(60, 4)])
    assert [(p.counter, p.status) for p in parts] == [
        (1, PartStatus.COMPLETE),
        (2, PartStatus.INCOMPLETE),
        (3, PartStatus.COMPLETE),
        (4, PartStatus.COMPLETE),
    ]
    assert parts[1].measurements["probe.hole1_x"] == 25.001
    assert any("2999-01-01" in n and "machine's clock" in n for n in parts[1].notes)
    assert tracker.counts["probe_values_off_clock"] == 1
    assert tracker.counts["late_observations"] == 0  # the bogus time moved nothing


def test_context_saved_with_a_part_carries_that_parts_counter() -> None:
    tracker = make(grace_s=5)
    parts = run(tracker, [*start(), *cycle(0, 1), *cycle(7, 2)], close=False)
    assert [p.counter for p in parts] == [1]  # part 2 still waits in its grace window
    assert tracker.context(after=parts[0])["counter"] == 1
    assert tracker.context()["counter"] == 2


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(1, 60), st.booleans()), max_size=4),
    st.integers(1, 3),
)
def test_every_counter_value_is_accounted_once_whatever_is_lost(losses: list[tuple[int, int, bool]], grace: int) -> None:
    base: list[Observation] = list(start())
    for i in range(12):
        base += cycle(i * 20.0, i + 1)
    lost = [False] * len(base)
    for at, length, _ in losses:
        for k in range(at, min(at + length, len(base))):
            lost[k] = k >= 3  # the baseline stays
    stream: list[Observation] = []
    window_start: Observation | None = None
    marked: list[tuple[datetime, datetime]] = []
    marks = {at for at, _, said in losses if said}
    for k, o in enumerate(base):
        if lost[k]:
            if window_start is None and stream:
                window_start = stream[-1]
            continue
        if window_start is not None:
            if any(k - length <= at < k for at, length, _ in losses if at in marks):
                # the adapter reports this loss, in the source's clock
                stream.append(Observation("m1", GAP_SIGNAL, window_start.time, "lost", end=o.time))
                marked.append((window_start.time, o.time))
            window_start = None
        stream.append(o)
    tracker = make(grace_s=grace)
    parts = run(tracker, stream)
    seen_counts = [int(o.value) for o in stream if o.signal == "part.count" and isinstance(o.value, (int, float))]
    made = [p for p in parts if p.status is not PartStatus.ABORTED]  # an abandoned attempt holds no counter value
    assert [p.counter for p in made] == list(range(1, max(seen_counts) + 1))  # each value once, in order
    assert all(p.part_number == p.counter for p in made)  # numbers follow the counter
    for p in parts:
        if p.status is PartStatus.COMPLETE:
            assert not any(p.start <= end and start <= p.end for start, end in marked), (p, marked)


def test_context_saved_with_each_part_of_a_batch_resumes_right_after_that_part() -> None:
    # a gap gives placeholders and the part after them at once; the daemon stores them one
    # transaction each, and may die between two: the context stored with each must resume exactly
    # after it (its counter and the next number), or the numbers would skip after the restart
    stream = [*start(), *cycle(0, 1), *cycle(20, 2)[:3], gap(21, 75), obs(66, "part.count", 4), *cycle(70, 5)[1:]]
    tracker = make(grace_s=1)
    parts = run(tracker, stream, close=False)
    assert [(p.part_number, p.counter, p.status) for p in parts][:3] == [
        (1, 1, PartStatus.COMPLETE),
        (2, 2, PartStatus.NOT_OBSERVED),
        (3, 3, PartStatus.NOT_OBSERVED),
    ]
    saved = tracker.context(after=parts[1])
    assert saved["counter"] == 2 and saved["next_part_numbers"] == {"O1001": 3}
    restarted = PartTracker("m1", {"O1001": program()}, TrackingConfig(grace_s=1), context=saved)
    # the source resumes from before part 1 (its position was saved before the placeholders)
    again = run(restarted, stream)
    assert [(p.part_number, p.counter) for p in again] == [(3, 3), (4, 4), (5, 5)]


class _EveryFingerprintHashed:
    """The replay check as it was before fingerprints were hashed only when needed: the reference."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.order: deque[tuple[str, datetime, Value]] = deque()
        self.present: set[tuple[str, datetime, Value]] = set()
        self.latest: dict[str, tuple[str, datetime, Value]] = {}

    def seen(self, signal: str, time: datetime, value: Value) -> bool:
        fingerprint = (signal, time, _NAN if value != value else value)  # every NaN is one value
        if fingerprint in self.present or self.latest.get(signal) == fingerprint:
            return True
        self.latest[signal] = fingerprint
        self.present.add(fingerprint)
        self.order.append(fingerprint)
        if len(self.order) > self.size:
            self.present.discard(self.order.popleft())
        return False


_NAN = float("nan")  # one object, and st.builds(float, "nan") a new one each time (as a JSON replay parses)
_PLUS_ONE = timezone(timedelta(hours=1))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(
        st.tuples(
            st.sampled_from(["spindle.load", "execution", "probe.hole1_x"]),
            st.integers(0, 12),
            st.booleans(),
            st.one_of(st.sampled_from([1.0, 2.0, 2, "ACTIVE", None, _NAN]), st.builds(float, st.just("nan"))),
        ),
        max_size=60,
    ),
)
def test_replay_check_answers_as_one_that_hashes_every_fingerprint(size: int, steps: list[tuple[str, int, bool, Value]]) -> None:
    """Observations in and out of time order, repeats near and beyond the window, UNAVAILABLE (which
    may carry an older clock), the same instant written in another time zone: every answer and what
    is held are those of the plain check (which hashed each fingerprint as it came)."""
    fast, plain = _RecentObservations(size), _EveryFingerprintHashed(size)
    for signal, second, other_zone, value in steps:
        time = T0 + timedelta(seconds=second)
        if other_zone:
            time = time.astimezone(_PLUS_ONE)
        assert fast.seen(signal, time, value) == plain.seen(signal, time, value)
        assert len(fast) == len(plain.order)


def test_a_stuck_probe_is_logged_once_an_hour_and_noted_on_every_part(caplog: pytest.LogCaptureFixture) -> None:
    """A macro that writes NaN into hole1_x on every part (a part a minute, for two hours): every part
    says so and the counter has them all, but the log says it once, then once an hour with how many
    came meanwhile; another signal is logged on its own."""
    probe: dict[str, Value] = {"probe.hole1_dia": 10.001, "probe.hole1_x": float("nan"), "probe.hole1_y": 39.999}
    stream = start()
    for n in range(1, 121):
        stream += cycle(60.0 * (n - 1), n, probe=probe)
    stream += cycle(60.0 * 120, 121, probe={**probe, "probe.hole1_y": "ERR"})
    with caplog.at_level("WARNING", logger="monitor.tracking"):
        tracker = make(grace_s=2)
        parts = run(tracker, stream)
    assert len(parts) == 121 and tracker.counts["non_numeric_probe_values"] == 122
    assert all(p.status is PartStatus.INCOMPLETE and "probe.hole1_x" in p.missing for p in parts)
    assert all(sum("not a measurement; no value" in n for n in p.notes) == (2 if p.counter == 121 else 1) for p in parts)
    lines = [r.getMessage() for r in caplog.records if r.name == "monitor.tracking"]
    assert len(lines) == 4, lines
    assert lines[0].startswith("m1: probe.hole1_x wrote NaN at 2026-03-02T06:00:05.100000+00:00: not a measurement")
    assert lines[1].startswith("m1: probe.hole1_x wrote NaN at 2026-03-02T07:00:05.100000+00:00") and "59 more since" in lines[1]
    assert lines[2].startswith("m1: probe.hole1_x wrote NaN at 2026-03-02T08:00:05.100000+00:00") and "59 more since" in lines[2]
    assert lines[3].startswith("m1: probe.hole1_y wrote 'ERR' at ") and "more since" not in lines[3]


def test_a_nan_sent_again_is_a_replay_like_any_value() -> None:
    """A JSON replay (or a republishing server) parses a NaN it sends again into a new float object:
    unequal to the first and hashed by identity. It is still the same observation: dropped as a
    duplicate, counted and noted once."""
    stream = start() + cycle(0, 1, probe={"probe.hole1_dia": 10.001, "probe.hole1_x": float("nan"), "probe.hole1_y": 39.999})
    (nan,) = [o for o in stream if o.signal == "probe.hole1_x"]
    again = json.loads(json.dumps({"v": nan.value}))["v"]
    assert again is not nan.value and again != nan.value
    stream.insert(stream.index(nan) + 2, replace(nan, value=again))
    stream += cycle(20, 2)
    tracker = make(grace_s=2)
    parts = run(tracker, stream)
    assert tracker.counts["duplicates"] == 1 and tracker.counts["non_numeric_probe_values"] == 1
    assert sum("wrote NaN" in n for n in parts[0].notes) == 1 and parts[0].status is PartStatus.INCOMPLETE


def test_a_non_numeric_probe_value_off_the_machines_clock_is_told_and_leaves_its_part_complete() -> None:
    """A macro with a broken clock writes ERR stamped in 2999 after a good value: it is placed at the
    machine's clock like any probe value and its part says so twice (the clock, the value), but the
    part keeps its measured value and stays complete: nothing it measured came from that clock."""
    c = cycle(20, 2)
    odd = Observation("m1", "probe.hole1_x", datetime(2999, 1, 1, tzinfo=UTC), "ERR")
    c.insert(c.index(next(o for o in c if o.signal == "probe.hole1_y")) + 1, odd)
    tracker = make(grace_s=1, max_skew_s=5)
    parts = run(tracker, [*start(), *cycle(0, 1), *c, *cycle(40, 3)])
    assert [(p.counter, p.status) for p in parts] == [(n, PartStatus.COMPLETE) for n in (1, 2, 3)]
    assert parts[1].measurements["probe.hole1_x"] == 25.002
    assert any("2999-01-01" in n and "machine's clock" in n for n in parts[1].notes)
    # placed at the machine's clock (the last controller value), which is before the probing
    assert any("wrote 'ERR'" in n and "the value after it kept" in n for n in parts[1].notes)
    assert not any("2999" in n for p in (parts[0], parts[2]) for n in p.notes)
    assert tracker.counts["probe_values_off_clock"] == 1 and tracker.counts["non_numeric_probe_values"] == 1


def test_a_window_that_held_only_a_non_numeric_probe_value_is_kept() -> None:
    """No execution state: the window between part ends is a part; one cut short by a program change
    is dropped when it held nothing, but not when it held a result that was garbage: it is recorded,
    aborted, with its note (the only place that value is told)."""
    tracker = make(grace_s=2)
    stream = [obs(0, "program.name", "O1001"), obs(0, "part.count", 0), obs(10, "probe.hole1_x", float("inf"))]
    stream += [obs(12, "program.name", "O2002"), obs(30, "part.count", 1)]
    parts = run(tracker, stream)
    (aborted,) = [p for p in parts if p.status is PartStatus.ABORTED]
    assert aborted.program == "O1001" and aborted.measurements == {}
    assert "probe.hole1_x wrote infinity at 2026-03-02T06:00:10+00:00: not a measurement; no value" in aborted.notes
    assert tracker.counts["empty_windows"] == 0
