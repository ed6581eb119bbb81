"""Every QIF 3 sample of ../shared/qif imported through the CLI, validated against the QIF 3.0
schema, and every stored actual checked against the values read independently from the file
(with the standard library's ElementTree through defusedxml: another parser, another walk)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from defusedxml import ElementTree as SafeET

from monitor.store import SqliteStore
from tests.inspection.conftest import InspectionSite
from tests.requires import need_shared

pytestmark = pytest.mark.interop

Q = "{http://qifstandards.org/xsd/qif3}"


def _samples() -> list[Path]:
    root = need_shared("qif", "samples")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() == ".qif")


def _independent(path: Path) -> dict[str, dict[str, Any]]:
    """Per MeasurementResults id: serial, and (item name, value in mm or degrees, status) per actual."""
    root = SafeET.parse(str(path)).getroot()
    ids = {e.get("id"): e for e in root.iter() if e.get("id") is not None}
    unit = root.findtext(f"{Q}FileUnits/{Q}PrimaryUnits/{Q}LinearUnit/{Q}UnitName")
    assert unit in (None, "mm"), f"{path.name}: a unit this check does not know: {unit}"
    angle = root.findtext(f"{Q}FileUnits/{Q}PrimaryUnits/{Q}AngularUnit/{Q}UnitName")
    assert angle in (None, "degree")
    scale = 1.0 if unit == "mm" else 1000.0  # no FileUnits: metres (QIF 3 Units.xsd)
    external = {
        e.get("id"): path.parent / e.findtext(f"{Q}URI", "").replace("\\", "/") for e in root.iter(f"{Q}ExternalQIFDocument")
    }
    components = {c.get("id"): c.findtext(f"{Q}SerialNumber") for c in root.iter(f"{Q}ActualComponent")}
    out: dict[str, dict[str, Any]] = {}
    for mr in root.iter(f"{Q}MeasurementResults"):
        comp = [i.text.strip() for i in mr.iter(f"{Q}Id") if i.text] if mr.find(f"{Q}ActualComponentIds") is not None else []
        actuals = []
        for cm in mr.iter():
            if not cm.tag.endswith("CharacteristicMeasurement"):
                continue
            ref = cm.find(f"{Q}CharacteristicItemId")
            assert ref is not None and ref.text is not None
            if ref.get("xId") is not None:
                plan = SafeET.parse(str(external[ref.text.strip()])).getroot()
                item = next(e for e in plan.iter() if e.get("id") == ref.get("xId"))
            else:
                item = ids[ref.text.strip()]
            text = cm.findtext(f"{Q}Value")
            kind = cm.tag.removeprefix(Q).removesuffix("CharacteristicMeasurement")
            factor = 1.0 if kind.startswith("Angle") else scale
            value = None if text is None else float(text) * factor
            actuals.append((item.findtext(f"{Q}Name"), value, cm.findtext(f"{Q}Status/{Q}CharacteristicStatusEnum")))
        out[mr.get("id") or ""] = {"serial": components.get(comp[-1]) if comp else None, "actuals": actuals}
    return out


def test_every_sample_imports_with_the_values_in_the_file(inspection_site: InspectionSite) -> None:
    xsd = need_shared("qif", "xsd", "QIFApplications", "QIFDocument.xsd")
    inspection_site.path.write_text(
        inspection_site.path.read_text().replace("inspection: {", f"inspection: {{qif_schema: {xsd}, "), encoding="utf-8"
    )
    samples = _samples()
    [summary] = inspection_site.cli_json("import", *map(str, samples))
    files = {Path(f["file"]).name: f for f in summary["files"]}
    assert set(files) == {p.name for p in samples}
    assert all(f["state"] in ("imported", "plan") for f in files.values()), [f["error"] for f in files.values()]
    assert {n for n, f in files.items() if f["state"] == "plan"} == {
        "Exploded_Plan.QIF",
        "WIDGET_QIF_PLAN.QIF",
        "sheetMetalPlan.QIF",
    }
    checked = 0
    with SqliteStore(inspection_site.store, read_only=True) as store:
        for sample in samples:
            outcome = files[sample.name]
            expected = _independent(sample)
            if outcome["state"] == "plan":
                assert not expected
                continue
            assert len(outcome["results"]) == len(expected), sample.name
            for result in outcome["results"]:
                mr_id = result["where"].removeprefix("MeasurementResults id=")
                [stored] = store.inspection_results(keys=[result["key"]])
                want = expected[mr_id]
                assert stored.result.serial == want["serial"] == result["serial"], sample.name
                got = [(a.characteristic.name, a.value, a.status) for a in stored.result.actuals]
                assert len(got) == len(want["actuals"]), (sample.name, mr_id)
                for (name, value, status), (w_name, w_value, w_status) in zip(got, want["actuals"], strict=True):
                    assert (name, status) == (w_name, w_status), (sample.name, mr_id)
                    if w_value is None:
                        assert value is None
                    else:
                        assert value is not None and math.isclose(value, w_value, rel_tol=1e-12), (sample.name, name)
                    checked += 1
    assert checked == 424  # every actual of every results file

    # the README's table, per file
    def count(name: str) -> tuple[int, int]:
        return len(files[name]["results"]), files[name]["actuals"]

    assert count("SheetMetal_QIF_Results_6_samples.QIF") == (6, 228)
    assert count("WIDGET_QIF_RESULTS.QIF") == (1, 42)
    assert count("QIF_PTS_SAMPLE.QIF") == (1, 27)
    assert count("testPython30.qif") == (1, 7)
    assert count("mitutoyo_results_serialized_pass_fail_sample.QIF") == (1, 0)
    assert count("Exploded_Results1.QIF") == (1, 2) and count("All-in-one.QIF") == (2, 4)
    # one data set in several files is stored once: sample_k is part k of 6_samples (the _w_UUIDs
    # variant too, same values), Exploded_Results1 is the first results of All-in-one
    assert sum(f["new_actuals"] for f in files.values()) == 228 + 42 + 27 + 7 + 4
    assert files["SheetMetal_QIF_Results_sample_3_w_UUIDs.QIF"]["new_actuals"] == 0
    # files without FileUnits: metres as QIF says, and a warning that the values look like millimetres
    assert any("look like millimetres" in w for w in files["All-in-one.QIF"]["warnings"])
