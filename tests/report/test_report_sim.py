"""The report on a store filled by the simulated cell through the real tracker and drift engine."""

from __future__ import annotations

import shutil
from pathlib import Path

from monitor.config import load_site
from monitor.pipeline import Pipeline
from monitor.report import render_csv, write_report
from monitor.sim import PROGRAMS_DIR, SimCell, load_scenario
from monitor.store import SqliteStore


def test_report_of_a_simulated_tool_wear_batch(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    for f in Path(PROGRAMS_DIR).glob("*.yaml"):
        shutil.copy(f, tmp_path / "programs" / f.name)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "site.yaml").write_text(
        "site: sim-cell\nstore: {path: monitor.db}\nprograms: programs\n"
        "machines:\n  - id: vmc-01\n    source: {type: replay, path: empty.jsonl}\n"
    )
    site = load_site(tmp_path / "site.yaml")
    cell = SimCell(load_scenario("tool_wear"), seed=3)
    with SqliteStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        events = [e.observation() for e in cell.events(include_spindle_samples=False)]
        for i in range(0, len(events), 500):
            pipeline.observe(events[i : i + 500])
        pipeline.close()
        stored_alerts = store.alerts(program="O1001")
        parts = store.parts(program="O1001")

    with SqliteStore(site.store_path) as store:
        report = write_report(site, store, "O1001", tmp_path / "r.html", csv_out=tmp_path / "r.csv")
    assert len(report.parts) == len(parts) == 100
    truth = {g.feature: g for g in cell.ground_truth() if g.program == "O1001"}
    for feature in report.features:
        assert len(feature.values) == 100
        breaks = truth[feature.name].first_out_of_tolerance
        if breaks is None:
            assert feature.out_of_tolerance == [], feature.name
        else:  # the measured batch leaves tolerance near where the true process does
            first = feature.out_of_tolerance[0].part_number
            assert breaks - 15 <= first <= breaks, (feature.name, first, breaks)
            cap = feature.capability
            assert cap is not None and cap.sigma_overall is not None and cap.sigma_within is not None
            assert cap.sigma_overall > 2 * cap.sigma_within  # the drift inflates the overall sigma (Ppk), not the within
            assert cap.cpk is not None and cap.cpk.hi < 1.0  # and the batch is plainly not capable
    assert {o.alert.id for o in report.alerts} == {a.id for a in stored_alerts}
    drifting = [o for o in report.alerts if o.alert.condition is not None and o.alert.feature.endswith("dia")]
    assert drifting and all(o.offset_register and "T12 D-wear" in o.offset_register and o.offset_change_mm for o in drifting)
    worn = {t.tool: t for t in report.tools}["12"]  # the boring head T12 that wears in this scenario
    assert worn.parts == 100 and worn.life_last is not None and worn.life_first is not None
    assert worn.life_last > worn.life_first
    assert (tmp_path / "r.csv").read_text() == render_csv(report)
