"""The batch report's measurement table as CSV: one row per part, each feature's probe value and
verdict, each inspection source's (``<feature>@cmm``, ``<feature>@cmm_ok``; a go/no-go value is 1
for a fail), what became of the part (``disposition``: quarantined, scrapped, reworked, accepted,
with who and when; "no disposition recorded" for an out-of-tolerance part without one) and what was
done to the process under its conditions (``process_actions``), then the raw probe values. Text
that could run as a spreadsheet formula is neutralised."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from monitor.inspection.config import PROBE_SOURCE
from monitor.model import PositionFeature
from monitor.report.data import BatchReport, FeatureValue, PartDisposition

__all__ = ["MEASUREMENT_COLUMNS", "render_csv", "render_measurements_csv"]


def _csv_columns(report: BatchReport) -> list[str]:
    cols = ["machine", "program", "part", "status", "end", "key"]
    for f in report.features:
        if f.feature.signals:
            cols.append(f"{f.name}_tp" if f.kind == "position" else f.name)
            if isinstance(f.feature, PositionFeature):
                cols.extend(f"{f.name}_d{axis}" for axis, _ in f.feature.axes)
            cols.append(f"{f.name}_ok")
        for s in f.sources:
            if s.source != PROBE_SOURCE:
                cols += [f"{f.name}@{s.source}", f"{f.name}@{s.source}_ok"]
    signals = sorted({s for p in report.parts for s in p.measurements})
    return [*cols, "disposition", "process_actions", *signals]


def _part_dispositions(report: BatchReport) -> dict[str, tuple[str, str]]:
    """Per part key: (what became of the part, what was done to the process), as the report words them."""
    bad: dict[str, list[PartDisposition]] = {}
    for f in report.features:
        for src in f.sources:
            for v in src.out_of_tolerance:
                bad.setdefault(v.part_key, []).append(report.disposition(f.name, src.source, v.part_key))
    out: dict[str, tuple[str, str]] = {}
    for p in report.parts:
        found = bad.get(p.key, [])
        done = PartDisposition(report.part_actions.get(p.key, ())).part_text()
        process = "; ".join(dict.fromkeys(t for d in found if (t := d.process_text())))
        if found and not done:
            done = "no disposition recorded"
        out[p.key] = (done, process)
    return out


def render_csv(report: BatchReport) -> str:
    """The measurement table: one row per part, each feature's value and verdict, then the raw probe values."""
    by_part: dict[str, dict[str, FeatureValue]] = {}
    for f in report.features:
        for v in f.values:
            by_part.setdefault(v.part_key, {})[f.name] = v
    inspected: dict[str, dict[tuple[str, str], FeatureValue]] = {}
    for f in report.features:
        for src in f.sources:
            if src.source != PROBE_SOURCE:
                for v in src.values:
                    inspected.setdefault(v.part_key, {})[(f.name, src.source)] = v
    columns = _csv_columns(report)
    dispositions = _part_dispositions(report)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for p in report.parts:
        row: dict[str, Any] = {
            "machine": p.machine,
            "program": p.program,
            "part": p.part_number,
            "status": p.status.value,
            "end": p.end.isoformat(),
            "key": p.key,
        }
        for f in report.features:
            fv = by_part.get(p.key, {}).get(f.name)
            col = f"{f.name}_tp" if f.kind == "position" else f.name
            row[col] = _num(fv.value) if fv else ""
            if fv is not None:
                for axis, d in fv.deviations.items():
                    row[f"{f.name}_d{axis}"] = _num(d)
            row[f"{f.name}_ok"] = "" if fv is None else ("yes" if fv.in_tolerance else "no")
        for (name, source), v in inspected.get(p.key, {}).items():
            row[f"{name}@{source}"] = _num(v.value)
            row[f"{name}@{source}_ok"] = "yes" if v.in_tolerance else "no"
        row["disposition"], row["process_actions"] = dispositions[p.key]
        for s, value in p.measurements.items():
            row[s] = _num(value)
        writer.writerow([_csv_safe(row.get(c, "")) for c in columns])
    return buf.getvalue()


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if math.isfinite(x) else ""


def _csv_safe(value: Any) -> Any:
    """Text starting with = + - @ could run as a formula in a spreadsheet: prefix a quote (OWASP).

    >>> _csv_safe("=HYPERLINK(1)"), _csv_safe("-0.5"), _csv_safe("vmc-01")
    ("'=HYPERLINK(1)", '-0.5', 'vmc-01')
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


MEASUREMENT_COLUMNS = (
    "machine",
    "part",
    "source",
    "feature",
    "characteristic",
    "value",
    "unit",
    "status",
    "in_tolerance",
    "time",
    "file",
    "key",
)


def render_measurements_csv(report: BatchReport) -> str:
    """Every measurement of every source, one row each (re-measurements included): the probe's
    signals and every inspection actual, with the feature and source it measures."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MEASUREMENT_COLUMNS)
    for m in report.measurements:
        ok = "" if m.in_tolerance is None else ("yes" if m.in_tolerance else "no")
        value = "" if m.value is None else _num(m.value)
        row = [m.machine, m.part_number, m.source, m.feature or "", m.characteristic, value, m.unit or "", m.status or ""]
        writer.writerow([_csv_safe(x) for x in [*row, ok, m.time or "", m.file or "", m.part_key]])
    return buf.getvalue()
