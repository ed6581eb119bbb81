"""Hostile, malformed and invalid result files are refused with the file's name and the reason,
store nothing, and never stop the other files of the same import."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import InspectionError
from monitor.inspection.qif import QifReader
from tests.inspection.conftest import InspectionSite
from tests.inspection.qifgen import Char, Part, qif_results
from tests.requires import need_shared

NS = "http://qifstandards.org/xsd/qif3"
GOOD = qif_results([Char("DIA_H1", "Diameter", 10.0075, -0.0075, 0.0075)], [Part("SN0001", {"DIA_H1": 10.008})])

LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'.encode() for i in range(1, 10))
    + f']>\n<QIFDocument xmlns="{NS}" versionQIF="3.0.0">&lol9;</QIFDocument>'.encode()
)
XXE = f'<?xml version="1.0"?>\n<!DOCTYPE q [<!ENTITY x SYSTEM "file:///etc/passwd">]><QIFDocument xmlns="{NS}">&x;</QIFDocument>'


def _with_plan(uri: str) -> bytes:
    """Results whose characteristic item lives in another document at ``uri``."""
    return (
        f'<QIFDocument xmlns="{NS}" versionQIF="3.0.0"><ExternalQIFReferences n="1"><ExternalQIFDocument id="1">'
        f"<URI>{uri}</URI></ExternalQIFDocument></ExternalQIFReferences>"
        '<Results><MeasurementResultsSet n="1"><MeasurementResults id="2"><MeasuredCharacteristics>'
        '<CharacteristicMeasurements n="1"><DiameterCharacteristicMeasurement id="3"><Status>'
        "<CharacteristicStatusEnum>PASS</CharacteristicStatusEnum></Status>"
        '<CharacteristicItemId xId="5">1</CharacteristicItemId><Value>10.0</Value></DiameterCharacteristicMeasurement>'
        "</CharacteristicMeasurements></MeasuredCharacteristics><InspectionStatus><InspectionStatusEnum>PASS"
        "</InspectionStatusEnum></InspectionStatus></MeasurementResults></MeasurementResultsSet></Results></QIFDocument>"
    ).encode()


def _cases(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """File name -> (content, what the refusal must say)."""
    return {
        "laughs.qif": (LAUGHS, "DTD or entities"),
        "xxe.qif": (XXE.encode(), "DTD or entities"),
        "xxe16.qif": (XXE.replace('"1.0"?', '"1.0" encoding="UTF-16"?').encode("utf-16"), "DTD"),
        "truncated.qif": (GOOD[: len(GOOD) // 2], "malformed XML"),
        "html.qif": (b"<html><body>hello</body></html>", "not a QIF 3 document"),
        "qif2.qif": (b'<QIFDocument xmlns="http://qifstandards.org/xsd/qif2"/>', "not QIF 3"),
        "empty.qif": (b"  \n", "empty"),
        "text.qif": (b"PART;DIA\n1;10.0\n", "malformed XML"),
        "missing-plan.qif": (_with_plan("./nowhere/Plan.QIF"), "was not found"),
        "remote-plan.qif": (_with_plan("http://198.51.100.7/plan.qif"), "only local files are read"),
    }


def test_hostile_and_malformed_files_are_refused_with_their_name_and_the_reason(
    inspection_site: InspectionSite, tmp_path: Path
) -> None:
    inspection_site.add_parts(range(1, 3))
    cases = _cases(tmp_path)
    paths = []
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
        paths.append(str(tmp_path / name))
    good = tmp_path / "good.qif"
    good.write_bytes(GOOD)
    code, out, err = inspection_site.cli("import", *paths, str(good))
    assert code == 1
    text = " ".join(err.split())
    for name, (_, reason) in cases.items():
        line = next((ln for ln in err.split("refused ")[1:] if name in ln.split(":", 1)[0]), None)
        assert line is not None, f"{name} not refused: {text}"
        assert reason in " ".join(line.split()), (name, line)
    assert "root:" not in text  # nothing of /etc/passwd, ever
    assert "imported " in out and "good.qif" in out
    db = sqlite3.connect(inspection_site.store)
    files = [Path(r[0]).name for r in db.execute("SELECT path FROM inspection_files")]
    db.close()
    assert files == ["good.qif"]


def test_a_file_invalid_against_the_schema_is_refused_with_the_line(inspection_site: InspectionSite, tmp_path: Path) -> None:
    xsd = need_shared("qif", "xsd", "QIFApplications", "QIFDocument.xsd")
    inspection_site.path.write_text(
        inspection_site.path.read_text().replace("inspection: {", f"inspection: {{qif_schema: {xsd}, "), encoding="utf-8"
    )
    bad = tmp_path / "bad-value.qif"
    bad.write_bytes(GOOD.replace(b"<Value>10.008</Value>", b"<Value>abc</Value>"))
    good = tmp_path / "good.qif"
    good.write_bytes(GOOD)
    code, out, err = inspection_site.cli("import", str(bad), str(good))
    assert code == 1
    text = " ".join(err.split())
    assert str(bad) in text and "not valid against QIFDocument.xsd" in text and "line " in text and "'abc'" in text
    assert "good.qif" in out and "imported" in out


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_qif_reader_raises_nothing_but_inspection_error(tmp_path: Path, data: st.DataObject) -> None:
    content = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 6))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(content) - 1)))
        if action == "flip" and content:
            content[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del content[at : at + data.draw(st.integers(1, 200))]
        else:
            content[at:at] = data.draw(st.sampled_from([b"<", b"&", b"<Value>x</Value>", b"\x00", b"]]>", b"<!ENTITY"]))
    path = tmp_path / "fuzz.qif"
    path.write_bytes(bytes(content))
    try:
        QifReader().read(path)
    except InspectionError as exc:
        assert str(path) in str(exc)


def test_a_referenced_plan_with_another_qpid_is_refused(tmp_path: Path) -> None:
    plan = tmp_path / "Plan.QIF"
    plan.write_bytes(
        f'<QIFDocument xmlns="{NS}" versionQIF="3.0.0"><QPId>aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</QPId></QIFDocument>'.encode()
    )
    results = tmp_path / "results.qif"
    results.write_bytes(_with_plan(".\\Plan.QIF").replace(b"<URI>", b"<QPId>11111111-2222-3333-4444-555555555555</QPId><URI>"))
    with pytest.raises(InspectionError, match="is document aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"):
        QifReader().read(results)
