"""``monitor import`` and ``monitor inspections`` through the CLI: QIF and CSV results joined to
part records by serial, part number and time; unmatched results kept, listed and matched once
their part is stored; a second import changes nothing; units converted."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import load_site
from monitor.inspection.importer import ImportOptions, import_files
from monitor.store import SqliteStore
from tests.inspection.conftest import T0, InspectionSite
from tests.inspection.qifgen import Char, Part, qif_results

CHARS = [
    Char("DIA_H1", "Diameter", 10.0075, -0.0075, 0.0075, designator="7"),
    Char("TP_H1", "Position", zone=0.05, designator="8"),
    Char("FLAT_TOP", "Flatness", zone=0.02, designator="9"),
]


def _counts(store: Path) -> tuple[int, int, int]:
    db = sqlite3.connect(store)
    try:
        files, results, actuals = (
            int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
            for t in ("inspection_files", "inspection_results", "inspection_actuals")
        )
        return files, results, actuals
    finally:
        db.close()


def test_qif_results_join_parts_by_serial_and_the_unknown_serial_is_kept(inspection_site: InspectionSite, tmp_path: Path) -> None:
    inspection_site.add_parts(range(1, 11))
    qif = tmp_path / "cmm.qif"
    qif.write_bytes(
        qif_results(
            CHARS,
            [
                Part("SN0003", {"DIA_H1": 10.0081, "TP_H1": 0.012, "FLAT_TOP": 0.004}),
                Part("SN0007", {"DIA_H1": 10.0163, "TP_H1": 0.021, "FLAT_TOP": 0.006}, statuses={"DIA_H1": "FAIL"}),
                Part("SN9999", {"DIA_H1": 10.0070, "TP_H1": 0.010, "FLAT_TOP": 0.003}),
            ],
        )
    )
    [summary] = inspection_site.cli_json("import", str(qif))
    [file] = summary["files"]
    assert file["state"] == "imported" and file["actuals"] == 9 and file["new_actuals"] == 9
    by_serial = {r["serial"]: r for r in file["results"]}
    assert by_serial["SN0003"]["matched_by"] == "serial" and by_serial["SN0003"]["part"] == "m1 O1001 part 3"
    assert by_serial["SN0007"]["part"] == "m1 O1001 part 7"
    assert by_serial["SN9999"]["part"] is None and "SN9999" in by_serial["SN9999"]["note"]
    assert file["unmapped"] == ["FLAT_TOP"]  # no feature of O1001 names it: imported, and said
    [waiting] = summary["unmatched"]
    assert waiting["serial"] == "SN9999" and waiting["actuals"] == 3

    rows = inspection_site.cli_json("inspections", "--program", "O1001")
    assert {(r["part"], r["characteristic"]) for r in rows} == {(p, c.name) for p in (3, 7) for c in CHARS}
    dia7 = next(r for r in rows if r["part"] == 7 and r["characteristic"] == "DIA_H1")
    assert dia7["feature"] == "bore" and dia7["source"] == "cmm" and dia7["designator"] == "7"
    assert dia7["value"] == 10.0163 and dia7["lower"] == 10.0 and dia7["upper"] == 10.015
    assert dia7["status"] == "FAIL" and dia7["in_tolerance"] is False
    tp3 = next(r for r in rows if r["part"] == 3 and r["characteristic"] == "TP_H1")
    assert tp3["feature"] == "hole_pos" and tp3["lower"] is None and tp3["upper"] == 0.05 and tp3["in_tolerance"] is True
    [unmatched] = inspection_site.cli_json("inspections", "--unmatched")
    assert unmatched["serial"] == "SN9999" and "SN9999" in unmatched["reason"]


def test_importing_the_same_results_again_changes_nothing(inspection_site: InspectionSite, tmp_path: Path) -> None:
    inspection_site.add_parts(range(1, 4))
    parts = [
        Part(f"SN{n:04d}", {"DIA_H1": d, "TP_H1": 0.01, "FLAT_TOP": 0.005}) for n, d in ((1, 10.0081), (2, 10.0082), (3, 10.0083))
    ]
    first = tmp_path / "batch.qif"
    first.write_bytes(qif_results(CHARS, parts, document_id="11111111-2222-3333-4444-555555555555"))
    inspection_site.cli_json("import", str(first))
    before = _counts(inspection_site.store)
    assert before == (1, 3, 9)
    [again] = inspection_site.cli_json("import", str(first))
    assert again["files"][0]["state"] == "unchanged"
    # the same measurements exported again into another document (one file per part, other ids)
    single = tmp_path / "part2.qif"
    single.write_bytes(qif_results(CHARS, [parts[1]], document_id="99999999-2222-3333-4444-555555555555"))
    [other] = inspection_site.cli_json("import", str(single))
    assert other["files"][0]["state"] == "imported" and other["files"][0]["new_actuals"] == 0
    assert not other["files"][0]["results"][0]["new"]
    assert _counts(inspection_site.store) == (2, 3, 9)
    # a re-measurement of part 2 (another value) is a new measurement, kept beside the first
    remeasured = tmp_path / "part2-again.qif"
    remeasured.write_bytes(qif_results(CHARS, [Part("SN0002", {"DIA_H1": 10.0085, "TP_H1": 0.01, "FLAT_TOP": 0.005})]))
    inspection_site.cli_json("import", str(remeasured))
    assert _counts(inspection_site.store) == (3, 4, 12)
    rows = inspection_site.cli_json("inspections", "--part", "2")
    assert sorted(r["value"] for r in rows if r["characteristic"] == "DIA_H1") == [10.0082, 10.0085]


def test_results_wait_for_their_part_and_match_when_it_is_stored(inspection_site: InspectionSite, tmp_path: Path) -> None:
    inspection_site.add_parts(range(1, 6))
    early = tmp_path / "early.qif"
    early.write_bytes(qif_results(CHARS, [Part("SN0012", {"DIA_H1": 10.009, "TP_H1": 0.02, "FLAT_TOP": 0.01})]))
    [summary] = inspection_site.cli_json("import", str(early))
    assert summary["files"][0]["results"][0]["part"] is None
    assert "SN0012" in summary["files"][0]["results"][0]["note"]
    inspection_site.add_parts([12])
    assert inspection_site.cli_json("inspections", "--unmatched") == []
    rows = inspection_site.cli_json("inspections", "--part", "12")
    assert {r["characteristic"]: r["value"] for r in rows} == {"DIA_H1": 10.009, "TP_H1": 0.02, "FLAT_TOP": 0.01}


def test_part_number_given_and_time_matching(inspection_site: InspectionSite, tmp_path: Path) -> None:
    inspection_site.add_parts(range(1, 9), serials=False)
    one = tmp_path / "no-serial.qif"
    one.write_bytes(qif_results(CHARS, [Part(None, {"DIA_H1": 10.01, "TP_H1": 0.03, "FLAT_TOP": 0.01})]))
    [summary] = inspection_site.cli_json("import", str(one), "--part", "4", "--program", "O1001")
    assert summary["files"][0]["results"][0]["part"] == "m1 O1001 part 4"
    assert summary["files"][0]["results"][0]["matched_by"] == "given"
    # --part names one part: a file of several parts is refused, nothing stored from it
    several = tmp_path / "several.qif"
    several.write_bytes(qif_results(CHARS, [Part(None, {"DIA_H1": 10.01}), Part(None, {"DIA_H1": 10.02})]))
    code, _, err = inspection_site.cli("import", str(several), "--part", "5")
    assert code == 1 and "--part/--serial name one part" in err and str(several) in err
    # by time: a gauge at the machine measures each part as it comes out (part 6 ended at T0+18 min)
    timed = tmp_path / "timed.qif"
    start = T0 + timedelta(minutes=18, seconds=40)
    timed.write_bytes(qif_results(CHARS, [Part(None, {"DIA_H1": 10.011}, start=start)]))
    [summary] = inspection_site.cli_json("import", str(timed), "--machine", "m1", "--program", "O1001")
    result = summary["files"][0]["results"][0]
    assert result["part"] == "m1 O1001 part 6" and result["matched_by"] == "time" and "40 s" in result["note"]
    # too long after any part (window 600 s): unmatched, with the reason
    late = tmp_path / "late.qif"
    late.write_bytes(qif_results(CHARS, [Part(None, {"DIA_H1": 10.012}, start=T0 + timedelta(hours=3))]))
    [summary] = inspection_site.cli_json("import", str(late), "--machine", "m1")
    assert summary["files"][0]["results"][0]["part"] is None
    assert "more than the 600 s window" in summary["files"][0]["results"][0]["note"]


CSV = """\
Seriennummer;Merkmal;Istwert;Sollwert;OT;UT;Zeit;Prüfer
SN0001;DIA_H1;10,0081;10,0075;0,0075;-0,0075;02.03.2026 09:10:00;KM
SN0001;Bohrung 7;10,008;10,0075;0,0075;-0,0075;02.03.2026 09:11:00;KM
SN0002;DIA_H1;10,0169;10,0075;0,0075;-0,0075;02.03.2026 09:20:00;KM
SN0002;Bohrung 7;abc;10,0075;0,0075;-0,0075;02.03.2026 09:21:00;KM
SN0077;DIA_H1;10,0080;10,0075;0,0075;-0,0075;02.03.2026 09:30:00;KM
"""


def test_csv_export_with_the_programs_column_map_and_unmatched_rows(inspection_site: InspectionSite, tmp_path: Path) -> None:
    inspection_site.add_parts(range(1, 4))
    path = tmp_path / "bench.csv"
    path.write_text(CSV, encoding="utf-8")
    [summary] = inspection_site.cli_json("import", str(path), "--program", "O1001")
    [file] = summary["files"]
    assert file["format"] == "csv" and file["actuals"] == 5 and file["new_actuals"] == 5
    assert any("line 5: value 'abc' is not a number" in w for w in file["warnings"])
    assert [w["serial"] for w in summary["unmatched"]] == ["SN0077"]
    rows = inspection_site.cli_json("inspections")
    by = {(r["part"], r["characteristic"]): r for r in rows}
    assert by[(1, "DIA_H1")]["value"] == 10.0081 and by[(1, "DIA_H1")]["source"] == "cmm"
    assert by[(1, "Bohrung 7")]["source"] == "bench" and by[(1, "Bohrung 7")]["feature"] == "bore"
    assert by[(2, "DIA_H1")]["upper"] == 10.015 and by[(2, "DIA_H1")]["in_tolerance"] is False
    assert by[(2, "Bohrung 7")]["value"] is None  # kept, not dropped
    assert by[(1, "DIA_H1")]["time"] == "2026-03-02T09:10:00+00:00"
    # the CMM appends to the day's file: only the new row is added
    path.write_text(CSV + "SN0003;DIA_H1;10,0079;10,0075;0,0075;-0,0075;02.03.2026 09:40:00;KM\n", encoding="utf-8")
    [summary] = inspection_site.cli_json("import", str(path), "--program", "O1001")
    assert summary["files"][0]["new_actuals"] == 1
    assert _counts(inspection_site.store)[2] == 6


def test_units_are_converted_and_a_file_without_units_is_metres_with_a_warning(
    inspection_site: InspectionSite, tmp_path: Path
) -> None:
    inspection_site.add_parts(range(1, 4))
    inches = tmp_path / "inch.qif"
    inches.write_bytes(
        qif_results(
            [Char("DIA_H1", "Diameter", 0.394, -0.0003, 0.0003), Char("ANG", "AngleBetween", 90.0, -0.5, 0.5)],
            [Part("SN0001", {"DIA_H1": 0.3941, "ANG": 90.2})],
            linear_unit="in",
            linear_factor=0.0254,
        )
    )
    no_units = tmp_path / "bare.qif"
    no_units.write_bytes(qif_results(CHARS, [Part("SN0002", {"DIA_H1": 10.008})], linear_unit=None, angular_unit=None))
    [summary] = inspection_site.cli_json("import", str(inches), str(no_units))
    inch_file, bare_file = summary["files"]
    assert not inch_file["warnings"]
    assert any("no FileUnits" in w and "look like millimetres" in w for w in bare_file["warnings"])
    rows = {(r["part"], r["characteristic"]): r for r in inspection_site.cli_json("inspections")}
    assert rows[(1, "DIA_H1")]["value"] == pytest.approx(0.3941 * 25.4, abs=1e-12)
    assert rows[(1, "DIA_H1")]["upper"] == pytest.approx((0.394 + 0.0003) * 25.4, abs=1e-9)
    assert rows[(1, "ANG")]["value"] == 90.2 and rows[(1, "ANG")]["unit"] == "deg"
    assert rows[(2, "DIA_H1")]["value"] == pytest.approx(10008.0)  # metres, as QIF says
    # the person knows better: the same file again, in millimetres, replacing what it brought
    [summary] = inspection_site.cli_json("import", str(no_units), "--units", "mm", "--replace")
    assert not summary["files"][0]["warnings"]
    rows = {(r["part"], r["characteristic"]): r for r in inspection_site.cli_json("inspections")}
    assert rows[(2, "DIA_H1")]["value"] == 10.008
    code, _, err = inspection_site.cli("import", str(no_units), "--units", "furlong")
    assert code == 1 and "not a length unit" in err


def test_import_library_reports_progress_per_file(inspection_site: InspectionSite, tmp_path: Path) -> None:
    inspection_site.add_parts(range(1, 3))
    files = []
    for n in (1, 2):
        f = tmp_path / f"p{n}.qif"
        f.write_bytes(qif_results(CHARS, [Part(f"SN{n:04d}", {"DIA_H1": 10.01})]))
        files.append(f)
    seen: list[str] = []
    site = load_site(inspection_site.path)
    with SqliteStore(site.store_path) as store:
        summary = import_files(site, store, files, ImportOptions(), progress=lambda f: seen.append(Path(f.path).name))
    assert seen == ["p1.qif", "p2.qif"]
    assert [f.matched for f in summary.files] == [1, 1]
