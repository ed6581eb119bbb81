"""CSV exports of a CMM or a gauge in: one row per part and characteristic.

The columns (names matched without regard to case or surrounding blanks; a program file's
``inspection.csv.columns`` maps them to the names a CMM writes)::

    characteristic   required: the characteristic's name or balloon number
    value            the measured value (empty for a go/no-go gauge)
    status           the verdict: pass/fail, ok/nok, go/no-go, ... (PASS, FAIL as in QIF)
    serial           the part's serial number (matched against part.id)
    part             the part's number in the run (with machine and program)
    machine, program which machine made it, which program (else the import's --machine/--program)
    time             when it was measured: ISO 8601, or inspection.csv.time_format
    lot              lot or batch id
    nominal          the nominal value
    lower, upper     absolute limits (one of them alone: a one-sided limit)
    lower_tol, upper_tol   limits as deviations from the nominal (-0.013 / +0.013)
    unit             the row's unit (mm, um, in, deg, rad); else inspection.csv.unit
    type             the characteristic type (Diameter, Flatness, ...), if the export says
    designator       the balloon number, when the characteristic column holds a name

Every other column is kept with the row. A row whose value is not a number is kept with no value
and a warning; nothing is dropped. Rows of one part (same serial, part, machine and program; same
time too when neither serial nor part is given) are one part's results.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from monitor.errors import InspectionError
from monitor.inspection.model import Actual, Characteristic, InspectionDocument, InspectionResult, normalise_status
from monitor.inspection.units import Dimension, Unit, known_unit
from monitor.inspection.xmlsafe import DEFAULT_MAX_BYTES

__all__ = ["COLUMNS", "CsvLayout", "read_csv"]

COLUMNS = (
    "characteristic",
    "value",
    "status",
    "serial",
    "part",
    "machine",
    "program",
    "time",
    "lot",
    "nominal",
    "lower",
    "upper",
    "lower_tol",
    "upper_tol",
    "unit",
    "type",
    "designator",
)
"""The columns the importer understands, by their canonical names."""


@dataclass(frozen=True)
class CsvLayout:
    """How to read a CSV export: the column names, delimiter, decimal mark, unit, time format.

    ``columns`` maps canonical names to the names in the file; unmapped names are looked for under
    their canonical name. ``delimiter`` None detects one of ``, ; tab |`` from the header line.
    ``lower_tol`` ``signed`` reads -0.013 as 0.013 below nominal; ``magnitude`` reads 0.013 so."""

    columns: dict[str, str] = field(default_factory=dict)
    delimiter: str | None = None
    decimal: str = "."
    unit: str = "mm"
    time_format: str | None = None
    encoding: str = "utf-8-sig"
    skip_rows: int = 0
    lower_tol: str = "signed"


def read_csv(
    path: Path,
    layout: CsvLayout,
    *,
    timezone: tzinfo = UTC,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> InspectionDocument:
    """The parts' results in the CSV file at ``path``; :class:`InspectionError` naming the file and
    the reason when it cannot be read (missing, too big, not text in its encoding, no header, no
    characteristic column)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InspectionError(path, f"{size} bytes is more than the {max_bytes} byte limit for one file")
        data = path.read_bytes()
    except OSError as exc:
        raise InspectionError(path, f"cannot read it: {exc.strerror or exc}") from exc
    try:
        text = data.decode(layout.encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise InspectionError(path, f"not {layout.encoding} text ({exc}); set inspection.csv.encoding") from exc
    if "\x00" in text:
        raise InspectionError(path, "contains NUL bytes: not a CSV text file")
    lines = text.splitlines(keepends=True)[layout.skip_rows :]
    if not lines or not "".join(lines).strip():
        raise InspectionError(path, "no header line")
    delimiter = layout.delimiter or _detect_delimiter(lines[0])
    reader = csv.reader(io.StringIO("".join(lines)), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise InspectionError(path, f"no readable header line: {exc}") from exc
    index = _column_index(path, header, layout)
    reading = _Rows(path, layout, index, header, timezone)
    try:
        for number, row in enumerate(reader, start=layout.skip_rows + 2):
            if not any(cell.strip() for cell in row):
                continue
            reading.add(number, row)
    except csv.Error as exc:
        raise InspectionError(path, f"line {reader.line_num + layout.skip_rows}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    results = reading.results()
    info = {"columns": header, "delimiter": delimiter, "rows": reading.rows}
    return InspectionDocument(str(path), "csv", digest, tuple(results), tuple(reading.warnings), info)


def _detect_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (";", "\t", ",", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().split())


def _column_index(path: Path, header: list[str], layout: CsvLayout) -> dict[str, int]:
    positions = {_norm(h): i for i, h in reversed(list(enumerate(header)))}
    index: dict[str, int] = {}
    for canonical in COLUMNS:
        wanted = layout.columns.get(canonical, canonical)
        pos = positions.get(_norm(wanted))
        if pos is None and canonical in layout.columns:
            raise InspectionError(
                path, f"column {wanted!r} (inspection.csv.columns.{canonical}) is not in the header: {', '.join(header)}"
            )
        if pos is not None:
            index[canonical] = pos
    if "characteristic" not in index:
        raise InspectionError(
            path,
            "no characteristic column (the header has: " + ", ".join(header) + "); map it in the program file "
            "with inspection.csv.columns.characteristic",
        )
    if "value" not in index and "status" not in index:
        raise InspectionError(path, "neither a value nor a status column; map one with inspection.csv.columns")
    return index


class _Rows:
    """Collects rows into one part's results each, converting as it goes."""

    def __init__(self, path: Path, layout: CsvLayout, index: dict[str, int], header: list[str], tz: tzinfo) -> None:
        self.path = path
        self.layout = layout
        self.index = index
        self.header = header
        self.tz = tz
        self.warnings: list[str] = []
        self.rows = 0
        self._groups: dict[tuple[Any, ...], list[tuple[int, dict[str, Any], Actual]]] = {}
        known = set(index.values())
        self._others = [(i, h) for i, h in enumerate(header) if i not in known]
        default = known_unit(layout.unit)
        if default is None:
            raise InspectionError(path, f"inspection.csv.unit {layout.unit!r} is not a length or angle unit")
        self._default_unit = default

    def _cell(self, row: list[str], name: str) -> str | None:
        pos = self.index.get(name)
        if pos is None or pos >= len(row):
            return None
        value = row[pos].strip()
        return value or None

    def _number(self, line: int, row: list[str], name: str) -> float | None:
        text = self._cell(row, name)
        if text is None:
            return None
        clean = text.replace(" ", "").replace("\u00a0", "")
        if self.layout.decimal == ",":
            clean = clean.replace(".", "").replace(",", ".") if clean.count(",") == 1 else clean.replace(",", ".")
        clean = clean.removeprefix("+")
        try:
            value = float(clean)
        except ValueError:
            self.warnings.append(f"line {line}: {name} {text!r} is not a number; kept as missing")
            return None
        if not math.isfinite(value):
            self.warnings.append(f"line {line}: {name} {text!r} is not a finite number; kept as missing")
            return None
        return value

    def _time(self, line: int, text: str | None) -> datetime | None:
        if text is None:
            return None
        try:
            fmt = self.layout.time_format
            t = datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text)
        except ValueError:
            fmt = self.layout.time_format or "ISO 8601"
            self.warnings.append(f"line {line}: time {text!r} does not read as {fmt}; ignored")
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=self.tz)
        return t.astimezone(UTC)

    def add(self, line: int, row: list[str]) -> None:
        self.rows += 1
        name = self._cell(row, "characteristic")
        if name is None:
            self.warnings.append(f"line {line}: no characteristic; kept as 'line {line}'")
            name = f"line {line}"
        kind = self._cell(row, "type") or ""
        unit_text = self._cell(row, "unit")
        unit: Unit | None = self._default_unit
        if unit_text is not None:
            unit = known_unit(unit_text)
            if unit is None:
                self.warnings.append(f"line {line}: unit {unit_text!r} is unknown; values kept as given with that unit")
        label = unit_text if unit is None else ("mm" if unit.dimension is Dimension.LENGTH else "deg")
        conv: dict[str, float | None] = {}
        for column in ("value", "nominal", "lower", "upper", "lower_tol", "upper_tol"):
            v = self._number(line, row, column)
            conv[column] = v if v is None or unit is None else unit.convert(v)
        nominal, lower, upper = conv["nominal"], conv["lower"], conv["upper"]
        lo_tol, hi_tol = conv["lower_tol"], conv["upper_tol"]
        if self.layout.lower_tol == "magnitude" and lo_tol is not None:
            lo_tol = -abs(lo_tol)
        if (lo_tol is not None or hi_tol is not None) and nominal is None:
            self.warnings.append(f"line {line}: tolerances without a nominal; no limits")
        elif nominal is not None:
            if lower is None and lo_tol is not None:
                lower = round(nominal + lo_tol, 12)
            if upper is None and hi_tol is not None:
                upper = round(nominal + hi_tol, 12)
        unit_name = label if any(v is not None for v in (conv["value"], nominal, lower, upper)) else None
        extra: dict[str, Any] = {"line": line}
        for i, h in self._others:
            if i < len(row) and row[i].strip():
                extra[h.strip() or f"column {i + 1}"] = row[i].strip()
        actual = Actual(
            characteristic=Characteristic(name=name, type=kind, designator=self._cell(row, "designator")),
            value=conv["value"],
            unit=unit_name,
            status=normalise_status(self._cell(row, "status")),
            nominal=nominal,
            lower=lower,
            upper=upper,
            time=self._time(line, self._cell(row, "time")),
            extra=extra,
        )
        part_text = self._cell(row, "part")
        part_number = None
        if part_text is not None:
            try:
                part_number = int(float(part_text))
            except ValueError:
                self.warnings.append(f"line {line}: part {part_text!r} is not a number; ignored")
        ident = (
            self._cell(row, "serial"),
            part_number,
            self._cell(row, "machine"),
            self._cell(row, "program"),
            self._cell(row, "lot"),
        )
        group = (*ident, actual.time if ident[0] is None and ident[1] is None else None)
        self._groups.setdefault(group, []).append((line, {"serial": ident[0], "part": ident[1], "lot": ident[4]}, actual))

    def results(self) -> list[InspectionResult]:
        out: list[InspectionResult] = []
        for (serial, part, machine, program, lot, _), rows in self._groups.items():
            lines = [line for line, _, _ in rows]
            actuals = tuple(a for _, _, a in rows)
            times = [a.time for a in actuals if a.time is not None]
            statuses = {a.status for a in actuals if a.status}
            overall = "FAIL" if "FAIL" in statuses else ("PASS" if statuses == {"PASS"} else None)
            out.append(
                InspectionResult(
                    actuals=actuals,
                    where=_lines(lines),
                    serial=serial,
                    part_number=part,
                    machine=machine,
                    program=program,
                    time=min(times) if times else None,
                    lot=lot,
                    status=overall,
                    grouped_by_rows=True,
                )
            )
        return out


def _lines(lines: Iterable[int]) -> str:
    ordered = sorted(lines)
    if not ordered:
        return "no rows"
    if ordered[-1] - ordered[0] + 1 == len(ordered):
        return f"line {ordered[0]}" if len(ordered) == 1 else f"lines {ordered[0]}-{ordered[-1]}"
    return f"{len(ordered)} lines from {ordered[0]} to {ordered[-1]}"
