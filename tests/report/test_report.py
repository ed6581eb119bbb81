"""The batch report: numbers from the store, CSV, CLI, escaping, and rendering in a real offline chromium."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import load_site
from monitor.detect.capability import capability
from monitor.model import PartStatus
from monitor.report import BatchReport, build_report, render_csv, render_html, write_report
from monitor.store import SqliteStore
from tests.browser import launched_chromium
from tests.report.conftest import HOSTILE, PROGRAM, Batch, write_batch

GENERATED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _report(batch: Batch, **kw: Any) -> BatchReport:
    site = load_site(batch.site_file)
    with SqliteStore(site.store_path) as store:
        return build_report(store, site.programs[PROGRAM], site="cell-3", generated=GENERATED, **kw)


def _write(site_file: Path, program: str, out: Path) -> BatchReport:
    site = load_site(site_file)
    with SqliteStore(site.store_path) as store:
        return write_report(site, store, program, out, generated=GENERATED)


def test_numbers_come_from_the_store(batch: Batch) -> None:
    report = _report(batch)
    complete = [p for p in batch.parts if p.status is PartStatus.COMPLETE]
    assert len(report.parts) == 30 and len(report.complete_parts) == 29
    assert report.status_counts() == {"complete": 29, "incomplete": 0, "aborted": 1, "not_observed": 0}

    pos, dia = report.features
    assert (pos.name, pos.kind, dia.name, dia.kind) == ("hole1_pos", "position", "bore_dia", "size")
    # Out of tolerance, recomputed by brute force from the raw probe values.
    tp = {
        p.part_number: 2 * math.hypot(p.measurements["probe.hole1_x"] - 25.0, p.measurements["probe.hole1_y"] - 40.0)
        for p in complete
    }
    assert [v.part_number for v in pos.out_of_tolerance] == sorted(n for n, t in tp.items() if t > 0.050)
    assert len(pos.out_of_tolerance) >= 5  # the drift really leaves the zone
    assert [v.part_number for v in dia.out_of_tolerance] == [5]
    assert dia.missing_parts == (8,) and len(dia.values) == 28
    # Capability is the detection package's, on the same values in part order.
    values = [p.measurements["probe.bore_dia"] for p in complete if "probe.bore_dia" in p.measurements]
    expected = capability(values, 10.000, 10.015)
    assert dia.capability is not None and expected.cpk is not None and dia.capability.cpk is not None
    assert dia.capability.cpk.value == pytest.approx(expected.cpk.value)
    assert dia.capability.cp is not None and dia.capability.cp.lo < dia.capability.cp.value < dia.capability.cp.hi
    assert pos.capability is not None and pos.capability.cp is None and pos.capability.ppk is not None  # one-sided

    outcomes = {o.alert.feature: o for o in report.alerts}
    forecast = outcomes["hole1_pos"]
    assert forecast.raised_part == 14 and forecast.alert.part_number == 18
    assert forecast.acknowledged_at == batch.alerts[2].time and forecast.closed_at is None
    assert (forecast.offset_register, forecast.offset_change_mm) == ("X wear offset", -0.0204)  # latest suggestion
    # what was done: the action record, with who and when (not "acknowledged" alone)
    done = forecast.action()
    assert [a.id for a in forecast.actions] == ["a-1", "a-2"]
    assert done.startswith("2026-03-02") and "olga (operator): acknowledge: re-probed part 16: it is real" in done
    assert "eric (engineer): offset applied: G54 X -0.0204 mm" in done and "acknowledged 2026" not in done
    assert outcomes["bore_dia"].action() == "still open, nothing recorded"
    assert [o.alert.id for o in report.alerts if o.alert.feature == "connection"] == ["vmc-01/-/connection/signal_lost/9@9"]
    assert outcomes["connection"].closed_at is not None

    tools = {t.tool: t for t in report.tools}
    assert set(tools) == {"T12", "T3"} and tools["T12"].parts == 29
    assert (tools["T12"].life_first, tools["T12"].life_last) == (102.0, 161.0)


def test_part_range_and_machine_filter(batch: Batch) -> None:
    report = _report(batch, first_part=1, last_part=10)
    assert [p.part_number for p in report.parts] == list(range(1, 11))
    assert [o.alert.feature for o in report.alerts] == ["bore_dia", "connection"]  # the forecast was raised at part 14
    from monitor.errors import MonitorError

    with pytest.raises(MonitorError, match="no parts of program O1234 on lathe-9"):
        _report(batch, machine="lathe-9")


def test_csv_is_the_measurement_table(batch: Batch) -> None:
    report = _report(batch)
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert len(rows) == 30
    row5 = next(r for r in rows if r["part"] == "5")
    assert row5["bore_dia"] == "10.017" and row5["bore_dia_ok"] == "no" and row5["probe.bore_dia"] == "10.017"
    row8 = next(r for r in rows if r["part"] == "8")
    assert row8["bore_dia"] == "" and row8["hole1_pos_ok"] == "yes"
    assert float(rows[0]["hole1_pos_dx"]) == pytest.approx(batch.parts[0].measurements["probe.hole1_x"] - 25.0, abs=1e-6)


def test_cli_writes_html_and_csv(batch: Batch, tmp_path: Path) -> None:
    out, table = tmp_path / "out" / "batch.html", tmp_path / "out" / "batch.csv"
    result = CliRunner().invoke(
        app,
        [
            "report",
            "-c",
            str(batch.site_file),
            "--program",
            PROGRAM,
            "--from",
            "3",
            "--to",
            "20",
            "--out",
            str(out),
            "--csv",
            str(table),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["parts"] == 18 and summary["html"] == str(out)
    assert [f["feature"] for f in summary["features"]] == ["hole1_pos", "bore_dia"]
    assert summary["features"][1]["out_of_tolerance"] == [5] and summary["features"][1]["cpk_ci"] is not None
    assert len(table.read_text().splitlines()) == 19
    text = out.read_text()
    assert "<script src" not in text and "<link" not in text and "Plotly.newPlot" in text  # nothing fetched
    # the bad part says so in red in the parts table; what was done names who did it
    assert "<td class=bad>complete, out of tolerance: bore_dia</td>" in text
    assert text.count("out of tolerance: ") == 1
    assert "olga (operator): acknowledge: re-probed part 16: it is real" in text
    assert "eric (engineer): offset applied: G54 X -0.0204 mm" in text

    missing = CliRunner().invoke(app, ["report", "-c", str(batch.site_file), "--program", "O404", "--out", str(out)])
    assert missing.exit_code == 1 and "O404" in missing.output and PROGRAM in missing.output


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    hostile = write_batch(tmp_path, program=HOSTILE, n=20)
    report_path = tmp_path / "r.html"
    report = _write(hostile.site_file, HOSTILE, report_path)
    text = report_path.read_text()
    assert report.program == HOSTILE
    assert "<script>alert(1)" not in text
    assert "O9&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("</script>") == 2  # plotly.js and our one plotting script, nothing injected
    assert render_html(report) == text  # the file is exactly the rendering: deterministic for a given time
    first_row = next(csv.DictReader(io.StringIO(render_csv(report))))
    assert first_row["program"] == HOSTILE  # a CSV field, quoted by the csv module; no leading formula character


@pytest.mark.timeout(90)
async def test_report_renders_every_chart_in_offline_chromium(tmp_path: Path) -> None:
    from playwright.async_api import Route

    hostile = write_batch(tmp_path, program=HOSTILE, n=25)
    out = tmp_path / "batch report.html"
    report = _write(hostile.site_file, HOSTILE, out)
    blocked: list[str] = []
    dialogs: list[str] = []
    errors: list[str] = []

    async def refuse(route: Route) -> None:
        blocked.append(route.request.url)
        await route.abort()

    async with launched_chromium() as browser:
        page = await browser.new_page()
        await page.route(lambda url: not url.startswith("file:"), refuse)
        page.on("dialog", lambda d: dialogs.append(d.message))
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(out.as_uri())
        charts = page.locator("div.run-chart")  # one per feature and source with values: the probe's here
        assert await charts.count() == len(report.features) == 2
        for i in range(2):
            chart = charts.nth(i)
            await chart.locator("svg.main-svg").first.wait_for(timeout=20_000)
            feature = report.features[i]
            points = await chart.locator(".scatterlayer .trace").first.locator("path.point").count()
            assert points == len(feature.values)
        assert await page.locator("div.histogram").count() == 2  # beside each run chart
        axes = page.locator("div.axes-chart")  # one per position feature: dx and dy by part
        assert await axes.count() == 1
        await axes.first.locator("svg.main-svg").first.wait_for(timeout=20_000)
        assert await axes.first.locator(".scatterlayer .trace").count() == 2
        heading = await page.locator("h1").inner_text()
    assert HOSTILE in heading  # shown as text, not run
    assert blocked == [] and dialogs == [] and errors == []


def test_parts_not_observed_are_listed_with_why_and_when(batch: Batch) -> None:
    from datetime import timedelta

    from monitor.model import PartRecord

    site = load_site(batch.site_file)
    last = batch.parts[-1]
    note = "not observed: connection to opc.tcp://cnc:4840 lost (stale); made between A and B (source clock)"
    with SqliteStore(site.store_path) as store:
        for n in (1, 2):
            end = last.end + timedelta(minutes=3)
            gap = PartRecord(
                f"{last.machine}/{PROGRAM}/not-observed/{(last.counter or 0) + n}", last.machine, PROGRAM,
                last.part_number + n, last.end, end, PartStatus.NOT_OBSERVED, counter=(last.counter or 0) + n, notes=(note,),
            )  # fmt: skip
            store.record_part(gap, [], [])
    report = _report(batch)
    assert report.status_counts()["not_observed"] == 2 and len(report.complete_parts) == 29
    (run, why) = report.not_observed()[0]
    assert [p.part_number for p in run] == [last.part_number + 1, last.part_number + 2] and why == note
    html = render_html(report)
    assert "2 parts not observed" in html and "Parts not observed" in html
    assert f"{last.part_number + 1}–{last.part_number + 2}" in html and "connection to opc.tcp://cnc:4840 lost" in html
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [r["status"] for r in rows].count("not_observed") == 2


def test_a_disposition_recorded_by_part_number_only_goes_to_that_part_and_none_is_said_honestly(batch: Batch) -> None:
    """Actions stored before dispositions carried the part's key name it by number: the report puts
    them on the part of that number that ended last before the action; an out-of-tolerance part
    without any record says so, and a process action without a part disposition is not called one."""
    from datetime import timedelta

    from monitor.model import Action, ActionKind, Register, RegisterKind, Role

    site = load_site(batch.site_file)
    oot = batch.alerts[0]
    bore5 = batch.parts[4]
    with SqliteStore(site.store_path) as store:
        for i, (kind, feature, part) in enumerate(
            [(ActionKind.PART_SCRAPPED, "", 5), (ActionKind.OFFSET_APPLIED, "bore_dia", 6), (ActionKind.PART_REWORKED, "", 7)]
        ):
            store.record_action(
                Action(
                    id=f"d-{i}",
                    time=bore5.end + timedelta(minutes=5 + i),
                    kind=kind,
                    machine="vmc-01",
                    program=PROGRAM,
                    feature=feature,
                    user="eric",
                    role=Role.ENGINEER,
                    condition_id=oot.id if kind is ActionKind.OFFSET_APPLIED else None,
                    part_number=part,
                    register=Register(RegisterKind.TOOL_DIAMETER_WEAR, "value", 1.0, tool="T12")
                    if kind is ActionKind.OFFSET_APPLIED
                    else None,
                    change=-0.002 if kind is ActionKind.OFFSET_APPLIED else None,
                    reason="NCR-9" if kind is ActionKind.PART_SCRAPPED else "",
                )
            )
    report = _report(batch)
    assert [a.id for a in report.part_actions[bore5.key]] == ["d-0"]
    assert [a.id for a in report.part_actions[batch.parts[6].key]] == ["d-2"]  # in tolerance, but reworked: kept
    five = report.disposition("bore_dia", "probe", bore5.key)
    assert five.condition is not None and five.condition.alert.id == oot.id
    assert five.text().startswith("part scrapped: part 5; NCR-9 (eric, ")
    assert "; process: offset applied: T12 D-wear -0.002 mm (eric, " in five.text() and "after part 6)" in five.text()
    bad_tp = next(f for f in report.features if f.name == "hole1_pos").out_of_tolerance
    assert bad_tp and report.disposition("hole1_pos", "probe", bad_tp[0].part_key).text() == "no disposition recorded"
    rows = {int(r["part"]): r for r in csv.DictReader(io.StringIO(render_csv(report)))}
    assert rows[5]["disposition"].startswith("part scrapped") and "offset applied" in rows[5]["process_actions"]
    assert rows[7]["disposition"].startswith("part reworked") and rows[7]["process_actions"] == ""
    assert rows[bad_tp[0].part_number]["disposition"] == "no disposition recorded"
    # every action of the batch, in time order: those recorded while it ran and those on its parts since
    assert [a.id for a in report.actions] == ["d-0", "d-1", "d-2", "a-1", "a-2"]
