"""Small QIF 3 Results documents written by the tests: characteristics with their definitions,
nominals and tolerances, and one MeasurementResults per part with its serial number.

Written from the QIF 3.0 schema (and validated against it where ../shared is present), so the
importer meets the standard's structure and not only the shapes of the sample files."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape

__all__ = ["Char", "Part", "qif_results"]


@dataclass(frozen=True)
class Char:
    """A characteristic: ``kind`` a QIF type (Diameter, Position, Flatness, AngleBetween...);
    size and angle types take ``nominal`` and ``lower_tol``/``upper_tol`` (either may be None:
    one-sided), geometric types ``zone``."""

    name: str
    kind: str
    nominal: float | None = None
    lower_tol: float | None = None
    upper_tol: float | None = None
    zone: float | None = None
    designator: str | None = None


@dataclass(frozen=True)
class Part:
    """One part's results: serial (or None), values by characteristic name (None: no Value, a
    hard-gauge check with only its status), statuses by name (default PASS)."""

    serial: str | None
    values: dict[str, float | None]
    statuses: dict[str, str] = field(default_factory=dict)
    start: datetime | None = None
    lot: str | None = None


_ANALYSED = frozenset({"AngleBetween", "DistanceBetween"})
"""Types whose nominal needs an analysis mode (QIF 3 schema)."""


def _units(linear: str | None, factor: float | None, angular: str | None) -> str:
    if linear is None and angular is None:
        return ""
    out = "  <FileUnits>\n    <PrimaryUnits>\n"
    if angular is not None:
        out += (
            f"      <AngularUnit>\n        <SIUnitName>radian</SIUnitName>\n        <UnitName>{angular}</UnitName>\n"
            "        <UnitConversion>\n          <Factor>0.017453292519943</Factor>\n        </UnitConversion>\n"
            "      </AngularUnit>\n"
        )
    if linear is not None:
        out += f"      <LinearUnit>\n        <SIUnitName>meter</SIUnitName>\n        <UnitName>{linear}</UnitName>\n"
        if factor is not None:
            out += f"        <UnitConversion>\n          <Factor>{factor!r}</Factor>\n        </UnitConversion>\n"
        out += "      </LinearUnit>\n"
    return out + "    </PrimaryUnits>\n  </FileUnits>\n"


def qif_results(
    chars: list[Char],
    parts: list[Part],
    *,
    linear_unit: str | None = "mm",
    linear_factor: float | None = 0.001,
    angular_unit: str | None = "degree",
    document_id: str | None = None,
) -> bytes:
    """A valid QIF 3 document holding the characteristics and every part's results."""
    next_id = 1

    def new_id() -> int:
        nonlocal next_id
        next_id += 1
        return next_id - 1

    defs, noms, items = [], [], []
    item_ids: dict[str, int] = {}
    for c in chars:
        d, n, i = new_id(), new_id(), new_id()
        item_ids[c.name] = i
        if c.zone is not None:
            body = f"<ToleranceValue>{c.zone!r}</ToleranceValue>"
            if c.kind == "Position":
                body += "<MaterialCondition>REGARDLESS</MaterialCondition><ZoneShape><DiametricalZone/></ZoneShape>"
        else:
            tol = ""
            if c.upper_tol is not None:
                tol += f"<MaxValue>{c.upper_tol!r}</MaxValue>"
            if c.lower_tol is not None:
                tol += f"<MinValue>{c.lower_tol!r}</MinValue>"
            body = f"<Tolerance>{tol}<DefinedAsLimit>false</DefinedAsLimit></Tolerance>"
        defs.append(f'      <{c.kind}CharacteristicDefinition id="{d}">{body}</{c.kind}CharacteristicDefinition>')
        target = f"<TargetValue>{c.nominal!r}</TargetValue>" if c.nominal is not None else ""
        if c.kind in _ANALYSED:
            target += "<AnalysisMode>THREEDIMENSIONAL</AnalysisMode>"
        noms.append(
            f'      <{c.kind}CharacteristicNominal id="{n}"><CharacteristicDefinitionId>{d}</CharacteristicDefinitionId>'
            f"{target}</{c.kind}CharacteristicNominal>"
        )
        designator = (
            f"<CharacteristicDesignator><Designator>{escape(c.designator)}</Designator></CharacteristicDesignator>"
            if c.designator
            else ""
        )
        items.append(
            f'      <{c.kind}CharacteristicItem id="{i}"><Name>{escape(c.name)}</Name>{designator}'
            f"<CharacteristicNominalId>{n}</CharacteristicNominalId></{c.kind}CharacteristicItem>"
        )
    kinds = {c.name: c.kind for c in chars}
    std = new_id()
    results, components = [], []
    for p in parts:
        r = new_id()
        ms = []
        worst = "PASS"
        for name, value in p.values.items():
            status = p.statuses.get(name, "PASS")
            if status == "FAIL":
                worst = "FAIL"
            kind = kinds[name]
            v = "" if value is None else f"<Value>{value!r}</Value>"
            ms.append(
                f'            <{kind}CharacteristicMeasurement id="{new_id()}"><Status><CharacteristicStatusEnum>{status}'
                f"</CharacteristicStatusEnum></Status><CharacteristicItemId>{item_ids[name]}</CharacteristicItemId>{v}"
                f"</{kind}CharacteristicMeasurement>"
            )
        comp = ""
        if p.serial is not None or p.lot is not None:
            cid = new_id()
            comp = f'<ActualComponentIds n="1"><Id>{cid}</Id></ActualComponentIds>'
            serial = f"<SerialNumber>{escape(p.serial)}</SerialNumber>" if p.serial is not None else ""
            trace = f"<Traceability><LotNumber>{escape(p.lot)}</LotNumber></Traceability>" if p.lot else ""
            components.append(
                f'      <ActualComponentSet n="1"><ActualComponent id="{cid}">{serial}<Status><InspectionStatusEnum>'
                f"{worst}</InspectionStatusEnum></Status>{trace}</ActualComponent></ActualComponentSet>"
            )
        trace = (
            f"<InspectionTraceability><InspectionStart>{p.start.isoformat()}</InspectionStart></InspectionTraceability>"
            if p.start
            else ""
        )
        results.append(
            f'      <MeasurementResults id="{r}">{trace}\n        <MeasuredCharacteristics>\n'
            f'          <CharacteristicMeasurements n="{len(ms)}">\n'
            + "\n".join(ms)
            + "\n          </CharacteristicMeasurements>\n"
            f"        </MeasuredCharacteristics>\n        <InspectionStatus><InspectionStatusEnum>{worst}</InspectionStatusEnum>"
            f"</InspectionStatus>{comp}\n      </MeasurementResults>"
        )
    comp_sets = f'    <ActualComponentSets n="{len(components)}">\n' + "\n".join(components) + "\n    </ActualComponentSets>\n"
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<QIFDocument xmlns="http://qifstandards.org/xsd/qif3" versionQIF="3.0.0" idMax="{next_id}">\n'
        f"  <QPId>{document_id or uuid.uuid4()}</QPId>\n"
        f'  <StandardsDefinitions n="1"><Standard id="{std}"><Organization><StandardsOrganizationEnum>ISO'
        "</StandardsOrganizationEnum></Organization><Designator>1101</Designator></Standard></StandardsDefinitions>\n"
        + _units(linear_unit, linear_factor, angular_unit)
        + f"  <Characteristics>\n    <FormalStandardId>{std}</FormalStandardId>\n"
        f'    <CharacteristicDefinitions n="{len(defs)}">\n' + "\n".join(defs) + "\n    </CharacteristicDefinitions>\n"
        f'    <CharacteristicNominals n="{len(noms)}">\n' + "\n".join(noms) + "\n    </CharacteristicNominals>\n"
        f'    <CharacteristicItems n="{len(items)}">\n' + "\n".join(items) + "\n    </CharacteristicItems>\n"
        "  </Characteristics>\n  <Results>\n"
        f'    <MeasurementResultsSet n="{len(results)}">\n'
        + "\n".join(results)
        + "\n    </MeasurementResultsSet>\n"
        + (comp_sets if components else "")
        + "  </Results>\n</QIFDocument>\n"
    )
    return doc.encode("utf-8")
