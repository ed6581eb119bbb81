"""Write the MTConnect 2.x documents our agent serves (Devices, Streams, Assets, Error).

Documents are built with lxml's C element factory and serialised once; they validate against the
official ``_1.0`` XSDs of :data:`VERSION` (a test checks every kind). Values are written the way
the schema wants them: integral numbers without a decimal point, UNAVAILABLE for None, DATA_SET
entries as ``Entry`` elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from adapters.mtconnect.devicemodel import ComponentSpec, DeviceSpec, ItemSpec, element_name
from adapters.mtconnect.documents import CuttingToolAsset, Life, MtcObservation, ObservedValue

__all__ = [
    "VERSION",
    "AgentInfo",
    "ErrorDetail",
    "ItemPlace",
    "format_value",
    "now_text",
    "render_assets",
    "render_cutting_tool",
    "render_devices",
    "render_error",
    "render_streams",
]

VERSION = "2.7"
"""The MTConnect version of the documents we write (namespaces and XSDs)."""

_NS = {k: f"urn:mtconnect.org:MTConnect{k}:{VERSION}" for k in ("Devices", "Streams", "Assets", "Error")}
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_SENDER = "cnc-monitor"
_AGENT_VERSION = "2.0.0.1"


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What every header says about the agent."""

    instance_id: int
    buffer_size: int
    asset_buffer_size: int
    asset_count: int
    model_change_time: str


@dataclass(frozen=True, slots=True)
class ItemPlace:
    """Where an item lives, for grouping observations into device and component streams."""

    device: DeviceSpec
    component_type: str
    component_id: str
    component_name: str | None
    item: ItemSpec


def now_text(t: datetime | None = None) -> str:
    """An MTConnect timestamp (UTC, microseconds, ``Z``)."""
    t = (t or datetime.now(UTC)).astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_value(value: object) -> str:
    """Text of a published value: integral floats without ``.0``, None as UNAVAILABLE.

    >>> format_value(12.0), format_value(0.5), format_value(None), format_value("ACTIVE")
    ('12', '0.5', 'UNAVAILABLE', 'ACTIVE')
    """
    if value is None:
        return "UNAVAILABLE"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def _root(kind: str, info: AgentInfo, extra: dict[str, str]) -> tuple[Any, Any]:
    ns = _NS[kind]
    root = etree.Element(f"{{{ns}}}MTConnect{kind}", nsmap={None: ns, "m": ns, "xsi": _XSI})
    root.set(f"{{{_XSI}}}schemaLocation", f"{ns} /schemas/MTConnect{kind}_{VERSION}.xsd")
    attrs = {
        "creationTime": now_text().split(".")[0] + "Z",
        "sender": _SENDER,
        "instanceId": str(info.instance_id),
        "version": _AGENT_VERSION,
        "deviceModelChangeTime": info.model_change_time,
    }
    if kind in ("Devices", "Streams", "Error"):
        attrs["bufferSize"] = str(info.buffer_size)
    if kind in ("Devices", "Assets"):
        attrs["assetBufferSize"] = str(info.asset_buffer_size)
        attrs["assetCount"] = str(info.asset_count)
    attrs.update(extra)
    header = etree.SubElement(root, f"{{{ns}}}Header", attrs)
    return root, header


def _bytes(root: Any) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")  # type: ignore[no-any-return]


# ---------------------------------------------------------------- devices


def render_devices(info: AgentInfo, devices: Sequence[DeviceSpec]) -> bytes:
    """The /probe answer for these devices."""
    root, _ = _root("Devices", info, {})
    q = f"{{{_NS['Devices']}}}"
    devs = etree.SubElement(root, q + "Devices")
    for dev in devices:
        el = etree.SubElement(devs, q + "Device", {"id": dev.id, "name": dev.name, "uuid": dev.uuid})
        _content(el, q, dev.items, dev.components)
    return _bytes(root)


def _content(el: Any, q: str, items: Sequence[ItemSpec], comps: Sequence[ComponentSpec]) -> None:
    if items:
        dis = etree.SubElement(el, q + "DataItems")
        for it in items:
            attrs = {"id": it.id, "category": it.category, "type": it.type}
            for k, v in (("subType", it.sub_type), ("units", it.units), ("name", it.name), ("representation", it.representation)):
                if v:
                    attrs[k] = v
            if it.discrete:
                attrs["discrete"] = "true"
            etree.SubElement(dis, q + "DataItem", attrs)
    if comps:
        ces = etree.SubElement(el, q + "Components")
        for c in comps:
            attrs = {"id": c.id}
            if c.name:
                attrs["name"] = c.name
            cel = etree.SubElement(ces, q + c.type, attrs)
            _content(cel, q, c.items, c.components)


# ---------------------------------------------------------------- streams


def render_streams(
    info: AgentInfo,
    observations: Iterable[MtcObservation],
    places: dict[str, ItemPlace],
    *,
    next_sequence: int,
    first_sequence: int,
    last_sequence: int,
) -> bytes:
    """A /current or /sample answer: observations grouped by device and component, in sequence order."""
    root, _ = _root(
        "Streams",
        info,
        {"nextSequence": str(next_sequence), "firstSequence": str(first_sequence), "lastSequence": str(last_sequence)},
    )
    q = f"{{{_NS['Streams']}}}"
    streams = etree.SubElement(root, q + "Streams")
    groups: dict[str, dict[str, tuple[ItemPlace, list[MtcObservation]]]] = {}
    for obs in observations:
        place = places.get(obs.data_item_id)
        if place is None:
            continue
        comps = groups.setdefault(place.device.uuid, {})
        entry = comps.get(place.component_id)
        if entry is None:
            entry = comps[place.component_id] = (place, [])
        entry[1].append(obs)
    for comps in groups.values():
        first = next(iter(comps.values()))[0]
        ds = etree.SubElement(streams, q + "DeviceStream", {"name": first.device.name, "uuid": first.device.uuid})
        for place, obs_list in comps.values():
            attrs = {"component": place.component_type, "componentId": place.component_id}
            if place.component_name:
                attrs["name"] = place.component_name
            cs = etree.SubElement(ds, q + "ComponentStream", attrs)
            for cat, container in (("SAMPLE", "Samples"), ("EVENT", "Events"), ("CONDITION", "Condition")):
                chosen = [o for o in obs_list if places[o.data_item_id].item.category == cat]
                if chosen:
                    box = etree.SubElement(cs, q + container)
                    for o in chosen:
                        _observation(box, q, o, places[o.data_item_id].item)
    return _bytes(root)


def _observation(box: Any, q: str, o: MtcObservation, item: ItemSpec) -> None:
    attrs = {"dataItemId": o.data_item_id, "timestamp": o.timestamp, "sequence": str(o.sequence)}
    if item.name:
        attrs["name"] = item.name
    if item.sub_type:
        attrs["subType"] = item.sub_type
    if item.category == "CONDITION":
        attrs["type"] = item.type
        level = o.level or "Unavailable"
        if level != "Unavailable":
            attrs["conditionId"] = o.native_code or item.id
        if o.native_code:
            attrs["nativeCode"] = o.native_code
        el = etree.SubElement(box, q + level, attrs)
        if o.value and level != "Unavailable":
            el.text = str(o.value)
        return
    if item.type in ("ASSET_CHANGED", "ASSET_REMOVED"):
        attrs["assetType"] = o.asset_type or "UNAVAILABLE"
    name = element_name(item.type)
    if ":" in name:  # an extension type: written as our own element in the MTConnect namespace
        name = name.split(":", 1)[1]
    if item.representation in ("DATA_SET", "TABLE"):
        suffix = "DataSet" if item.representation == "DATA_SET" else "Table"
        el = etree.SubElement(box, q + name + suffix, attrs)
        _set_entries(el, q, o.value)
        return
    el = etree.SubElement(box, q + name, attrs)
    el.text = format_value(o.value)


def _set_entries(el: Any, q: str, value: ObservedValue) -> None:
    if value is None:
        el.set("count", "0")
        el.text = "UNAVAILABLE"
        return
    entries = value if isinstance(value, dict) else {}
    el.set("count", str(len(entries)))
    for key, v in entries.items():
        entry = etree.SubElement(el, q + "Entry", {"key": key})
        if v is None:
            entry.set("removed", "true")
        elif isinstance(v, dict):
            for ck, cv in v.items():
                etree.SubElement(entry, q + "Cell", {"key": ck}).text = "" if cv is None else str(cv)
        else:
            entry.text = str(v)


# ---------------------------------------------------------------- errors and assets


_ERROR_ELEMENTS = {
    "OUT_OF_RANGE": "OutOfRange",
    "INVALID_REQUEST": "InvalidRequest",
    "NO_DEVICE": "NoDevice",
    "ASSET_NOT_FOUND": "AssetNotFound",
    "INVALID_URI": "InvalidURI",
    "TOO_MANY": "TooMany",
    "UNSUPPORTED": "Unsupported",
    "INTERNAL_ERROR": "InternalError",
}


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """What went wrong with a request, enough for a 2.6+ typed error element."""

    code: str
    message: str
    uri: str = "/"
    parameter: str | None = None
    value: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    asset_id: str | None = None


def render_error(info: AgentInfo, error: ErrorDetail) -> bytes:
    """An MTConnectError answer in the 2.6+ typed form (``<OutOfRange>`` with ErrorMessage, URI...)."""
    root, _ = _root("Error", info, {})
    q = f"{{{_NS['Error']}}}"
    errors = etree.SubElement(root, q + "Errors")
    el = etree.SubElement(errors, q + _ERROR_ELEMENTS.get(error.code, "InvalidRequest"))
    etree.SubElement(el, q + "ErrorMessage").text = error.message
    etree.SubElement(el, q + "URI").text = error.uri
    if error.code == "ASSET_NOT_FOUND":
        etree.SubElement(el, q + "AssetId").text = error.asset_id or ""
    if error.code == "OUT_OF_RANGE":
        qp = etree.SubElement(el, q + "QueryParameter", {"name": error.parameter or "from"})
        if error.value is not None:
            etree.SubElement(qp, q + "Value").text = error.value
        if error.minimum is not None:
            etree.SubElement(qp, q + "Minimum").text = str(error.minimum)
        if error.maximum is not None:
            etree.SubElement(qp, q + "Maximum").text = str(error.maximum)
    return _bytes(root)


def render_cutting_tool(tool: CuttingToolAsset) -> Any:
    """A CuttingTool element (in the Assets namespace) from our record of it."""
    q = f"{{{_NS['Assets']}}}"
    attrs = {
        "assetId": tool.asset_id,
        "toolId": tool.tool_id,
        "serialNumber": tool.serial_number or "1",
        "timestamp": tool.timestamp or now_text(),
    }
    if tool.device_uuid:
        attrs["deviceUuid"] = tool.device_uuid
    if tool.removed:
        attrs["removed"] = "true"
    el = etree.Element(q + "CuttingTool", attrs)
    cycle = etree.SubElement(el, q + "CuttingToolLifeCycle")
    status = etree.SubElement(cycle, q + "CutterStatus")
    for s in tool.status or ("AVAILABLE",):
        etree.SubElement(status, q + "Status").text = s
    for life in tool.tool_life:
        _life(cycle, q + "ToolLife", life)
    if tool.program_tool_number is not None:
        etree.SubElement(cycle, q + "ProgramToolNumber").text = tool.program_tool_number
    return el


def _life(parent: Any, tag: str, life: Life) -> None:
    attrs = {"type": life.type, "countDirection": life.count_direction}
    for k, v in (("warning", life.warning), ("limit", life.limit), ("initial", life.initial)):
        if v is not None:
            attrs[k] = format_value(v)
    etree.SubElement(parent, tag, attrs).text = format_value(life.value if life.value is not None else 0.0)


def render_assets(info: AgentInfo, assets: Sequence[Any]) -> bytes:
    """An MTConnectAssets answer holding these asset elements (copied, so callers keep theirs)."""
    root, _ = _root("Assets", info, {})
    q = f"{{{_NS['Assets']}}}"
    box = etree.SubElement(root, q + "Assets")
    for el in assets:
        box.append(_renamespace(el, _NS["Assets"]))
    return _bytes(root)


def _renamespace(el: Any, ns: str) -> Any:
    """A copy of an asset element with un-namespaced (adapter-sent) elements moved into ``ns``."""
    copy = etree.fromstring(etree.tostring(el))
    for node in copy.iter():
        if isinstance(node.tag, str) and not node.tag.startswith("{"):
            node.tag = f"{{{ns}}}{node.tag}"
    return copy
