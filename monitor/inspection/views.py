"""Imported inspection results as rows for the CLI and reports, with the feature each measures.

A result file names characteristics; the program file's ``measured_by`` says which feature and
source each one is. That mapping is applied when results are read, not when they are imported, so
a mapping added to the program file later applies to everything imported before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.config import ProgramConfig, Site
from monitor.inspection.model import Actual
from monitor.model import PartRecord
from monitor.store import StoreReader

__all__ = ["InspectionValue", "actual_rows", "inspection_values", "unmatched_rows"]


@dataclass(frozen=True, slots=True)
class InspectionValue:
    """One actual of a matched part with the feature and source it measures (both None when no
    feature of the part's program names its characteristic)."""

    part: PartRecord
    actual: Actual
    key: str
    results_key: str
    file: str
    feature: str | None
    source: str | None


def inspection_values(
    site: Site,
    store: StoreReader,
    parts: list[PartRecord],
) -> list[InspectionValue]:
    """Every actual matched to ``parts``, in part order and then file order, mapped to features."""
    by_key = {p.key: p for p in parts}
    out: list[InspectionValue] = []
    stored = store.inspection_results(part_keys=list(by_key))
    order = {p.key: i for i, p in enumerate(parts)}
    stored.sort(key=lambda s: (order.get(s.part_key or "", 0), s.seq))
    for s in stored:
        part = by_key[s.part_key or ""]
        program: ProgramConfig | None = site.programs.get(part.program)
        for key, actual in zip(s.actual_keys, s.result.actuals, strict=True):
            mapped = program.feature_source(actual.characteristic) if program is not None else None
            out.append(
                InspectionValue(part, actual, key, s.key, s.file, mapped[0] if mapped else None, mapped[1] if mapped else None)
            )
    return out


def actual_rows(values: list[InspectionValue]) -> list[dict[str, Any]]:
    """One flat row per actual (for ``monitor inspections`` and ``--json``)."""
    rows = []
    for v in values:
        a = v.actual
        ok = a.in_tolerance()
        rows.append(
            {
                "machine": v.part.machine,
                "program": v.part.program,
                "part": v.part.part_number,
                "serial": v.part.part_id,
                "characteristic": a.characteristic.name,
                "type": a.characteristic.type,
                "designator": a.characteristic.designator,
                "feature": v.feature,
                "source": v.source,
                "value": a.value,
                "unit": a.unit,
                "nominal": a.nominal,
                "lower": a.lower,
                "upper": a.upper,
                "status": a.status,
                "in_tolerance": ok,
                "time": a.time.isoformat() if a.time else None,
                "file": v.file,
                "key": v.key,
            }
        )
    return rows


def unmatched_rows(store: StoreReader) -> list[dict[str, Any]]:
    """One row per part's results not yet tied to a part, with the reason."""
    rows = []
    for s in store.inspection_results(unmatched=True):
        r = s.result
        rows.append(
            {
                "file": s.file,
                "where": r.where,
                "serial": r.serial,
                "part_number": r.part_number,
                "machine": r.machine,
                "program": r.program,
                "time": r.time.isoformat() if r.time else None,
                "actuals": len(r.actuals),
                "status": r.status,
                "reason": s.note,
                "key": s.key,
            }
        )
    return rows
