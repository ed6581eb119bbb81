"""The pipeline (tracker -> engine -> store) without asyncio: faults in one stage never lose a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import load_site
from monitor.engine import DriftEngine, PartAssessment
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL, Observation, PartRecord
from monitor.pipeline import Pipeline
from monitor.store import SqliteStore
from tests.streams import batch, obs, write_jsonl, write_site


class _BrokenEngine(DriftEngine):
    def assess(self, part: PartRecord) -> PartAssessment:
        raise ValueError("singular matrix")


def test_a_detection_fault_is_counted_and_the_part_still_stored(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", [])))
    with SqliteStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        pipeline.engine = _BrokenEngine(site.programs)
        outcome = pipeline.observe(batch(3))
        outcome.parts += pipeline.close().parts
        assert len(store.parts()) == 3
        assert pipeline.counts["detection_error:ValueError"] == 3
        assert outcome.alerts == []


def test_a_status_change_is_published_with_the_observation_that_made_it(tmp_path: Path) -> None:
    """Outputs (dashboard, SSE) hear of a machine's status when what it shows changes (program,
    counter), stamped with the observation that changed it; load samples alone publish nothing."""
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", [])))

    def loads(t0: float) -> list[Observation]:
        return [obs(t0 + i * 0.01, "spindle.load", 40.0 + i) for i in range(5)]

    with SqliteStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        named, counted = obs(-10, "program.name", "O1001"), obs(-8, "part.count", 7)
        first = pipeline.observe([*loads(-20), named, *loads(-9), counted, *loads(-7.9)])
        assert first.machines["m1"]["program"] == "O1001"
        assert first.machines["m1"]["counter"] == 7
        assert first.machines["m1"]["last_seen"] == counted.time.isoformat()
        quiet = pipeline.observe(loads(-7.8))
        assert quiet.machines == {}
        assert pipeline.status["m1"].last_seen == loads(-7.8)[-1].time.isoformat()
        renamed = pipeline.observe([*loads(-7.7), obs(-7.6, "program.name", "O2002"), *loads(-7.5)])
        assert (renamed.machines["m1"]["program"], renamed.machines["m1"]["counter"]) == ("O2002", 7)
        assert renamed.machines["m1"]["last_seen"] == obs(-7.6, "program.name", "O2002").time.isoformat()
        recounted = pipeline.observe([*loads(-7.4), obs(-7.3, "part.count", 8), *loads(-7.2)])
        assert (recounted.machines["m1"]["program"], recounted.machines["m1"]["counter"]) == ("O2002", 8)
        assert recounted.machines["m1"]["last_seen"] == obs(-7.3, "part.count", 8).time.isoformat()
        lost = pipeline.observe([obs(-7.1, CONNECTION_SIGNAL, "lost"), obs(-7.0, GAP_SIGNAL, "agent restarted")])
        assert lost.machines["m1"]["connection"] == "lost"
        assert pipeline.status["m1"].gaps == 1
        pipeline.close()


def test_observations_of_unknown_machines_are_counted(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", [])))
    with SqliteStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        pipeline.observe(batch(2, machine="ghost"))
        assert pipeline.counts["unknown_machine"] > 0
        assert store.parts() == []


@pytest.mark.parametrize("parts", [1, 5])
def test_parts_resume_numbering_from_the_store(tmp_path: Path, parts: int) -> None:
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", [])))
    with SqliteStore(site.store_path) as store:
        first = Pipeline(site, store)
        first.observe(batch(parts))
        first.close()
        second = Pipeline(site, store)  # a restarted daemon
        second.observe(batch(2, start_count=parts, t0=1000.0))
        second.close()
        assert [p.part_number for p in store.parts()] == list(range(1, parts + 3))


def test_engine_state_kept_per_machine_resumes_exactly() -> None:
    """The daemon stores each machine's share of the engine state with that machine's parts; joined
    again after a restart, the shares give the same alerts as an engine that never stopped."""
    from monitor.model import PartStatus
    from monitor.sim import SimCell, load_scenario

    cell = SimCell(load_scenario("demo"), seed=4, parts=70)
    records = [
        PartRecord(f"{p.machine}/{p.part}", p.machine, p.program, p.part, p.start, p.end, PartStatus.COMPLETE,
                   {k: v for k, v in p.measured.items() if v is not None})
        for p in cell.parts()
    ]  # fmt: skip
    running = DriftEngine(cell.programs())
    for record in records[:80]:
        running.process(record)
    shares = [running.state(m.id) for m in cell.machines]
    assert all({w["machine"] for w in share["watches"]} == {m.id} for share, m in zip(shares, cell.machines, strict=True))
    restarted = DriftEngine.from_states(cell.programs(), shares)
    later = records[80:]
    expected = [running.process(r) for r in later]
    assert any(expected)  # the drifting demo batch raises alerts after the restart point
    assert [restarted.process(r) for r in later] == expected
