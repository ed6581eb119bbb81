"""The event stream: determinism, ordering, signal protocol, pacing and the CSV export."""

from __future__ import annotations

import asyncio
import csv
import itertools
import time
from datetime import UTC, datetime
from pathlib import Path

from monitor.sim import SimCell, SimEvent, load_scenario, run_cell, write_csv


def _cell(name: str, seed: int = 0, parts: int | None = None) -> SimCell:
    return SimCell(load_scenario(name), seed=seed, parts=parts)


def test_same_seed_same_events_other_seed_differs() -> None:
    a = list(_cell("demo", 11, parts=20).events())
    b = list(_cell("demo", 11, parts=20).events())
    c = list(_cell("demo", 12, parts=20).events())
    assert a == b
    assert a != c
    for machine in ("vmc-01", "vmc-02"):
        assert [e.signal for e in a if e.machine == machine and e.signal.startswith("probe.")] == [
            e.signal for e in c if e.machine == machine and e.signal.startswith("probe.")
        ], "the seed changes values and idle times, not the protocol"


def test_times_are_aware_utc_non_decreasing_from_the_epoch() -> None:
    events = list(_cell("demo", 0, parts=30).events())
    assert events[0].time == datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    assert all(e.time.tzinfo is not None and e.time.utcoffset() == UTC.utcoffset(None) for e in events)
    assert all(a.time <= b.time for a, b in itertools.pairwise(events))
    assert {e.machine for e in events} == {"vmc-01", "vmc-02"}


def test_every_machine_publishes_only_its_declared_signals() -> None:
    cell = _cell("demo", 0, parts=5)
    declared = {m.id: set(m.signals) for m in cell.machines}
    seen: dict[str, set[str]] = {m.id: set() for m in cell.machines}
    for e in cell.events():
        seen[e.machine].add(e.signal)
    assert seen == declared
    assert "probe.hole1_x" in declared["vmc-01"] and "probe.bore_dia" in declared["vmc-02"]


def test_part_protocol_probes_before_count_and_count_increments_by_one() -> None:
    cell = _cell("tool_wear", 3, parts=15)
    events = [e for e in cell.events() if e.machine == "vmc-01"]
    counts = [e.value for e in events if e.signal == "part.count"]
    assert counts == [float(n) for n in range(0, 16)]
    program = cell.programs()["O1001"]
    parts = cell.measurements("O1001")
    pending: dict[str, object] = {}
    part = 0
    for e in events:
        if e.signal.startswith("probe."):
            pending[e.signal] = e.value
        elif e.signal == "part.count" and e.value:
            part += 1
            assert set(pending) == set(program.probe_signals()), "every probe lands before the counter"
            assert pending == parts[part - 1].measured
            pending = {}
    names = [e.value for e in events if e.signal == "program.name"]
    assert names == ["O1001"]
    assert {e.value for e in events if e.signal == "execution"} == {"ACTIVE", "READY"}
    life = [e.value for e in events if e.signal == "tool.life"]
    assert all(isinstance(v, float) and v >= 0 for v in life)


def test_late_probe_lands_after_the_counter_but_before_the_next_part() -> None:
    events = [e for e in _cell("late_probe", 0, parts=5).events(include_spindle_samples=False)]
    for i, e in enumerate(events):
        if e.signal == "part.count" and e.value:
            late = next(x for x in events[i:] if x.signal == "probe.hole2_dia")
            assert 1.4 <= (late.time - e.time).total_seconds() <= 1.6
            nxt = next((x for x in events[i:] if x.signal == "execution" and x.value == "ACTIVE"), None)
            assert nxt is None or nxt.time > late.time


def test_spindle_samples_and_idle_load() -> None:
    cell = _cell("tool_wear", 0, parts=3)
    full = list(cell.events())
    light = list(cell.events(include_spindle_samples=False))
    assert len(light) * 4 < len(full)
    assert [e for e in full if e.signal != "spindle.load"] == [e for e in light if e.signal != "spindle.load"]
    loads = [e for e in full if e.signal == "spindle.load"]
    gaps = {round((b.time - a.time).total_seconds(), 3) for a, b in itertools.pairwise(loads)}
    assert 0.5 in gaps
    last_load = loads[-1]
    assert last_load.value == 0.0, "the spindle rests at 0 load when idle"


def test_multi_program_machine_changes_program_and_stops_between_batches(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("machines:\n  - id: m1\n    programs: [{program: O1001, parts: 3}, {program: O2002, parts: 2}]\n")
    cell = SimCell(load_scenario(path))
    events = list(cell.events(include_spindle_samples=False))
    assert [e.value for e in events if e.signal == "program.name"] == ["O1001", "O2002"]
    assert [e.value for e in events if e.signal == "part.count"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert "STOPPED" in [e.value for e in events if e.signal == "execution"]
    assert [p.part for p in cell.measurements("O2002")] == [1, 2]


def test_full_event_stream_of_200_parts_on_two_machines_is_fast() -> None:
    t0 = time.perf_counter()
    n = sum(1 for _ in _cell("demo", 1, parts=200).events())
    elapsed = time.perf_counter() - t0
    assert n > 50_000
    assert elapsed < 3.0, f"{n} events took {elapsed:.2f} s"


async def test_run_cell_publishes_everything_in_order_sync_and_async() -> None:
    cell = _cell("demo", 2, parts=3)
    expected = list(cell.events())
    got: list[SimEvent] = []
    assert await run_cell(cell, got.append, speed=0) == len(expected)
    assert got == expected

    got_async: list[SimEvent] = []

    async def publish(event: SimEvent) -> None:
        got_async.append(event)

    await run_cell(cell, publish, speed=0, include_spindle_samples=False)
    assert got_async == list(cell.events(include_spindle_samples=False))


async def test_run_cell_paces_by_speed_and_stops_on_request() -> None:
    cell = _cell("tool_wear", 0, parts=1)
    span = (cell.end - cell.start).total_seconds()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await run_cell(cell, lambda e: None, speed=span / 0.3, include_spindle_samples=False)
    elapsed = loop.time() - t0
    assert 0.2 <= elapsed < 2.0

    stop = asyncio.Event()
    seen: list[SimEvent] = []

    def publish(event: SimEvent) -> None:
        seen.append(event)
        if event.signal == "part.count" and event.value == 0.0:
            stop.set()

    many = _cell("tool_wear", 0, parts=50)
    count = await run_cell(many, publish, speed=1.0, stop=stop)
    assert count == len(seen) and seen[-1].signal == "part.count"


def test_write_csv_one_file_per_program_with_empty_dropouts(tmp_path: Path) -> None:
    cell = _cell("dropouts", 0, parts=12)
    files = write_csv(cell, tmp_path)
    assert set(files) == {"O1001"}
    with files["O1001"].open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["part", "machine", *cell.programs()["O1001"].probe_signals()]
    assert [int(r["part"]) for r in rows] == list(range(1, 13))
    assert rows[9]["probe.hole1_x"] == "" and rows[10]["probe.hole1_dia"] == ""
    first = cell.measurements("O1001")[0]
    assert float(rows[0]["probe.hole1_dia"]) == first.measured["probe.hole1_dia"]


def test_aborted_attempt_is_interrupted_without_counting_a_part() -> None:
    cell = _cell("aborted", 0, parts=20)
    events = list(cell.events(include_spindle_samples=False))
    execution = [e for e in events if e.signal == "execution"]
    interrupted = [i for i, e in enumerate(execution) if e.value == "INTERRUPTED"]
    assert len(interrupted) == 1
    i = interrupted[0]
    assert [e.value for e in execution[i - 1 : i + 3]] == ["ACTIVE", "INTERRUPTED", "READY", "ACTIVE"]
    count_before = [e.value for e in events if e.signal == "part.count" and e.time <= execution[i].time][-1]
    assert count_before == 14.0, "the counter never moves for the aborted attempt"
    assert [e.value for e in events if e.signal == "part.count"] == [float(n) for n in range(21)]
    parts = cell.measurements("O1001")
    assert [p.part for p in parts] == list(range(1, 21))
    assert parts[14].aborted_attempts == 1 and parts[14].tool_cuts["T1"] == parts[13].tool_cuts["T1"] + 2
    attempt = (execution[i - 1].time, execution[i].time)
    assert not [e for e in events if e.signal.startswith("probe.") and attempt[0] <= e.time <= attempt[1]]


def test_machines_list_their_tools() -> None:
    cell = _cell("demo", 0, parts=2)
    assert cell.machines[0].tools == (1, 5, 12, 99)
    numbers = {e.value for e in cell.events() if e.machine == "vmc-01" and e.signal == "tool.number"}
    assert numbers == {float(t) for t in cell.machines[0].tools}


async def test_stop_interrupts_a_paced_wait_promptly() -> None:
    """At real-time speed the next event is seconds away; setting stop must end the wait at once."""
    cell = _cell("tool_wear", 0, parts=50)
    first = asyncio.Event()
    seen: list[SimEvent] = []

    def publish(event: SimEvent) -> None:
        seen.append(event)
        first.set()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(run_cell(cell, publish, speed=1.0, stop=stop, include_spindle_samples=False))
    await asyncio.wait_for(first.wait(), timeout=10)
    t0 = loop.time()
    stop.set()
    count = await asyncio.wait_for(task, timeout=5)
    assert loop.time() - t0 < 1.0, "the 3 s gap to the next event was not waited out"
    assert count == len(seen) and all(e.time == cell.start for e in seen)


def test_sim_event_converts_to_an_observation() -> None:
    event = next(iter(_cell("demo", 0, parts=1).events()))
    obs = event.observation()
    assert (obs.machine, obs.signal, obs.time, obs.value) == (event.machine, event.signal, event.time, event.value)


def test_restart_makes_signals_unavailable_then_resets_the_counter() -> None:
    cell = _cell("restart", 0, parts=35)
    events = list(cell.events(include_spindle_samples=False))
    counts = [e.value for e in events if e.signal == "part.count"]
    assert counts == [float(n) for n in range(31)] + [None, 0.0] + [float(n) for n in range(1, 6)]
    down = next(i for i, e in enumerate(events) if e.value is None and e.signal == "execution")
    nones = {e.signal for e in events[down - 6 : down + 8] if e.value is None}
    assert {"program.name", "execution", "part.count", "spindle.load"} <= nones
    back = next(e for e in events[down:] if e.signal == "execution" and e.value == "READY")
    assert (back.time - events[down].time).total_seconds() == 120
    parts = cell.measurements("O1001")
    assert [p.counter for p in parts[28:33]] == [29, 30, 1, 2, 3]
    assert [p.part for p in parts] == list(range(1, 36))


def test_start_and_end_bound_every_event() -> None:
    for name in ("demo", "late_probe", "restart", "two_programs"):
        cell = _cell(name, 0, parts=6)
        events = list(cell.events(include_spindle_samples=False))
        assert events[0].time == cell.start
        assert events[-1].time <= cell.end


def test_csv_holds_every_machine_running_the_program(tmp_path: Path) -> None:
    cell = _cell("two_programs", 0, parts=4)
    files = write_csv(cell, tmp_path / "out")
    assert set(files) == {"O1001", "O2002"}
    with files["O2002"].open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["machine"], int(r["part"])) for r in rows] == [("vmc-01", n) for n in range(1, 5)] + [
        ("vmc-02", n) for n in range(1, 5)
    ]
