"""The report a first-article / PPAP review reads: probe, CMM (QIF) and bench gauge (CSV) results of
each part, imported through the CLI, joined per feature with balloon numbers, measurement systems,
verdicts, bias, dispositions and sign-off; printed to PDF by a real chromium."""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import load_site
from monitor.model import Alert, AlertKind, AlertState, PartRecord, PartStatus, Severity
from monitor.report import build_report, render_csv
from monitor.store import SqliteStore
from tests.browser import launched_chromium
from tests.inspection.qifgen import Char, Part, qif_results

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
GENERATED = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
N = 30

PROGRAM_YAML = """\
program: O4711
features:
  bore:
    kind: size
    signal: probe.bore
    nominal: 10.0075
    lower: 10.000
    upper: 10.015
    balloon: 7
    measured_by:
      probe: {resolution: 0.001, system: "spindle probe", repeatability: {grr_percent: 12.5, ndc: 7}}
      cmm: {characteristic: DIA_H1, system: "CMM Contura", resolution: 0.0001,
            repeatability: {grr_percent: 4.8, ndc: 21, reference: MSA-2026-014}}
  hole_pos:
    kind: position
    x: {signal: probe.hole_x, nominal: 25.0}
    y: {signal: probe.hole_y, nominal: 40.0}
    tolerance: 0.05
    balloon: 8
    measured_by:
      cmm: {characteristic: TP_H1}
  seal_flat:
    kind: one_sided
    upper: 0.020
    balloon: 9
    measured_by:
      cmm: {characteristic: FLAT_1, resolution: 0.0001}
  thread:
    kind: attribute
    balloon: 10
    measured_by:
      bench: {characteristic: M6-6H, system: "thread plug gauge M6-6H"}
inspection:
  csv:
    columns: {serial: Serial, characteristic: Char, status: Status}
report:
  customer: ACME Pumps
  customer_part_number: AP-4711
  part_name: pump housing
  drawing: D-4711
  revision: C
  required_index: ppk
  required: 1.33
"""


@dataclass
class Fai:
    site: Path
    parts: list[PartRecord]
    cmm: dict[str, dict[int, float]]
    """Values in the QIF file by characteristic and part number, as written."""


def _site(tmp_path: Path) -> Fai:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "o4711.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: cell-3\nstore: {path: monitor.db}\nprograms: programs\ndashboard: {enabled: false}\ninspection: {timezone: UTC}\n",
        encoding="utf-8",
    )
    rng = random.Random(4711)
    parts: list[PartRecord] = []
    cmm: dict[str, dict[int, float]] = {"DIA_H1": {}, "TP_H1": {}, "FLAT_1": {}}
    for n in range(1, N + 1):
        end = T0 + timedelta(minutes=4 * n)
        bore = 10.0075 + rng.gauss(0, 0.0012)
        x, y = 25.0 + rng.gauss(0, 0.002), 40.0 + rng.gauss(0, 0.002)
        parts.append(
            PartRecord(
                key=f"vmc-01/O4711/{n}",
                machine="vmc-01",
                program="O4711",
                part_number=n,
                start=end - timedelta(minutes=3),
                end=end,
                status=PartStatus.COMPLETE,
                measurements={"probe.bore": bore, "probe.hole_x": x, "probe.hole_y": y},
                part_id=f"SN{n:04d}",
            )
        )
        cmm["DIA_H1"][n] = round(bore - 0.0020 + rng.gauss(0, 0.0003), 5)  # the probe reads 2 um large
        cmm["TP_H1"][n] = round(2 * ((x - 25.0) ** 2 + (y - 40.0) ** 2) ** 0.5 + abs(rng.gauss(0, 0.0005)), 5)
        cmm["FLAT_1"][n] = 0.025 if n == 17 else round(abs(rng.gauss(0.006, 0.0015)), 5)
    with SqliteStore(tmp_path / "monitor.db") as store:
        for p in parts:
            store.record_part(p)
        # part 17's flatness was flagged by the drift engine; quality scrapped the part
        flagged = Alert(
            id="vmc-01/O4711/seal_flat@cmm/out_of_tolerance/17",
            machine="vmc-01",
            program="O4711",
            feature="seal_flat",
            kind=AlertKind.OUT_OF_TOLERANCE,
            severity=Severity.CRITICAL,
            state=AlertState.OPEN,
            part_number=17,
            message="seal_flat (cmm) out of tolerance: 0.0250 mm above upper limit 0.0200",
            time=parts[16].end + timedelta(hours=1),
            evidence={"source": "cmm", "value": 0.025},
            part_key=parts[16].key,
        )
        store.record_alerts([flagged])
        closed = replace(
            flagged,
            state=AlertState.CLOSED,
            time=flagged.time + timedelta(minutes=20),
            evidence={**flagged.evidence, "close_reason": "part scrapped, NCR-112"},
        )
        store.record_alerts([closed])
    chars = [
        Char("DIA_H1", "Diameter", 10.0075, -0.0075, 0.0075, designator="7"),
        Char("TP_H1", "Position", zone=0.05, designator="8"),
        Char("FLAT_1", "Flatness", zone=0.02, designator="9"),
    ]
    qif = tmp_path / "cmm.qif"
    qif.write_bytes(
        qif_results(
            chars,
            [
                Part(
                    f"SN{n:04d}",
                    {c: cmm[c][n] for c in cmm},
                    statuses={"FLAT_1": "FAIL"} if n == 17 else {},
                    lot="L-2026-03",
                )
                for n in range(1, N + 1)
            ],
        )
    )
    bench = tmp_path / "bench.csv"
    bench.write_text(
        "Serial,Char,Status\n" + "".join(f"SN{n:04d},M6-6H,{'NOGO' if n == 23 else 'GO'}\n" for n in range(1, N + 1)),
        encoding="utf-8",
    )
    for f in (qif, bench):
        result = CliRunner().invoke(app, ["import", str(f), "-c", str(site), "--program", "O4711", "--json"])
        assert result.exit_code == 0, result.output
    return Fai(site, parts, cmm)


@pytest.fixture
def fai(tmp_path: Path) -> Fai:
    return _site(tmp_path)


def _report_json(fai: Fai, out: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["report", "-c", str(fai.site), "-p", "O4711", "-o", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_every_source_joined_per_feature_with_verdicts(fai: Fai, tmp_path: Path) -> None:
    data = _report_json(fai, tmp_path / "r.html", "--lot", "L-99")
    assert data["header"]["customer_part_number"] == "AP-4711" and data["header"]["lot"] == "L-99"
    assert data["header"]["lots"] == ["L-2026-03"]  # named by the CMM file
    f = {x["feature"]: x for x in data["features"]}
    assert [f[k]["balloon"] for k in ("bore", "hole_pos", "seal_flat", "thread")] == ["7", "8", "9", "10"]
    src = {k: {s["source"]: s for s in f[k]["sources"]} for k in f}
    assert set(src["bore"]) == {"probe", "cmm"} and set(src["hole_pos"]) == {"probe", "cmm"}
    assert set(src["seal_flat"]) == {"cmm"} and set(src["thread"]) == {"bench"}
    assert src["bore"]["cmm"]["resolution"] == 0.0001 and src["bore"]["cmm"]["repeatability"]["ndc"] == 21
    assert all(s["n"] == N for k in src for s in src[k].values())

    # the CMM's values are the file's; the bias is the probe minus the CMM on the same parts
    site = load_site(fai.site)
    with SqliteStore(site.store_path) as store:
        report = build_report(store, site.programs["O4711"], site="cell-3", generated=GENERATED)
    bore = next(x for x in report.features if x.name == "bore")
    cmm = {v.part_number: v.value for v in bore.sources[1].values}
    assert cmm == fai.cmm["DIA_H1"]
    diffs = [p.measurements["probe.bore"] - fai.cmm["DIA_H1"][p.part_number] for p in fai.parts]
    [b] = f["bore"]["bias"]
    assert b["source"] == "cmm" and b["n"] == N
    assert b["mean"] == pytest.approx(statistics.fmean(diffs)) and b["sd"] == pytest.approx(statistics.stdev(diffs))
    assert b["ci"][0] < 0.0020 < b["ci"][1] and b["r"] > 0.9

    # verdicts: a scrapped flatness part, a failed thread, the rest judged by Ppk >= 1.33
    assert src["seal_flat"]["cmm"]["out_of_tolerance"] == [17] and f["seal_flat"]["verdict"] == "not conforming"
    assert src["thread"]["bench"]["out_of_tolerance"] == [23] and f["thread"]["verdict"] == "not conforming"
    assert src["thread"]["bench"]["verdict_reason"] == "1 of 30 parts failed"
    for name in ("bore", "hole_pos"):
        for s in src[name].values():
            expected = "capable" if s["ppk"] >= 1.33 else "not capable"
            assert s["verdict"] == (expected if s["stable"] else "no verdict"), s
    assert src["hole_pos"]["cmm"]["cp"] is None and src["hole_pos"]["cmm"]["pp"] is None  # one limit: no Cp

    # the report's probe verdicts and capability are the CLI's
    out = CliRunner().invoke(app, ["parts", "-c", str(fai.site), "--capability", "--json"])
    assert out.exit_code == 0, out.output
    cli = {r["feature"]: r for r in map(json.loads, out.stdout.splitlines())}
    for name in ("bore", "hole_pos"):
        probe = src[name]["probe"]
        assert (cli[name]["verdict"], cli[name]["verdict_reason"]) == (probe["verdict"], probe["verdict_reason"])
        for k in ("cp", "cpk", "pp", "ppk", "ppk_ci", "stable"):
            assert cli[name][k] == pytest.approx(probe[k]) if isinstance(probe[k], float) else cli[name][k] == probe[k]

    # a stricter rule from the command line turns capable sources into not capable ones
    strict = _report_json(fai, tmp_path / "s.html", "--required", "50", "--index", "cpk")
    for name in ("bore", "hole_pos"):
        before = src[name]
        after = {s["source"]: s for s in next(x for x in strict["features"] if x["feature"] == name)["sources"]}
        for source, s in after.items():
            if before[source]["verdict"] == "capable":
                assert s["verdict"] == "not capable" and s["verdict_reason"].startswith("Cpk "), s
            else:
                assert s["verdict"] == before[source]["verdict"]
    assert any(s["verdict"] == "capable" for k in ("bore", "hole_pos") for s in src[k].values())  # the rule was tried

    # HTML: header, dispositions, sign-off; CSV: every source
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    for needle in (
        "ACME Pumps",
        "AP-4711",
        "D-4711 rev. C",
        "L-99",
        "Balloon 7 · bore",
        "CMM Contura",
        "GR&amp;R 4.8% of tolerance",
    ):
        assert needle in text, needle
    assert "closed" in text and "part scrapped, NCR-112" in text  # part 17's disposition
    assert "Approved by (customer)" in text and "NOT ALL FEATURES ACCEPTED" in text
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    by_part = {int(r["part"]): r for r in rows}
    assert float(by_part[5]["bore@cmm"]) == pytest.approx(fai.cmm["DIA_H1"][5])
    assert (
        by_part[17]["seal_flat@cmm_ok"] == "no" and by_part[23]["thread@bench"] == "1" and by_part[22]["thread@bench_ok"] == "yes"
    )
    assert float(by_part[5]["bore"]) == pytest.approx(fai.parts[4].measurements["probe.bore"])


def test_bad_override_is_refused(fai: Fai, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", "-c", str(fai.site), "-p", "O4711", "-o", str(tmp_path / "x.html"), "--index", "cp"]
    )
    assert result.exit_code == 1 and "--index 'cp': use ppk or cpk" in result.output


@pytest.mark.timeout(120)
async def test_the_report_prints_to_pdf_one_feature_per_page_and_no_chart_cut(fai: Fai, tmp_path: Path) -> None:
    from playwright.async_api import Route
    from pypdf import PdfReader

    out = tmp_path / "fai report.html"
    data = _report_json(fai, out)
    features = [f["feature"] for f in data["features"]]
    blocked: list[str] = []
    errors: list[str] = []

    async def refuse(route: Route) -> None:
        blocked.append(route.request.url)
        await route.abort()

    async with launched_chromium() as browser:
        page = await browser.new_page()
        await page.route(lambda url: not url.startswith("file:"), refuse)
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(out.as_uri())
        runs = page.locator("div.run-chart")
        assert await runs.count() == 6  # bore probe+cmm, hole_pos probe+cmm, seal_flat cmm, thread bench
        for i in range(await runs.count()):
            await runs.nth(i).locator("svg.main-svg").first.wait_for(timeout=20_000)
        assert await page.locator("div.histogram").count() == 5  # every measured source; none for go/no-go
        # every chart row fits the printable width, so printing never shrinks or clips one
        await page.emulate_media(media="print")
        widths = await page.eval_on_selector_all(".charts", "els => els.map(e => e.scrollWidth)")
        assert widths and max(widths) <= 703  # A4 with 12 mm margins at 96 px per inch
        pdf = await page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
    assert blocked == [] and errors == []
    # NFKC: the PDF's text has ligatures ("ﬂ" for "fl")
    pages = [unicodedata.normalize("NFKC", p.extract_text() or "") for p in PdfReader(io.BytesIO(pdf)).pages]
    starts = [next(i for i, t in enumerate(pages) if t and f"· {name}" in t.splitlines()[0]) for name in features]
    assert starts == sorted(starts) and len(set(starts)) == len(features)  # each feature starts its own page
    assert len(pages) >= len(features) + 2  # the overview before, the parts and sign-off after
    # no chart is cut: each chart's title (top) and its x-axis title (bottom) print on one page
    for name, sources in (("bore", ("probe", "cmm")), ("hole_pos", ("probe", "cmm")), ("seal_flat", ("cmm",))):
        for source in sources:
            title = f"{name} · {source}"
            [where] = [i for i, t in enumerate(pages) if title in t]
            assert "part number" in pages[where] and "histogram" in pages[where], (title, pages[where][:400])
    assert "Sign-off" in pages[-1] or any("Sign-off" in t for t in pages[-2:])


def test_every_measurement_of_every_source_is_in_the_measurements_csv(fai: Fai, tmp_path: Path) -> None:
    # the CMM measured part 5's bore again later: the report keeps the first, counts the second
    again = tmp_path / "again.qif"
    again.write_bytes(qif_results([Char("DIA_H1", "Diameter", 10.0075, -0.0075, 0.0075)], [Part("SN0005", {"DIA_H1": 10.0111})]))
    result = CliRunner().invoke(app, ["import", str(again), "-c", str(fai.site), "--program", "O4711", "--json"])
    assert result.exit_code == 0, result.output
    out, table = tmp_path / "r.html", tmp_path / "all.csv"
    data = _report_json(fai, out, "--measurements-csv", str(table))
    bore_cmm = next(s for s in next(f for f in data["features"] if f["feature"] == "bore")["sources"] if s["source"] == "cmm")
    assert bore_cmm["remeasured"] == 1 and bore_cmm["n"] == N
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8"))))
    probe = [r for r in rows if r["source"] == "probe"]
    assert len(probe) == 3 * N  # three probe signals per part
    assert len([r for r in rows if r["source"] == "cmm"]) == 3 * N + 1  # three characteristics per part, and the re-measure
    assert len([r for r in rows if r["source"] == "bench"]) == N
    part5 = sorted(float(r["value"]) for r in rows if r["part"] == "5" and r["feature"] == "bore" and r["source"] == "cmm")
    assert part5 == sorted([fai.cmm["DIA_H1"][5], 10.0111])
    thread23 = next(r for r in rows if r["part"] == "23" and r["feature"] == "thread")
    assert (thread23["status"], thread23["in_tolerance"], thread23["value"]) == ("FAIL", "no", "")
    flat17 = next(r for r in rows if r["part"] == "17" and r["feature"] == "seal_flat")
    assert flat17["in_tolerance"] == "no" and float(flat17["value"]) == 0.025 and flat17["file"].endswith("cmm.qif")
