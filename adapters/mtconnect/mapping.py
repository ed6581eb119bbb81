"""Resolve a machine's ``signals:`` to data items of the agent's device model, and turn values into numbers.

A signal is chosen by data item id (a plain string, or ``{id: ...}``), by name, or by type (+
subType) within a device and, optionally, a component (its id, name, type, or a ``Type[name]``
path label). ``key`` picks one entry of a DATA_SET/TABLE item (probe results published as macro
variables), or the ToolLife type of a CuttingTool asset when the item is ``ASSET_CHANGED``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters.mtconnect.config import MtConnectSignal
from adapters.mtconnect.documents import DataItem, Device, DevicesDocument, ObservedValue
from monitor.errors import AdapterError

__all__ = ["TEXT_SIGNALS", "Binding", "condition_level", "convert", "resolve", "select_devices", "suggest_signal"]

TEXT_SIGNALS = frozenset({"program.name", "execution"})
"""Canonical signals whose values stay text even when they look like numbers (program "1234")."""

_LEVEL_RANK = {"Fault": 3, "Warning": 2, "Normal": 1}


@dataclass(frozen=True, slots=True)
class Binding:
    """One canonical signal bound to one data item (and optionally one key of its value)."""

    signal: str
    item: DataItem
    key: str | None = None

    @property
    def reads_asset(self) -> bool:
        return self.item.type == "ASSET_CHANGED"


def select_devices(doc: DevicesDocument, device: str | None) -> list[Device]:
    """The configured device (by name or uuid), or every machine device when none is configured."""
    machines = [d for d in doc.devices if d.element != "Agent"]
    if device is None:
        return machines
    chosen = [d for d in machines if device in (d.name, d.uuid, d.id)]
    if not chosen:
        names = ", ".join(d.name for d in machines) or "none"
        raise AdapterError(f"the agent has no device {device!r} (it has: {names}); fix source.device")
    return chosen


def _component_matches(item: DataItem, component: str) -> bool:
    if component in (item.component_id, item.component_name, item.component_type):
        return True
    for label in item.path:
        if component == label:
            return True
        base, _, rest = label.partition("[")
        if component in (base, rest.rstrip("]")):
            return True
    return "/" in component and item.path_text.endswith(component)


def _find(items: Sequence[DataItem], signal: str, spec: str | MtConnectSignal) -> DataItem:
    if isinstance(spec, str):
        hits = [i for i in items if i.id == spec] or [i for i in items if i.name == spec]
        what = f"id or name {spec!r}"
    elif spec.id:
        hits = [i for i in items if i.id == spec.id]
        what = f"id {spec.id!r}"
    else:
        hits = list(items)
        if spec.component:
            hits = [i for i in hits if _component_matches(i, spec.component)]
        if spec.name:
            hits = [i for i in hits if i.name == spec.name]
        if spec.type:
            hits = [i for i in hits if i.type == spec.type]
        if spec.subType:
            hits = [i for i in hits if i.sub_type == spec.subType]
        what = ", ".join(
            f"{k}={v!r}"
            for k, v in (("name", spec.name), ("type", spec.type), ("subType", spec.subType), ("component", spec.component))
            if v
        )
    if not hits:
        raise AdapterError(f"signal {signal}: no data item with {what}; run `monitor discover URL` to list them")
    if len(hits) > 1:
        ids = ", ".join(h.id for h in hits[:6])
        raise AdapterError(f"signal {signal}: {len(hits)} data items match {what} ({ids}); add component or subType")
    return hits[0]


def resolve(doc: DevicesDocument, device: str | None, signals: Mapping[str, str | MtConnectSignal]) -> list[Binding]:
    """Bind every configured signal, or raise AdapterError naming each one that does not resolve."""
    items = [i for d in select_devices(doc, device) for i in d.data_items]
    out: list[Binding] = []
    problems: list[str] = []
    for signal, spec in signals.items():
        try:
            item = _find(items, signal, spec)
        except AdapterError as exc:
            problems.append(str(exc))
            continue
        out.append(Binding(signal, item, None if isinstance(spec, str) else spec.key))
    if problems:
        raise AdapterError("; ".join(problems))
    return out


def convert(signal: str, value: ObservedValue) -> float | str | None:
    """A stream value as an Observation value: numbers as floats, text kept for text signals.

    NaN is None (UNAVAILABLE) except for a probe result, where it is what the probing macro wrote:
    kept (as the one ``math.nan`` object, so a value read twice compares equal), so the tracker counts
    it and notes it on its part instead of taking it for "the controller has no value".

    >>> convert("spindle.load", "12.5"), convert("program.name", "1234"), convert("part.count", None)
    (12.5, '1234', None)
    >>> convert("spindle.load", "NaN"), convert("probe.hole1_x", "NaN") is math.nan
    (None, True)
    """
    if value is None:
        return None
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if signal in TEXT_SIGNALS:
        return value
    try:
        f = float(value)
    except ValueError:
        return value
    if f == f:
        return f
    return math.nan if signal.startswith("probe.") else None


def condition_level(levels: Sequence[str | None]) -> str | None:
    """The most severe active level (FAULT > WARNING > NORMAL), None when unavailable."""
    best = max((lv for lv in levels if lv), key=lambda lv: _LEVEL_RANK.get(lv, 0), default=None)
    return best.upper() if best else None


_SUGGEST: dict[tuple[str, str | None], str] = {
    ("LOAD", None): "spindle.load",
    ("ROTARY_VELOCITY", None): "spindle.speed",
    ("SPINDLE_SPEED", None): "spindle.speed",
    ("ROTARY_VELOCITY_OVERRIDE", None): "spindle.override",
    ("SPINDLE_OVERRIDE", None): "spindle.override",
    ("TOOL_NUMBER", None): "tool.number",
    ("PART_COUNT", None): "part.count",
    ("PROGRAM", None): "program.name",
    ("EXECUTION", None): "execution",
}


def suggest_signal(item: DataItem) -> str | None:
    """The canonical signal a data item looks like (spindle load on a rotary axis, part count...).

    A CONDITION item is a state (normal, warning, fault), never a value; spindle.load is a percentage,
    so a LOAD in newtons (or any unit but PERCENT) is not suggested as one."""
    if item.category == "CONDITION":
        return None
    if item.type == "LOAD" and not any(p.startswith(("Rotary", "Spindle")) for p in item.path):
        return None
    if item.type == "LOAD" and (item.units or "PERCENT").upper() != "PERCENT":
        return None
    if item.type == "MEASUREMENT_VALUE":
        return f"probe.{item.name or item.id}"
    if item.type == "PROGRAM" and item.sub_type not in (None, "MAIN", "ACTIVE"):
        return None
    if item.type == "PART_COUNT" and item.sub_type not in (None, "ALL", "GOOD", "TARGET"):
        return None
    if item.type in ("ROTARY_VELOCITY", "SPINDLE_SPEED") and item.sub_type not in (None, "ACTUAL"):
        return None
    return _SUGGEST.get((item.type, None))
