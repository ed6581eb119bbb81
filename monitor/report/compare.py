"""One feature's parts with every measurement source side by side: the dashboard's feature page.

The same joins as the batch report (:mod:`monitor.report.sources`: the probe's value of a part as
:func:`monitor.report.data.judge` makes it, each inspection source's first stored result; the
probe's bias against each source, the in-process gauge's correlation study; what became of each
part, :func:`monitor.report.data.part_dispositions`) over the most recent complete parts of one
machine and program, so the dashboard and the report never disagree on the same parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitor.codec import action_text, action_to_dict
from monitor.config import ProgramConfig
from monitor.inspection.config import PROBE_SOURCE
from monitor.model import Feature, PartRecord, PartStatus, PositionFeature, SizeFeature
from monitor.report.data import judge, part_dispositions
from monitor.report.sources import FeatureValue, bias, inspection_values
from monitor.store import StoreReader

__all__ = ["feature_parts"]


def feature_parts(store: StoreReader, program: ProgramConfig, feature: Feature, machine: str, *, last: int) -> dict[str, Any]:
    """Every source's value of ``feature`` on each of the ``last`` most recent complete parts of
    ``machine`` that some source measured (oldest first), the probe's bias against each inspection
    source on those parts, and each part's recorded dispositions (JSON-able)."""
    parts: Sequence[PartRecord] = store.parts(machine=machine, program=program.program, status=PartStatus.COMPLETE, last=last)
    spec = program.features.get(feature.name)
    measured_by = dict(spec.measured_by) if spec is not None else {}
    names = ([PROBE_SOURCE] if feature.signals else []) + [s for s in measured_by if s != PROBE_SOURCE]
    values: dict[str, list[FeatureValue]] = {name: [] for name in names}
    if feature.signals:
        for p in parts:
            judged = judge(feature, p.measurements)
            if judged is not None:
                values[PROBE_SOURCE].append(FeatureValue(p.machine, p.part_number, p.key, judged[0], judged[1]))
    others = [s for s in names if s != PROBE_SOURCE]
    if others:
        inspected = inspection_values(store, program, parts)
        for s in others:
            values[s] = inspected.get((feature.name, s), ([], 0))[0]
    by_part: dict[str, dict[str, FeatureValue]] = {}
    for s, vs in values.items():
        for v in vs:
            by_part.setdefault(v.part_key, {})[s] = v
    done = part_dispositions(store, program.program, [p for p in parts if p.key in by_part])
    rows = []
    for p in parts:
        mine = by_part.get(p.key)
        if not mine:
            continue
        rows.append(
            {
                "part_number": p.part_number,
                "key": p.key,
                "end": p.end.isoformat(),
                "values": {s: {"value": v.value, "in_tolerance": v.in_tolerance} for s, v in mine.items()},
                "out_of_tolerance": any(not v.in_tolerance for v in mine.values()),
                "dispositions": [{**action_to_dict(a), "text": action_text(a)} for a in done.get(p.key, ())],
            }
        )
    kind = "position" if isinstance(feature, PositionFeature) else feature.kind
    raw_unit = "mm" if isinstance(feature, PositionFeature) else feature.unit
    unit = "°" if raw_unit == "deg" else raw_unit
    biases = []
    if feature.signals:
        for s in others:
            b = bias(feature, values[PROBE_SOURCE], values[s], s)
            if b is not None:
                biases.append(
                    {
                        "source": s,
                        "n": b.n,
                        "mean": b.mean,
                        "ci": [b.lo, b.hi],
                        "sd": b.sd,
                        "r": b.r,
                        "share": b.share,
                        "text": b.text(unit),
                    }
                )
    if isinstance(feature, SizeFeature):
        limits = {"lower": feature.lower, "upper": feature.upper}
    elif isinstance(feature, PositionFeature):
        limits = {"lower": None, "upper": feature.tolerance}
    else:
        limits = {"lower": None, "upper": None}
    return {
        "kind": kind,
        "unit": raw_unit,
        "limits": limits,
        "sources": [
            {
                "source": s,
                "system": measured_by[s].system if s in measured_by else None,
                "resolution": measured_by[s].resolution if s in measured_by else None,
                "n": len(values[s]),
            }
            for s in names
        ],
        "parts": rows,
        "bias": biases,
        "scope": len(parts),
    }
