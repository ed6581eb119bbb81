"""The device model our agent serves: devices, nested components and their data items.

A model is built in code (see :mod:`monitor.sim.mtconnect_agent`) or read from a real agent's
device file (:func:`devices_from_xml`), so the agent can stand in for a machine whose SHDR log we
replay. Only the parts a client needs are kept (components and data items); descriptions,
configuration and kinematics are not served.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from adapters.mtconnect.parser import safe_tree
from monitor.errors import BadDocument

__all__ = ["ComponentSpec", "DeviceSpec", "ItemSpec", "devices_from_xml", "element_name"]


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One data item: ``category`` is SAMPLE, EVENT or CONDITION; ``type`` the MTConnect type."""

    id: str
    category: str
    type: str
    sub_type: str | None = None
    units: str | None = None
    name: str | None = None
    representation: str | None = None
    discrete: bool = False
    """Every value is a new event even when it repeats (a probe result, a part count pulse)."""

    def __post_init__(self) -> None:
        if self.category not in ("SAMPLE", "EVENT", "CONDITION"):
            raise ValueError(f"data item {self.id}: category must be SAMPLE, EVENT or CONDITION")


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A component (``Controller``, ``Path``, ``Rotary``...) with its items and sub-components."""

    type: str
    id: str
    name: str | None = None
    items: tuple[ItemSpec, ...] = ()
    components: tuple[ComponentSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device: its identity, device-level items and components."""

    name: str
    uuid: str
    id: str
    items: tuple[ItemSpec, ...] = ()
    components: tuple[ComponentSpec, ...] = field(default_factory=tuple)

    def walk(self) -> Iterator[tuple[ComponentSpec | DeviceSpec, ItemSpec]]:
        """Every (component, item) pair, the device itself standing for its own items."""
        for item in self.items:
            yield self, item
        stack = list(reversed(self.components))
        while stack:
            comp = stack.pop()
            for item in comp.items:
                yield comp, item
            stack.extend(reversed(comp.components))


_WORD = re.compile(r"[A-Z0-9]+")


def element_name(data_item_type: str) -> str:
    """The element an observation of this type is written as: ``ROTARY_VELOCITY`` -> ``RotaryVelocity``.

    >>> element_name("PART_COUNT"), element_name("x:MOTION")
    ('PartCount', 'x:Motion')
    """
    prefix, _, t = data_item_type.rpartition(":")
    name = "".join(w.capitalize() for w in t.split("_"))
    return f"{prefix}:{name}" if prefix else name


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def devices_from_xml(data: bytes) -> list[DeviceSpec]:
    """Read the components and data items of every Device in a device file or /probe answer."""
    root = safe_tree(data)
    if _local(root.tag) != "MTConnectDevices":
        raise BadDocument("not an MTConnectDevices document")
    out: list[DeviceSpec] = []
    for devices in (c for c in root if _local(c.tag) == "Devices"):
        for dev in (d for d in devices if _local(d.tag) == "Device"):
            items, comps = _content(dev)
            ident = dev.get("id") or dev.get("name") or "dev"
            out.append(DeviceSpec(dev.get("name") or ident, dev.get("uuid") or ident, ident, items, comps))
    return out


def _content(el: Any) -> tuple[tuple[ItemSpec, ...], tuple[ComponentSpec, ...]]:
    items: list[ItemSpec] = []
    comps: list[ComponentSpec] = []
    for child in el:
        local = _local(child.tag)
        if local == "DataItems":
            for di in child:
                if _local(di.tag) != "DataItem" or not di.get("id"):
                    continue
                category = di.get("category") or "EVENT"
                if category not in ("SAMPLE", "EVENT", "CONDITION"):
                    continue
                items.append(
                    ItemSpec(
                        id=di.get("id"),
                        category=category,
                        type=di.get("type") or "",
                        sub_type=di.get("subType"),
                        units=di.get("units"),
                        name=di.get("name"),
                        representation=di.get("representation"),
                        discrete=di.get("discrete") == "true",
                    )
                )
        elif local == "Components":
            for comp in child:
                ctype = _local(comp.tag)
                if not ctype or not comp.get("id"):
                    continue
                sub_items, sub_comps = _content(comp)
                comps.append(ComponentSpec(ctype, comp.get("id"), comp.get("name"), sub_items, sub_comps))
    return tuple(items), tuple(comps)
