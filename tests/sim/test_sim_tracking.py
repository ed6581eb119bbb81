"""The event stream is consumable: the product's PartTracker rebuilds the simulated parts from it."""

from __future__ import annotations

import pytest

from monitor.model import PartRecord, PartStatus
from monitor.sim import SimCell, load_scenario
from monitor.tracking import PartTracker


def _track(cell: SimCell) -> list[PartRecord]:
    trackers = {m.id: PartTracker(m.id, cell.programs()) for m in cell.machines}
    records: list[PartRecord] = []
    for event in cell.events():
        records += trackers[event.machine].update(event.observation())
    for tracker in trackers.values():
        records += tracker.close()
    return records


@pytest.mark.parametrize("name", ["demo", "late_probe", "dropouts", "restart", "two_programs"])
def test_tracker_rebuilds_every_part_with_its_measurements(name: str) -> None:
    cell = SimCell(load_scenario(name), seed=2, parts=40)
    records = _track(cell)
    sim = {(p.machine, p.program, p.part): p for p in cell.parts()}
    assert len(records) == len(sim)
    for record in records:
        part = sim[(record.machine, record.program, record.part_number)]
        complete = all(v is not None for v in part.measured.values())
        assert record.status == (PartStatus.COMPLETE if complete else PartStatus.INCOMPLETE), record
        assert record.measurements == {k: v for k, v in part.measured.items() if v is not None}
        assert record.end == part.end


def test_aborted_attempts_become_aborted_records() -> None:
    cell = SimCell(load_scenario("aborted"), seed=2, parts=20)
    records = _track(cell)
    assert [r.status for r in records].count(PartStatus.ABORTED) == 1
    assert [r.status for r in records].count(PartStatus.COMPLETE) == 20
