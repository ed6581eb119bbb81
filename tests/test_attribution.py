"""Attribution of probe results to parts: independent of the order of the ``signals:`` keys, of the
order in which a server samples and sends its items, and of milliseconds between their timestamps.

The streams here model a controller that reports no execution state and writes its part counter and
a part's probe results together once per part; its server stamps each item when it samples it, in
its own order (for the server of issue 12: the order in which the client created the monitored
items, i.e. the order of the ``signals:`` keys), 0.1-9 ms apart. tests/opcua/test_foreign_timing.py
runs the same over a real OPC UA server on TCP.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import ProgramConfig, TrackingConfig
from monitor.model import Observation, PartRecord, PartStatus
from monitor.tracking import ATTRIBUTED_BY_RULE, PART_ID_DISAGREES, PartTracker

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
PROBES = ("probe.hole1_dia", "probe.hole1_x", "probe.hole1_y")
TOGETHER = ("part.count", *PROBES)
CYCLE_S = 40.0


def program() -> ProgramConfig:
    return ProgramConfig.model_validate(
        {
            "program": "O1001",
            "features": {
                "hole1_dia": {"kind": "size", "signal": "probe.hole1_dia", "nominal": 10.0, "lower": 9.9, "upper": 10.1},
                "hole1_pos": {
                    "kind": "position",
                    "x": {"signal": "probe.hole1_x", "nominal": 25.0},
                    "y": {"signal": "probe.hole1_y", "nominal": 40.0},
                    "tolerance": 0.5,
                },
            },
        }
    )


def truth(part: int) -> dict[str, float]:
    """Distinct values per part, so a value on the wrong part is seen."""
    return {"probe.hole1_dia": 10.0 + part / 1000, "probe.hole1_x": 25.0 + part / 1000, "probe.hole1_y": 40.0 - part / 1000}


@dataclass(frozen=True)
class Server:
    """How the simulated server stamps and sends the values it writes together once per part."""

    keys: Sequence[str]
    """The client's ``signals:`` keys in file order: the server samples in this order."""
    seed: int = 0
    spacing_ms: tuple[float, float] = (0.1, 9.0)
    results_delay_s: float = 0.0
    """>0: the macro writes the results (and the part id) this long after the counter moves."""
    send_reversed: bool = False
    """Send notifications in the opposite order of the sampling (timestamps unchanged)."""
    with_part_id: bool = False
    cycle_s: float = CYCLE_S
    """Seconds from one counter increment to the next (shorter than grace_s: the case of issue 12)."""


def stream(server: Server, parts: int = 5) -> list[Observation]:
    rng = random.Random(server.seed)
    out = [Observation("m1", "program.name", T0, "O1001"), Observation("m1", "part.count", T0, 0.0)]
    sampled = [k for k in server.keys if k in TOGETHER or k == "part.id"]
    for n in range(1, parts + 1):
        start = T0 + timedelta(seconds=(n - 1) * server.cycle_s)
        scale = server.cycle_s / CYCLE_S
        out += [Observation("m1", "spindle.load", start + timedelta(seconds=s * scale), 30.0 + n + s) for s in range(2, 30, 4)]
        out.append(Observation("m1", "spindle.load", start + timedelta(seconds=31 * scale), 0.0))
        end = start + timedelta(seconds=server.cycle_s - 2 * scale)
        written: dict[str, tuple[datetime, float]] = {"part.count": (end, float(n))}
        results_at = end + timedelta(seconds=server.results_delay_s)
        for signal, value in truth(n).items():
            written[signal] = (results_at, value)
        if server.with_part_id:
            written["part.id"] = (results_at, float(n))
        batch: list[tuple[datetime, Observation]] = []
        sampled_until: dict[datetime, datetime] = {}
        for signal in sampled:  # the server samples in its order, each item a little after the one before
            written_at, value = written[signal]
            stamp = sampled_until.get(written_at, written_at) + timedelta(milliseconds=rng.uniform(*server.spacing_ms))
            sampled_until[written_at] = stamp
            batch.append((written_at, Observation("m1", signal, stamp, value)))
        batch.sort(key=lambda b: b[0])  # what was written later is published later (stable: sampling order)
        if server.send_reversed:
            batch.reverse()
        out += [o for _, o in batch]
    return out


def track(observations: list[Observation], **tracking: object) -> tuple[list[PartRecord], PartTracker]:
    tracker = PartTracker(
        "m1",
        {"O1001": program()},
        TrackingConfig.model_validate(tracking),
        part_id_mapped=any(o.signal == "part.id" for o in observations),
    )
    parts: list[PartRecord] = []
    for obs in observations:
        parts += tracker.update(obs)
    return parts + tracker.close(), tracker


def assert_right(parts: list[PartRecord], n: int = 5) -> None:
    assert [(p.counter, p.status) for p in parts] == [(i, PartStatus.COMPLETE) for i in range(1, n + 1)], [
        (p.counter, p.status, p.notes) for p in parts
    ]
    for p in parts:
        assert p.counter is not None
        assert p.measurements == truth(p.counter), (p.counter, p.measurements)
        assert p.spindle.mean_load is not None and p.spindle.mean_load > 0, p  # the window between counts
        assert p.spindle.peak_load == 30.0 + p.counter + 26


ALL_KEYS = ("spindle.load", "program.name", *TOGETHER)


@pytest.mark.parametrize("cycle_s", [CYCLE_S, 3.0])
def test_every_ordering_of_the_signals_keys_puts_every_value_on_its_part(cycle_s: float) -> None:
    """All 720 orderings of the six keys, sent in sampling order and reversed; with a cycle shorter
    than the grace window too (the tracker before issue 12 got 360 of those 1440 right)."""
    flagged = 0
    for i, keys in enumerate(itertools.permutations(ALL_KEYS)):
        for reverse in (False, True):
            parts, tracker = track(stream(Server(keys, seed=i, send_reversed=reverse, cycle_s=cycle_s)))
            assert_right(parts)
            counter_first = keys.index("part.count") < min(keys.index(p) for p in PROBES)
            # a result stamped after the counter moved is attributed by the rule, and says so
            assert all(
                (ATTRIBUTED_BY_RULE in p.flags) == (keys.index("part.count") < max(map(keys.index, PROBES))) for p in parts
            )
            flagged += sum(ATTRIBUTED_BY_RULE in p.flags for p in parts)
            if counter_first:
                assert tracker.counts[ATTRIBUTED_BY_RULE] == 3 * 5
    assert flagged > 0


def test_with_a_part_id_every_ordering_is_attributed_by_the_id_without_flags() -> None:
    for i, keys in enumerate(itertools.permutations(("part.id", *TOGETHER))):
        parts, tracker = track(stream(Server(("spindle.load", "program.name", *keys), seed=i, with_part_id=True)))
        assert_right(parts)
        assert all(p.part_id == str(p.counter) and not p.flags for p in parts)
        assert tracker.counts["attributed_by_part_id"] == 3 * 5
        assert tracker.counts["results_without_part_id"] == 0


@settings(max_examples=150)
@given(
    keys=st.permutations(ALL_KEYS),
    seed=st.integers(0, 2**16),
    spacing=st.floats(0.0, 60.0),
    reverse=st.booleans(),
    with_id=st.booleans(),
    cycle_s=st.sampled_from([3.0, CYCLE_S]),
)
def test_any_jitter_within_jitter_s_keeps_values_on_their_part(
    keys: list[str], seed: int, spacing: float, reverse: bool, with_id: bool, cycle_s: float
) -> None:
    """Up to 4 items x 60 ms = 240 ms between the counter and a result: inside the default jitter_s."""
    order = [*keys, "part.id"] if with_id else keys
    server = Server(order, seed, (0.0, spacing), send_reversed=reverse, with_part_id=with_id, cycle_s=cycle_s)
    parts, _ = track(stream(server))
    assert_right(parts)


@pytest.mark.parametrize("with_id", [False, True])
def test_results_written_after_the_counter_moves(with_id: bool) -> None:
    """A macro that writes results 1.5 s after the counter: rule after_count; every ordering."""
    for i, keys in enumerate(itertools.permutations(TOGETHER)):
        order = [*keys, "part.id"] if with_id else list(keys)
        server = Server(order, seed=i, results_delay_s=1.5, with_part_id=with_id)
        parts, _ = track(stream(server), results="after_count")
        assert_right(parts)
        # the same stream read with the wrong rule puts values on the next part; the tracker does not
        # hide it: the last part misses its values and ids disagree with the timestamps
        wrong, _ = track(stream(server), results="before_count")
        if with_id:
            assert_right(wrong)
            assert all(PART_ID_DISAGREES in p.flags for p in wrong)
        else:
            assert wrong[-1].status is PartStatus.INCOMPLETE or wrong[0].status is PartStatus.INCOMPLETE


def test_ids_that_match_no_part_are_reported_not_guessed() -> None:
    """A macro that writes the counter before it moves (id = previous part): every part says so."""
    keys = ("spindle.load", "program.name", *TOGETHER, "part.id")
    obs = [
        Observation(o.machine, o.signal, o.time, o.value - 1 if o.signal == "part.id" and isinstance(o.value, float) else o.value)
        for o in stream(Server(keys, with_part_id=True))
    ]
    parts, tracker = track(obs)
    assert all(p.status is PartStatus.INCOMPLETE for p in parts)
    assert tracker.counts["part_id_unmatched"] >= 4
    assert any("check tracking.part_id" in n for n in parts[1].notes)


def test_label_ids_keep_a_result_set_together_and_are_recorded() -> None:
    keys = ("spindle.load", "program.name", "probe.hole1_x", "part.id", "part.count", "probe.hole1_dia", "probe.hole1_y")
    serials = {float(n): f"SN-{1000 + n}" for n in range(1, 6)}
    obs = [
        Observation(
            o.machine, o.signal, o.time, serials[o.value] if o.signal == "part.id" and isinstance(o.value, float) else o.value
        )
        for o in stream(Server(keys, with_part_id=True))
    ]
    parts, _ = track(obs, part_id="label")
    assert_right(parts)
    assert [p.part_id for p in parts] == [f"SN-{1000 + n}" for n in range(1, 6)]


def test_values_far_outside_the_jitter_window_go_to_the_next_part() -> None:
    """The rule is not a guess about late values: 2 s after the count is the next part's result."""
    obs = stream(Server(("program.name", *TOGETHER)), parts=2)
    late = Observation("m1", "probe.hole1_x", obs[-1].time + timedelta(seconds=2), 99.0)
    parts, _ = track([*obs, late, Observation("m1", "part.count", late.time + timedelta(seconds=30), 3.0)])
    assert parts[1].measurements["probe.hole1_x"] == truth(2)["probe.hole1_x"]
    assert parts[2].measurements == {"probe.hole1_x": 99.0}


def _with_value(observations: list[Observation], part: int, signal: str, value: object) -> list[Observation]:
    """``observations`` with part ``part``'s value of ``signal`` replaced by ``value`` (its timestamp kept)."""
    old = truth(part)[signal]
    return [Observation(o.machine, o.signal, o.time, value) if o.signal == signal and o.value == old else o for o in observations]  # type: ignore[arg-type]


def _nan_notes(part: PartRecord) -> list[str]:
    return [n for n in part.notes if "not a measurement" in n]


@pytest.mark.parametrize("results", ["before_count", "after_count"])
@pytest.mark.parametrize("garbage", [float("nan"), float("-inf"), "OVERFLOW", 10**400])
def test_a_non_numeric_probe_value_is_noted_on_its_own_part_in_every_order(results: str, garbage: object) -> None:
    """Part 3's hole1_x is garbage, stamped a few ms before or after the counter (every ordering of the
    server's sampling, sent in order or reversed; written with the count or 1.5 s after it): part 3,
    and only part 3, says so; it misses the value, its neighbours keep theirs; counted once."""
    delay = 1.5 if results == "after_count" else 0.0
    for i, keys in enumerate(itertools.permutations(TOGETHER)):
        for reverse in (False, True):
            server = Server(("spindle.load", "program.name", *keys), seed=i, send_reversed=reverse, results_delay_s=delay)
            parts, tracker = track(_with_value(stream(server), 3, "probe.hole1_x", garbage), results=results)
            assert [p.counter for p in parts] == [1, 2, 3, 4, 5]
            assert [bool(_nan_notes(p)) for p in parts] == [False, False, True, False, False], [p.notes for p in parts]
            (note,) = _nan_notes(parts[2])
            assert note.startswith("probe.hole1_x wrote ") and note.endswith(": not a measurement; no value"), note
            assert {"OVERFLOW": "'OVERFLOW'"}.get(str(garbage), "") in note
            assert parts[2].status is PartStatus.INCOMPLETE and parts[2].missing == ("probe.hole1_x",)
            assert parts[2].measurements == {k: v for k, v in truth(3).items() if k != "probe.hole1_x"}
            others = [p for p in parts if p.counter != 3]
            assert all(p.status is PartStatus.COMPLETE and p.measurements == truth(p.counter or 0) for p in others)
            assert tracker.counts["non_numeric_probe_values"] == 1


@pytest.mark.parametrize("after", [False, True])
def test_a_non_numeric_probe_value_never_replaces_the_parts_value(after: bool) -> None:
    """The macro writes hole1_x twice for part 3, 50 ms apart: a number and NaN (in either order). The
    number is the measurement, the part stays complete and its note says which value was kept."""
    base = stream(Server(ALL_KEYS, seed=3))
    first = next(o for o in base if o.signal == "probe.hole1_x" and o.value == truth(3)["probe.hole1_x"])
    nan = Observation("m1", "probe.hole1_x", first.time + timedelta(milliseconds=50 if after else -50), float("nan"))
    at = base.index(first)
    parts, tracker = track([*base[: at + 1], nan, *base[at + 1 :]] if after else [*base[:at], nan, *base[at:]])
    assert_right(parts)
    kept = "the value before it kept" if after else "the value after it kept"
    assert _nan_notes(parts[2]) == [f"probe.hole1_x wrote NaN at {nan.time.isoformat()}: not a measurement; {kept}"]
    assert not any(_nan_notes(p) for p in parts if p.counter != 3)
    assert tracker.counts["non_numeric_probe_values"] == 1


@pytest.mark.parametrize("nan_first", [False, True])
def test_a_non_numeric_value_next_to_an_unavailable_one_says_no_value(nan_first: bool) -> None:
    """Part 3's hole1_x: a number, then NaN and UNAVAILABLE 50 ms apart (either order). The UNAVAILABLE
    leaves the part without the value, so the NaN's note must say so (not that a value was kept)."""
    base = stream(Server(ALL_KEYS, seed=3))
    first = next(o for o in base if o.signal == "probe.hole1_x" and o.value == truth(3)["probe.hole1_x"])
    at = base.index(first)
    nan_ms, gone_ms = (50, 100) if nan_first else (100, 50)
    nan = Observation("m1", "probe.hole1_x", first.time + timedelta(milliseconds=nan_ms), float("nan"))
    gone = Observation("m1", "probe.hole1_x", first.time + timedelta(milliseconds=gone_ms), None)
    extra = [nan, gone] if nan_first else [gone, nan]
    parts, tracker = track([*base[: at + 1], *extra, *base[at + 1 :]])
    assert parts[2].status is PartStatus.INCOMPLETE and "probe.hole1_x" not in parts[2].measurements
    assert _nan_notes(parts[2]) == [f"probe.hole1_x wrote NaN at {nan.time.isoformat()}: not a measurement; no value"]
    assert tracker.counts["non_numeric_probe_values"] == 1
