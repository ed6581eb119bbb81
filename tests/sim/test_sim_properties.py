"""Invariants of the event stream over randomly drawn scenario knobs (hypothesis)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.sim import Scenario, SimCell

_machine = st.fixed_dictionaries(
    {
        "programs": st.sampled_from([["O1001"], ["O2002"], [{"program": "O1001", "parts": 4}, "O2002"]]),
        "cycle_s": st.floats(30, 200),
        "idle_s": st.floats(5, 120),
        "thermal": st.fixed_dictionaries({"initial": st.floats(0, 1), "x_um": st.floats(-20, 20)}),
        "noise": st.fixed_dictionaries({"probe_um": st.floats(0, 5)}),
        "dropouts": st.fixed_dictionaries({"probability": st.floats(0, 0.5)}),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machines=st.lists(_machine, min_size=1, max_size=3), parts=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_stream_invariants(machines: list[dict[str, Any]], parts: int, seed: int) -> None:
    for i, m in enumerate(machines):
        m["id"] = f"m{i}"
        m["idle_jitter_s"] = m["idle_s"] / 4
    scenario = Scenario.model_validate({"parts": parts, "late_probe_s": 0.5, "machines": machines})
    cell = SimCell(scenario, seed=seed)
    events = list(cell.events(include_spindle_samples=False))
    assert all(a.time <= b.time for a, b in itertools.pairwise(events))
    for machine in cell.machines:
        counts = [e.value for e in events if e.machine == machine.id and e.signal == "part.count"]
        assert counts == [float(n) for n in range(len(counts))]
        assert len(counts) - 1 == sum(1 for p in cell.parts() if p.machine == machine.id)
        for program in machine.programs:
            numbers = [p.part for p in cell.measurements(program, machine.id)]
            assert numbers == list(range(1, len(numbers) + 1))
    probes = [e for e in events if e.signal.startswith("probe.")]
    assert len(probes) == sum(len(p.measured) for p in cell.parts())
