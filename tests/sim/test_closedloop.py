"""The simulated machine obeys its registers: parts cut after a register changes move by its effect."""

from __future__ import annotations

import pytest

from monitor.sim import SimCell, load_programs, load_scenario
from monitor.sim.cell import SimEvent
from monitor.sim.closedloop import ClosedLoop, Effect, effects_for
from monitor.sim.opcua_server import OpcUaSimServer, default_registers, shapes_for
from monitor.sim.runner import run_cell

DWEAR = "ToolOffsets.T12.DiameterWear"


async def test_a_register_change_moves_the_parts_cut_after_it() -> None:
    cell = SimCell(load_scenario("tool_wear"), seed=1, parts=60)
    [shape] = shapes_for(cell.machines)
    assert DWEAR in shape.registers and shape.registers == default_registers([1, 5, 12])
    effects = {"vmc-01": [Effect(DWEAR, "probe.hole1_dia", -1.0), Effect(DWEAR, "probe.hole2_dia", -1.0)]}
    seen: dict[tuple[int, str], float] = {}
    async with OpcUaSimServer([shape]) as srv:
        loop = ClosedLoop(srv, effects)
        count = 0

        async def publish(event: SimEvent) -> None:
            nonlocal count
            await loop.publish(event)
            if event.signal.startswith("probe.hole") and event.signal.endswith("_dia") and event.value is not None:
                seen[(count + 1, event.signal)] = float(srv.read_signal(event.machine, event.signal))
            if event.signal == "part.count" and isinstance(event.value, float) and event.value >= 1:
                count = int(event.value)
                if count == 30:  # between parts 30 and 31: what the monitor's write does
                    await srv.set_register("vmc-01", DWEAR, -0.006)

        await run_cell(cell, publish, speed=0, include_spindle_samples=False)
    parts = {p.part: p for p in cell.parts()}
    for (n, signal), value in seen.items():
        expected = parts[n].measured[signal]
        assert expected is not None
        moved = 0.006 if n > 30 else 0.0
        assert value == pytest.approx(expected + moved, abs=1e-9), (n, signal)
        assert loop.shift(parts[n], signal) == pytest.approx(moved)
    assert len(seen) == 120
    assert loop.out_of_tolerance(cell) < ClosedLoop.out_of_tolerance_without(cell)


def test_effects_follow_the_registers_the_program_files_name() -> None:
    programs = load_programs()
    effects = {(e.register, e.signal): e.gain for e in effects_for({"O1001": programs["O1001"]}, "mill")}
    # G54 X moves both holes' X by the change (factor -1); T12's D-wear shrinks both bores by it (factor +1)
    assert effects[("Offsets.G54.X", "probe.hole1_x")] == 1.0 and effects[("Offsets.G54.X", "probe.hole2_x")] == 1.0
    assert effects[(DWEAR, "probe.hole1_dia")] == -1.0 and effects[(DWEAR, "probe.hole2_dia")] == -1.0
    o2002 = {(e.register, e.signal): e.gain for e in effects_for({"O2002": programs["O2002"]}, "mill")}
    assert o2002 == {
        ("ToolOffsets.T7.DiameterWear", "probe.bore_dia"): -1.0,
        ("ToolOffsets.T3.LengthWear", "probe.face_len"): 1.0,
    }
