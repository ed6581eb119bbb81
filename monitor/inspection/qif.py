"""QIF 3 Results (ISO 23952:2020) in: every characteristic actual of every measured part.

Where a part's actual values live (namespace ``http://qifstandards.org/xsd/qif3``)::

    QIFDocument
      FileUnits/PrimaryUnits/{LinearUnit,AngularUnit}      units of values that name none (else metres)
      ExternalQIFReferences/ExternalQIFDocument[@id]       other files (a plan) that ids may point into
      Characteristics/
        CharacteristicDefinitions/<T>CharacteristicDefinition   tolerance
        CharacteristicNominals/<T>CharacteristicNominal         TargetValue, -> definition
        CharacteristicItems/<T>CharacteristicItem               Name, designator (balloon), -> nominal
      Results/MeasurementResultsSet/MeasurementResults          one per measured part (or run)
        MeasuredCharacteristics/CharacteristicMeasurements/<T>CharacteristicMeasurement
          Status, CharacteristicItemId, TimeStamp?, ActualComponentId?, Value (MaxValue, MinValue, Bonus)
        InspectionStatus, ActualComponentIds
      Results/ActualComponentSets/.../ActualComponent[@id]      SerialNumber, Status, Traceability (lot)

A reference with an ``xId`` attribute points into an external document: its text is the local
``ExternalQIFDocument/@id``, ``xId`` the id inside that file. The plan is looked for at its URI
(relative to the results file; ``\\`` separators and ``file:`` URIs accepted, never the network),
then beside the results file under the URI's file name, then among the files of the same import
and the plans imported before, by the QPId the reference gives.

What a value means and which limits apply follows the QIF 3 schema (Characteristics.xsd,
IntermediatesPMI.xsd): size and angle types are a measured size against
``Tolerance/{MinValue,MaxValue}`` (deviations from the nominal unless ``DefinedAsLimit``, either
may be absent: a one-sided limit); geometric types (form, orientation, location, runout, surface
and line profile) are a zone or error judged against ``ToleranceValue`` as an upper limit; a point
profile is a signed deviation within the zone around the nominal (``ToleranceValue`` wide, shifted
by ``OuterDisposition`` or ``UnequallyDisposedZone``); surface texture is Ra against the
definition's ``RoughnessAverage``; a characteristic checked with a hard gauge has no value, only
its status (an attribute).
"""

from __future__ import annotations

import hashlib
import math
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path, PureWindowsPath
from typing import Any

from lxml import etree

from monitor.errors import InspectionError
from monitor.inspection.model import Actual, Characteristic, InspectionDocument, InspectionResult, normalise_status
from monitor.inspection.units import Dimension, Unit, declared_unit, known_unit
from monitor.inspection.xmlsafe import DEFAULT_MAX_BYTES, parse_file, validate

__all__ = ["NS", "QifReader", "document_qpid", "is_qif"]

NS = "http://qifstandards.org/xsd/qif3"
_Q = "{" + NS + "}"

ANGULAR_TYPES = frozenset({"Angle", "AngleBetween", "AngleFrom", "AngularCoordinate", "UserDefinedAngular"})
"""Characteristic types whose values are angles (MeasuredAngularValueType in the schema)."""
OTHER_QUANTITY_TYPES = frozenset(
    {
        "UserDefinedArea",
        "UserDefinedForce",
        "UserDefinedMass",
        "UserDefinedPressure",
        "UserDefinedSpeed",
        "UserDefinedTemperature",
        "UserDefinedTime",
        "UserDefinedUnit",
    }
)
"""Types whose values are neither length nor angle: kept in the file's unit."""
SIZE_TYPES = frozenset(
    {
        "Diameter",
        "Radius",
        "SphericalDiameter",
        "SphericalRadius",
        "Length",
        "Width",
        "Height",
        "Depth",
        "Thickness",
        "DistanceBetween",
        "DistanceFrom",
        "LinearCoordinate",
        "Chord",
        "CurveLength",
        "Square",
        "ConicalTaper",
        "FlatTaper",
        "UserDefinedLinear",
        *ANGULAR_TYPES,
        *OTHER_QUANTITY_TYPES,
    }
)
"""Types judged as a measured size against a nominal and Tolerance/{MinValue, MaxValue}."""


def is_qif(root: Any) -> bool:
    """True when ``root`` is a QIF 3 document element."""
    return isinstance(root.tag, str) and root.tag == _Q + "QIFDocument"


def _local(el: Any) -> str:
    tag = el.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(el: Any) -> str | None:
    if el is None or el.text is None:
        return None
    text = " ".join(el.text.split())
    return text or None


def _child(el: Any, *names: str) -> Any:
    """The first descendant along the path of local names (in the QIF namespace), or None."""
    cur = el
    for name in names:
        if cur is None:
            return None
        cur = cur.find(_Q + name)
    return cur


def _children(el: Any) -> Iterator[Any]:
    if el is None:
        return
    for c in el:
        if isinstance(c.tag, str):
            yield c


def document_qpid(root: Any) -> str | None:
    """The document's QPId (its UUID), if it has one."""
    return _qpid(_text(_child(root, "QPId")))


def _qpid(text: str | None) -> str | None:
    return text.strip().lower() if text else None


@dataclass
class _Units:
    """How a document's values convert to millimetres and degrees."""

    linear: Unit | None
    angular: Unit | None
    named: dict[str, Unit] = field(default_factory=dict)
    metres_by_default: bool = False

    def unit(self, dimension: Dimension, name: str | None) -> Unit | None:
        """The unit of a value of ``dimension`` that names ``name`` (or none)."""
        if name:
            found = self.named.get(name.strip().lower()) or known_unit(name, dimension)
            if found is not None and found.dimension is dimension:
                return found
            return None
        if dimension is Dimension.LENGTH:
            return self.linear
        if dimension is Dimension.ANGLE:
            return self.angular
        return None


def _read_units(root: Any, default_length: Unit | None) -> _Units:
    file_units = _child(root, "FileUnits")
    named: dict[str, Unit] = {}
    primary: dict[Dimension, Unit] = {}
    for group in ("PrimaryUnits", "OtherUnits"):
        for el in _children(_child(file_units, group)):
            dimension = {"LinearUnit": Dimension.LENGTH, "AngularUnit": Dimension.ANGLE}.get(_local(el))
            name = _text(_child(el, "UnitName"))
            if dimension is None or name is None:
                continue
            factor = _number(_child(el, "UnitConversion", "Factor"))
            offset = _number(_child(el, "UnitConversion", "Offset")) or 0.0
            unit = declared_unit(name, dimension, factor, offset)
            named.setdefault(name.strip().lower(), unit)
            if group == "PrimaryUnits":
                primary[dimension] = unit
    linear = primary.get(Dimension.LENGTH)
    metres = False
    if linear is None:
        if default_length is not None:
            linear = default_length
        else:
            linear = Unit("m", Dimension.LENGTH, 1000.0)
            metres = True
    angular = primary.get(Dimension.ANGLE) or Unit("radian", Dimension.ANGLE, 180.0 / math.pi)
    return _Units(linear, angular, named, metres)


def _number(el: Any) -> float | None:
    text = _text(el)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_ItemInfo = tuple[Characteristic, float | None, float | None, float | None, dict[str, Any]]
"""An item's characteristic, nominal, lower and upper limit, and what else its definition says."""


@dataclass
class _Doc:
    """One parsed QIF document with its id index, units and external references."""

    path: Path
    root: Any
    ids: dict[str, Any]
    units: _Units
    qpid: str | None
    external: dict[str, tuple[str | None, str | None]]
    """Local ExternalQIFDocument id -> (URI, QPId)."""


class QifReader:
    """Reads QIF 3 Results files into :class:`InspectionDocument` objects.

    ``schema`` (a path to QIFDocument.xsd) validates every document read, the results and any
    plan they reference. ``default_length_unit`` is the unit of a file without ``FileUnits``
    (QIF says metres; ``mm`` when the user knows better). Naive times in the file are in
    ``timezone``. ``plans`` maps document QPIds to files known to hold them (plans imported
    before, and the other files of the same import)."""

    def __init__(
        self,
        *,
        schema: Path | None = None,
        default_length_unit: str | None = None,
        timezone: tzinfo = UTC,
        plans: Mapping[str, Path] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.schema = schema
        self.timezone = timezone
        self.plans = {k.lower(): v for k, v in (plans or {}).items()}
        self.max_bytes = max_bytes
        self._default_length: Unit | None = None
        if default_length_unit is not None:
            unit = known_unit(default_length_unit, Dimension.LENGTH)
            if unit is None:
                raise InspectionError(default_length_unit, "not a length unit (mm, m, in, um ...)")
            self._default_length = unit
        self._docs: dict[Path, _Doc] = {}
        self._items: dict[tuple[int, str | None, str | None, str], _ItemInfo] = {}
        self._warnings: list[str] = []

    # ------------------------------------------------------------------------------ documents
    def _load(self, path: Path) -> _Doc:
        key = path.resolve()
        doc = self._docs.get(key)
        if doc is not None:
            return doc
        root = parse_file(path, max_bytes=self.max_bytes)
        if not is_qif(root):
            ns = etree.QName(root).namespace if isinstance(root.tag, str) else None
            if ns and "qifstandards.org" in ns and ns != NS:
                raise InspectionError(path, f"QIF in namespace {ns} is not QIF 3; export QIF 3 (namespace {NS})")
            raise InspectionError(path, f"not a QIF 3 document (root element {_local(root) or root.tag!r}, namespace {ns})")
        version = root.get("versionQIF", "")
        if version and not version.startswith("3."):
            self._warnings.append(f"{path.name}: versionQIF {version!r}; read as QIF 3")
        if self.schema is not None:
            validate(root, path, self.schema)
        ids: dict[str, Any] = {}
        for el in root.iter():
            ident = el.get("id") if isinstance(el.tag, str) else None
            if ident is not None:
                ids.setdefault(ident.strip(), el)
        external: dict[str, tuple[str | None, str | None]] = {}
        for ref in _children(_child(root, "ExternalQIFReferences")):
            ident = ref.get("id")
            if ident is not None:
                external[ident.strip()] = (_text(_child(ref, "URI")), _qpid(_text(_child(ref, "QPId"))))
        doc = _Doc(path, root, ids, _read_units(root, self._default_length), document_qpid(root), external)
        self._docs[key] = doc
        return doc

    def _external(self, doc: _Doc, local_id: str) -> _Doc:
        """The document a reference's local ExternalQIFDocument id names, loaded."""
        if local_id not in doc.external:
            raise InspectionError(doc.path, f"a reference names external document {local_id}, which ExternalQIFReferences lacks")
        uri, qpid = doc.external[local_id]
        tried: list[str] = []
        for candidate in self._candidates(doc.path, uri, qpid):
            tried.append(str(candidate))
            if not candidate.is_file():
                continue
            other = self._load(candidate)
            if qpid is not None and other.qpid is not None and other.qpid != qpid:
                raise InspectionError(
                    doc.path,
                    f"{candidate} is document {other.qpid}, but the results reference {qpid} there; "
                    "give the plan the results were measured against",
                )
            return other
        raise InspectionError(
            doc.path,
            f"the characteristics are in another file ({uri or 'no URI'}"
            + (f", QPId {qpid}" if qpid else "")
            + "), which was not found (looked at: "
            + ", ".join(tried or ["nothing to look at"])
            + "); import the plan with the results or put it beside them",
        )

    def _candidates(self, results: Path, uri: str | None, qpid: str | None) -> Iterator[Path]:
        folder = results.parent
        if uri:
            parsed = urllib.parse.urlsplit(uri)
            if parsed.scheme and len(parsed.scheme) > 1 and parsed.scheme != "file":
                raise InspectionError(results, f"refuses to fetch the referenced document {uri!r}: only local files are read")
            text = urllib.parse.unquote(parsed.path if parsed.scheme == "file" else uri)
            if parsed.scheme == "file" and parsed.netloc and parsed.netloc != "localhost":
                text = f"//{parsed.netloc}{text}"
            windows = PureWindowsPath(text)
            if windows.drive or text.startswith("\\\\"):
                # a Windows absolute path written on the CMM PC: only its name means anything here
                yield folder / windows.name
            else:
                relative = Path(text.replace("\\", "/"))
                yield relative if relative.is_absolute() else folder / relative
                yield folder / relative.name
        if qpid is not None and qpid in self.plans:
            yield self.plans[qpid]

    def _resolve(self, doc: _Doc, ref: Any) -> tuple[_Doc, Any] | None:
        """The element a QIF reference element points to (in this or an external document)."""
        text = _text(ref)
        if text is None:
            return None
        xid = ref.get("xId")
        if xid is not None:
            target = self._external(doc, text)
            el = target.ids.get(xid.strip())
            return (target, el) if el is not None else None
        el = doc.ids.get(text)
        return (doc, el) if el is not None else None

    # --------------------------------------------------------------------------------- reading
    def read(self, path: Path) -> InspectionDocument:
        """Every part's results in the QIF file at ``path``; raises :class:`InspectionError` when the
        file (or a plan it needs) is missing, hostile, malformed or invalid."""
        self._warnings = []
        doc = self._load(path)
        results_el = _child(doc.root, "Results")
        components = self._components(doc, results_el)
        sets = [r for s in _children(results_el) if _local(s) == "MeasurementResultsSet" for r in _children(s)]
        measurement_results = [r for r in sets if _local(r) == "MeasurementResults"]
        file_time = None
        if len(measurement_results) == 1:
            file_time = self._time(_child(results_el, "InspectionTraceability", "InspectionStart"))
        results: list[InspectionResult] = []
        for mr in measurement_results:
            results.extend(self._measurement_results(doc, mr, components, file_time))
        if doc.units.metres_by_default:
            self._warn_metres(path, results)
        info = self._info(doc)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return InspectionDocument(str(path), "qif", digest, tuple(results), tuple(self._warnings), info)

    def _warn_metres(self, path: Path, results: list[InspectionResult]) -> None:
        values = [
            abs(v) for r in results for a in r.actuals if a.unit == "mm" for v in (a.value, a.nominal) if v is not None and v != 0
        ]
        if not values:
            return
        message = f"{path.name} has no FileUnits, so QIF reads its lengths as metres"
        if max(values) >= 2000.0:
            message += (
                f": values up to {max(values) / 1000.0:g} m look like millimetres (a part of that size?). "
                "If the file means millimetres, import it again with --units mm --replace"
            )
        self._warnings.append(message)

    def _components(self, doc: _Doc, results_el: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for sets in _children(_child(results_el, "ActualComponentSets")):
            for comp in _children(sets):
                ident = comp.get("id")
                if _local(comp) != "ActualComponent" or ident is None:
                    continue
                trace = _child(comp, "Traceability")
                out[ident.strip()] = {
                    "serial": _text(_child(comp, "SerialNumber")),
                    "status": normalise_status(_text(_child(comp, "Status", "InspectionStatusEnum"))),
                    "lot": _text(_child(trace, "LotNumber")),
                    "sample": _text(_child(trace, "SampleNumber")),
                    "time": self._time(_child(trace, "InspectionStart")),
                }
        return out

    def _time(self, el: Any) -> datetime | None:
        text = _text(el)
        if text is None:
            return None
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            self._warnings.append(f"time {text!r} is not an ISO 8601 date-time; ignored")
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=self.timezone)
        return t.astimezone(UTC)

    def _measurement_results(
        self, doc: _Doc, mr: Any, components: dict[str, dict[str, Any]], file_time: datetime | None
    ) -> list[InspectionResult]:
        where = f"MeasurementResults id={mr.get('id')}"
        component_ids = [t for t in (_text(i) for i in _children(_child(mr, "ActualComponentIds"))) if t]
        status = normalise_status(_text(_child(mr, "InspectionStatus", "InspectionStatusEnum")))
        qpid = _qpid(_text(_child(mr, "ThisResultsInstanceQPId")))
        mr_time = self._time(_child(mr, "InspectionTraceability", "InspectionStart"))
        groups: dict[str | None, list[Actual]] = {}
        for cm in _children(_child(mr, "MeasuredCharacteristics", "CharacteristicMeasurements")):
            if not _local(cm).endswith("CharacteristicMeasurement"):
                continue
            comp_ref = _text(_child(cm, "ActualComponentId"))
            owner = comp_ref if comp_ref is not None else (component_ids[0] if len(component_ids) == 1 else None)
            groups.setdefault(owner, []).append(self._actual(doc, cm))
        if not groups:
            groups = {component_ids[0] if len(component_ids) == 1 else None: []}
        out: list[InspectionResult] = []
        for owner, actuals in groups.items():
            comp = components.get(owner or "", {})
            if owner is None and len(component_ids) > 1:
                self._warnings.append(
                    f"{where} names {len(component_ids)} actual components and {len(actuals)} actuals do not say which "
                    "they belong to: kept without a serial number"
                )
            if owner is not None and owner not in components:
                self._warnings.append(f"{where}: actual component {owner} is not in ActualComponentSets")
            times = [a.time for a in actuals if a.time is not None]
            when = mr_time or comp.get("time") or (min(times) if times else None) or file_time
            out.append(
                InspectionResult(
                    actuals=tuple(actuals),
                    where=where + (f" component {owner}" if len(groups) > 1 else ""),
                    serial=comp.get("serial"),
                    time=when,
                    lot=comp.get("lot"),
                    status=status if len(groups) == 1 else comp.get("status") or status,
                    qpid=qpid,
                )
            )
        return out

    def _actual(self, doc: _Doc, cm: Any) -> Actual:
        kind = _local(cm).removesuffix("CharacteristicMeasurement")
        dimension = (
            Dimension.ANGLE if kind in ANGULAR_TYPES else Dimension.OTHER if kind in OTHER_QUANTITY_TYPES else Dimension.LENGTH
        )
        parts: dict[str, Any] = {}
        for child in _children(cm):  # one pass over the measurement's elements (finds are costly)
            parts.setdefault(_local(child), child)
        item_ref = parts.get("CharacteristicItemId")
        characteristic, nominal, lower, upper, item_extra = self._item(doc, cm, item_ref, kind, dimension)
        extra: dict[str, Any] = {"qif_id": cm.get("id"), **item_extra}
        value_el = parts.get("Value")
        if kind == "SurfaceTexture":
            value_el = parts.get("RoughnessAverageValue")
        elif kind == "Thread":
            value_el = parts.get("PitchDiameter", parts.get("FunctionalSize"))
        unit_name, value = self._value(doc, value_el, dimension)
        for name in ("MaxValue", "MinValue", "Bonus", "WorstPositiveDeviation", "WorstNegativeDeviation"):
            if name in parts:
                _, v = self._value(doc, parts[name], dimension)
                if v is not None:
                    extra[_snake(name)] = v
        if value_el is not None:
            places = value_el.get("decimalPlaces")
            if places is not None and places.strip().isdigit():
                extra["decimal_places"] = int(places)
        devices = [t for t in (_text(i) for i in _children(parts.get("MeasurementDeviceIds"))) if t]
        if devices:
            extra["devices"] = [_text(_child(doc.ids.get(d), "Name")) or d for d in devices]
        status_el = parts.get("Status")
        status = None
        if status_el is not None:
            status = normalise_status(
                _text(_child(status_el, "CharacteristicStatusEnum")) or _text(_child(status_el, "OtherCharacteristicStatus"))
            )
        return Actual(
            characteristic=characteristic,
            value=value,
            unit=unit_name,
            status=status,
            nominal=nominal,
            lower=lower,
            upper=upper,
            time=self._time(parts.get("TimeStamp")),
            extra={k: v for k, v in extra.items() if v is not None},
        )

    def _item(self, doc: _Doc, cm: Any, item_ref: Any, kind: str, dimension: Dimension) -> _ItemInfo:
        """The characteristic an actual measures, with its nominal, limits and what else its
        definition says; worked out once per item (every part's actual points at the same one)."""
        key = (id(doc), _text(item_ref), None if item_ref is None else item_ref.get("xId"), kind)
        cached = self._items.get(key)
        if cached is not None:
            return cached
        resolved = self._resolve(doc, item_ref) if item_ref is not None else None
        extra: dict[str, Any] = {}
        if resolved is None:
            self._warnings.append(
                f"characteristic measurement id={cm.get('id')}: its item {_text(item_ref)!r} is not in the file or its plan; "
                "kept under that name without nominal or limits"
            )
            found: _ItemInfo = (
                Characteristic(name=f"item {_text(item_ref)}", type=kind),
                None,
                None,
                None,
                extra,
            )
        else:
            item_doc, item = resolved
            nominal, lower, upper = self._limits(item_doc, item, kind, dimension, extra)
            found = (self._characteristic(item, kind), nominal, lower, upper, extra)
        self._items[key] = found
        return found

    def _value(self, doc: _Doc, el: Any, dimension: Dimension) -> tuple[str | None, float | None]:
        """(unit name, value in mm/degree or as given) of a value element."""
        if el is None:
            return None, None
        raw = _number(el)
        if raw is None:
            if _text(el) is not None:
                self._warnings.append(f"value {_text(el)!r} of {_local(el.getparent())} is not a number; kept as missing")
            return None, None
        unit_attr = next((v for k, v in el.attrib.items() if isinstance(k, str) and k.endswith("Unit")), None)
        if dimension is Dimension.OTHER:
            return (unit_attr or ""), raw
        unit = doc.units.unit(dimension, unit_attr)
        if unit is None:
            self._warnings.append(f"unit {unit_attr!r} of {_local(el.getparent())} is unknown; value kept as given")
            return unit_attr, raw
        return ("mm" if dimension is Dimension.LENGTH else "deg"), unit.convert(raw)

    def _characteristic(self, item: Any, kind: str) -> Characteristic:
        name = _text(_child(item, "Name"))
        designator = _text(_child(item, "CharacteristicDesignator", "Designator"))
        uuid = _text(_child(item, "UUID")) or _text(_child(item, "CharacteristicDesignator", "UUID"))
        uuid = uuid or _text(_child(item, "ItemQPId"))
        return Characteristic(
            name=name or designator or f"id {item.get('id')}",
            type=kind,
            designator=designator,
            item_id=item.get("id"),
            uuid=uuid.lower() if uuid else None,
        )

    def _limits(
        self, doc: _Doc, item: Any, kind: str, dimension: Dimension, extra: dict[str, Any]
    ) -> tuple[float | None, float | None, float | None]:
        """(nominal, lower, upper) of a characteristic item, in the item document's units."""
        nominal_ref = _child(item, "CharacteristicNominalId")
        found = self._resolve(doc, nominal_ref) if nominal_ref is not None else None
        if found is None:
            return None, None, None
        ndoc, nominal_el = found
        _, nominal = self._value(ndoc, _child(nominal_el, "TargetValue"), dimension)
        def_ref = _child(nominal_el, "CharacteristicDefinitionId")
        found = self._resolve(ndoc, def_ref) if def_ref is not None else None
        if found is None:
            return nominal, None, None
        ddoc, definition = found
        non = _text(_child(definition, "NonTolerance"))
        if non is not None:
            extra["non_tolerance"] = non
        condition = _text(_child(definition, "MaterialCondition"))
        if condition is not None:
            extra["material_condition"] = condition
        tolerance = _child(definition, "Tolerance")
        if tolerance is not None:
            _, hi = self._value(ddoc, _child(tolerance, "MaxValue"), dimension)
            _, lo = self._value(ddoc, _child(tolerance, "MinValue"), dimension)
            as_limit = (_text(_child(tolerance, "DefinedAsLimit")) or "false").lower() in ("true", "1")
            if not as_limit:
                if nominal is None:
                    if hi is not None or lo is not None:
                        self._warnings.append(f"{kind} item {item.get('id')}: tolerance relative to a missing nominal; no limits")
                    return None, None, None
                hi = None if hi is None else _clean(nominal + hi)
                lo = None if lo is None else _clean(nominal + lo)
            return nominal, lo, hi
        _, zone = self._value(ddoc, _child(definition, "ToleranceValue"), Dimension.LENGTH)
        if kind == "SurfaceTexture":
            _, ra = self._value(ddoc, _child(definition, "RoughnessAverage"), Dimension.LENGTH)
            return nominal, None, ra
        if zone is None:
            return nominal, None, None
        if kind == "PointProfile":
            _, outer = self._value(ddoc, _child(definition, "OuterDisposition"), Dimension.LENGTH)
            _, centre = self._value(ddoc, _child(definition, "UnequallyDisposedZone"), Dimension.LENGTH)
            if outer is not None:
                return nominal, _clean(outer - zone), outer
            mid = centre if centre is not None else 0.0
            return nominal, _clean(mid - zone / 2.0), _clean(mid + zone / 2.0)
        return nominal, None, zone

    def _info(self, doc: _Doc) -> dict[str, Any]:
        root = doc.root
        part = _child(root, "Product", "PartSet", "Part")
        drawing = None
        if part is not None:
            drawing = next((d for d in part.iter(_Q + "PrintedDrawing")), None)
        info: dict[str, Any] = {
            "version": root.get("versionQIF"),
            "qpid": doc.qpid,
            "application": _text(_child(root, "Header", "Application", "Name")),
            "addon": _text(_child(root, "Header", "Application", "AddonName")),
            "length_unit": doc.units.linear.name if doc.units.linear else None,
            "length_unit_defaulted": doc.units.metres_by_default,
            "part_name": _text(_child(part, "Name")) if part is not None else None,
            "model_number": _text(_child(part, "ModelNumber")) if part is not None else None,
            "drawing": _text(_child(drawing, "DrawingNumber")) if drawing is not None else None,
            "drawing_version": _text(_child(drawing, "Version")) if drawing is not None else None,
            "purchase_order": _text(_child(root, "PreInspectionTraceability", "PurchaseOrderNumber")),
            "inspection_mode": _text(_child(root, "PreInspectionTraceability", "InspectionMode")),
            "plans": sorted({str(d.path) for d in self._docs.values() if d is not doc}),
        }
        return {k: v for k, v in info.items() if v not in (None, [])}


def _clean(x: float) -> float:
    """A limit computed from nominal and tolerance without float noise (19 + 0.13 is 19.13, not
    19.130000000000003): rounded to 1e-12, far below any instrument's resolution."""
    return round(x, 12)


def _snake(name: str) -> str:
    out = ""
    for ch in name:
        out += ("_" + ch.lower()) if ch.isupper() and out else ch.lower()
    return out
