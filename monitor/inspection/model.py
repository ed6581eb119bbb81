"""Inspection results as the monitor keeps them: one part's results from a CMM or bench file.

A file (QIF 3 Results, or a CSV export) holds the results of one or more parts. Each part's
results (:class:`InspectionResult`) say what the file knows about which part it was (serial
number, part number, machine, program, time) and carry the characteristic actuals
(:class:`Actual`): the characteristic as the file names it, the measured value in millimetres or
degrees, the file's own verdict, and the nominal and limits the file gives.

Identity, so that importing a file twice changes nothing and the same results exported twice
(one file per part and one file for the batch, with or without UUIDs) are stored once:

- a part's results are identified by their content: the part identification and every actual
  (characteristic, value, verdict, time). Two results of one part that agree in every value and
  time are taken as one measurement; a re-measurement differs in its values or its time;
- a CSV's rows are grouped per part by (serial, part, machine, program, time), and each row is
  identified by its content and its occurrence among identical rows, so a CSV that grows (the CMM
  appends to the day's file) adds only its new rows;
- an actual is identified within its results by its characteristic and its occurrence among the
  actuals of that characteristic (a "2X" callout measured on two holes has two).

QIF ids are unique only inside one document (every single-part file of a set may start at the
same id), so they never identify anything across files.

These objects are plain data (no I/O) shared by the parsers, the store and the reports.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "Actual",
    "Characteristic",
    "InspectionDocument",
    "InspectionResult",
    "MatchMethod",
    "StoredResult",
    "actual_from_dict",
    "actual_to_dict",
    "normalise_status",
    "result_from_dict",
    "result_to_dict",
]


_PASS_WORDS = frozenset({"pass", "passed", "ok", "go", "good", "accept", "accepted", "in", "yes", "true", "1", "i.o.", "io"})
_FAIL_WORDS = frozenset(
    {"fail", "failed", "nok", "nogo", "no-go", "no go", "bad", "reject", "rejected", "out", "no", "false", "0", "n.i.o.", "nio"}
)
_QIF_STATUSES = frozenset(
    {"PASS", "FAIL", "REWORK", "SYSERROR", "INDETERMINATE", "NOT_ANALYZED", "BASIC_OR_TED", "UNDEFINED", "INPROGRESS"}
)


def normalise_status(text: str | None) -> str | None:
    """A verdict as QIF spells it (PASS, FAIL, REWORK...), from QIF or from a gauge's words.

    >>> normalise_status("NOK"), normalise_status(" go "), normalise_status("Basic_or_TED"), normalise_status("")
    ('FAIL', 'PASS', 'BASIC_OR_TED', None)
    """
    if text is None:
        return None
    word = " ".join(text.strip().split())
    if not word:
        return None
    if word.upper() in _QIF_STATUSES:
        return word.upper()
    low = word.lower()
    if low in _PASS_WORDS:
        return "PASS"
    if low in _FAIL_WORDS:
        return "FAIL"
    return word.upper()


@dataclass(frozen=True, slots=True)
class Characteristic:
    """A characteristic as the file names it.

    ``name`` is the item's name (QIF ``Name``; the CSV's characteristic column), ``designator``
    the characteristic designator (the balloon number on the drawing, QIF
    ``CharacteristicDesignator/Designator``), ``type`` the QIF characteristic type (Diameter,
    Position, Flatness...; a CSV may give one), ``item_id`` the QIF id of the item inside its
    document and ``uuid`` its UUID or QPId when the file gives one."""

    name: str
    type: str = ""
    designator: str | None = None
    item_id: str | None = None
    uuid: str | None = None

    def matches(self, ref: str) -> bool:
        """True when a program file's ``characteristic:`` entry names this characteristic: by
        name, designator, UUID, or ``id:<n>`` (the QIF id inside the file)."""
        ref = ref.strip()
        if ref.startswith("id:"):
            return self.item_id is not None and self.item_id == ref[3:].strip()
        return ref in (self.name, self.designator) or (self.uuid is not None and ref.lower() == self.uuid.lower())

    @property
    def identity(self) -> str:
        """What identifies the characteristic across files: type, name and designator (never the
        document-local id, nor a UUID one export writes and another leaves out)."""
        return "\x1f".join((self.type, self.name, self.designator or ""))


@dataclass(frozen=True, slots=True)
class Actual:
    """One measured characteristic of one part.

    ``value`` is in millimetres (lengths) or degrees (angles); other quantities keep the file's
    unit, named in ``unit``. A gauge that only says go/no-go (QIF: a characteristic measured with a
    hard gauge, no ``Value``) has ``value`` None and its verdict in ``status``. ``lower`` and
    ``upper`` are absolute limits in the same unit (one of them None for a one-sided limit: a form
    tolerance has only an upper one). ``extra`` keeps what else the file says (maximum and minimum
    value, bonus tolerance, decimal places, the QIF id, measurement device)."""

    characteristic: Characteristic
    value: float | None
    unit: str | None = None
    status: str | None = None
    nominal: float | None = None
    lower: float | None = None
    upper: float | None = None
    time: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bonus(self) -> float:
        """Bonus tolerance the CMM granted (material condition), added to the upper limit."""
        b = self.extra.get("bonus")
        return float(b) if isinstance(b, (int, float)) and math.isfinite(b) else 0.0

    def in_tolerance(self) -> bool | None:
        """Judged against the limits when there are a value and a limit, else the file's verdict
        (PASS true; FAIL and REWORK false); None when neither says."""
        if self.value is not None and (self.lower is not None or self.upper is not None):
            if self.lower is not None and self.value < self.lower:
                return False
            return not (self.upper is not None and self.value > self.upper + self.bonus)
        if self.status == "PASS":
            return True
        if self.status in ("FAIL", "REWORK"):
            return False
        return None

    def content(self) -> list[Any]:
        """What identifies this actual's measurement (the characteristic, value, verdict, time)."""
        return [
            self.characteristic.identity,
            None if self.value is None else repr(float(self.value)),
            self.unit,
            self.status,
            self.time.isoformat() if self.time else None,
        ]


@dataclass(frozen=True, slots=True)
class InspectionResult:
    """One part's results in one file: who the part was, and its actuals in file order.

    ``where`` says where in the file they came from (``MeasurementResults id=199``, ``rows
    2-14``) for messages. ``status`` is the file's overall verdict for the part."""

    actuals: tuple[Actual, ...]
    where: str
    serial: str | None = None
    part_number: int | None = None
    machine: str | None = None
    program: str | None = None
    time: datetime | None = None
    lot: str | None = None
    status: str | None = None
    qpid: str | None = None
    grouped_by_rows: bool = False
    """True for CSV results: identified by the part fields, each row by its content (see module doc)."""

    def key(self) -> str:
        """The identity of these results (see the module docstring)."""
        head: list[Any] = [
            self.serial,
            self.part_number,
            self.machine,
            self.program,
            self.time.isoformat() if self.time else None,
        ]
        if self.grouped_by_rows:
            return "csv:" + _digest(head)
        return "res:" + _digest([head, self.lot, self.status, [a.content() for a in self.actuals]])

    def actual_keys(self) -> list[str]:
        """One key per actual, in order: unique within the results, equal across files for the same measurement."""
        base = self.key()
        seen: Counter[str] = Counter()
        keys: list[str] = []
        for actual in self.actuals:
            ident = _digest(actual.content()) if self.grouped_by_rows else actual.characteristic.identity
            n = seen[ident]
            seen[ident] += 1
            keys.append(_digest([base, ident, n]))
        return keys


@dataclass(frozen=True, slots=True)
class InspectionDocument:
    """What a parser read from one file: its results and what the importer should say about it."""

    path: str
    format: str
    sha256: str
    results: tuple[InspectionResult, ...]
    warnings: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    """About the file: QIF version, document QPId, the application that wrote it, units, product."""

    @property
    def actual_count(self) -> int:
        return sum(len(r.actuals) for r in self.results)


class MatchMethod(StrEnum):
    """How results were tied to a part record."""

    SERIAL = "serial"
    """The file's serial number equals the part's ``part.id`` (written by the probing macro)."""
    PART_NUMBER = "part_number"
    """The file's part number (or a serial that is a plain number) is the part's number in the run."""
    TIME = "time"
    """The part of that machine and program that ended last before the inspection time (within the window)."""
    GIVEN = "given"
    """The importer was told the part (``monitor import --part N``)."""


@dataclass(frozen=True, slots=True)
class StoredResult:
    """Results as stored: the results, their key, the file and the part they were matched to."""

    key: str
    result: InspectionResult
    actual_keys: tuple[str, ...]
    file: str
    imported_at: datetime
    seq: int
    part_key: str | None = None
    matched_by: MatchMethod | None = None
    note: str | None = None
    """Why results are unmatched, or what a match relied on."""


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# ------------------------------------------------------------------------------------ codecs
def actual_to_dict(actual: Actual) -> dict[str, Any]:
    """JSON-able form of an actual (the store keeps it so)."""
    c = actual.characteristic
    return {
        "characteristic": {"name": c.name, "type": c.type, "designator": c.designator, "item_id": c.item_id, "uuid": c.uuid},
        "value": actual.value,
        "unit": actual.unit,
        "status": actual.status,
        "nominal": actual.nominal,
        "lower": actual.lower,
        "upper": actual.upper,
        "time": actual.time.isoformat() if actual.time else None,
        "extra": actual.extra,
    }


def actual_from_dict(d: dict[str, Any]) -> Actual:
    c = d["characteristic"]
    return Actual(
        characteristic=Characteristic(c["name"], c.get("type") or "", c.get("designator"), c.get("item_id"), c.get("uuid")),
        value=d.get("value"),
        unit=d.get("unit"),
        status=d.get("status"),
        nominal=d.get("nominal"),
        lower=d.get("lower"),
        upper=d.get("upper"),
        time=datetime.fromisoformat(d["time"]) if d.get("time") else None,
        extra=dict(d.get("extra") or {}),
    )


def result_to_dict(result: InspectionResult) -> dict[str, Any]:
    """JSON-able form of results without their actuals (stored apart, one row each)."""
    return {
        "where": result.where,
        "serial": result.serial,
        "part_number": result.part_number,
        "machine": result.machine,
        "program": result.program,
        "time": result.time.isoformat() if result.time else None,
        "lot": result.lot,
        "status": result.status,
        "qpid": result.qpid,
        "grouped_by_rows": result.grouped_by_rows,
    }


def result_from_dict(d: dict[str, Any], actuals: tuple[Actual, ...]) -> InspectionResult:
    return InspectionResult(
        actuals=actuals,
        where=d.get("where") or "",
        serial=d.get("serial"),
        part_number=d.get("part_number"),
        machine=d.get("machine"),
        program=d.get("program"),
        time=datetime.fromisoformat(d["time"]) if d.get("time") else None,
        lot=d.get("lot"),
        status=d.get("status"),
        qpid=d.get("qpid"),
        grouped_by_rows=bool(d.get("grouped_by_rows")),
    )
