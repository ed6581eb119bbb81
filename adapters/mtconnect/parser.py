"""Parse MTConnect documents of any version, safely and fast.

Agents in the field range from hand-written 1.1 files without a namespace to 2.x cppagents, and
some are hostile or broken. So the parser

- uses lxml with entity resolution, network access and DTD loading off, refuses any DOCTYPE
  (billion laughs, external entities) and caps the input size (no ``huge_tree``);
- ignores which namespace a document uses: the MTConnect namespace of the root (any version,
  ``urn:mtconnect.com`` of 1.0, or none) is the one whose elements count, and elements of other
  namespaces (vendor extensions such as ``x:Motion``) are skipped without error;
- takes the version from the namespace URI, never from a fixed list;
- raises :class:`~monitor.errors.BadDocument` and nothing else, whatever bytes it is given.

The stream walk touches each observation element once and keeps timestamps as text (parsed on
demand and cached), which keeps it within a small factor of a bare lxml walk of the same bytes.

>>> doc = parse_document(b'<MTConnectStreams><Header instanceId="7" nextSequence="3"/><Streams>'
...     b'<DeviceStream name="m"><ComponentStream componentId="c"><Samples><Load dataItemId="l" '
...     b'sequence="2" timestamp="2024-01-01T00:00:00Z">12.5</Load></Samples></ComponentStream>'
...     b'</DeviceStream></Streams></MTConnectStreams>')
>>> doc.header.instance_id, [(o.data_item_id, o.value) for o in doc.observations]
(7, [('l', '12.5')])
"""

from __future__ import annotations

import re
import threading
from typing import Any

from lxml import etree

from adapters.mtconnect.documents import (
    Asset,
    AssetsDocument,
    CuttingToolAsset,
    DataItem,
    DataSetValue,
    Device,
    DevicesDocument,
    Document,
    ErrorDocument,
    ErrorEntry,
    GenericAsset,
    Header,
    Life,
    MtcObservation,
    ObservedValue,
    StreamsDocument,
)
from monitor.errors import BadDocument

__all__ = [
    "DEFAULT_MAX_BYTES",
    "parse_assets",
    "parse_devices",
    "parse_document",
    "parse_error",
    "parse_streams",
    "safe_tree",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Largest document accepted; a /sample of count=10000 is a few MB, so this is generous."""

_local = threading.local()
_VERSION = re.compile(r":(\d+(?:\.\d+)*)$")
_SETS = ("DataSet", "Table")
_ASSET_EVENTS = frozenset({"AssetChanged", "AssetRemoved"})
_ASSET_ROOTS = frozenset({"CuttingTool", "CuttingToolArchetype", "Part", "PartArchetype", "File", "RawMaterial",
                          "QIFDocumentWrapper", "ComponentConfigurationParameters", "Fixture", "Pallet"})
_CATEGORY = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}


def _parser() -> Any:
    """One hardened lxml parser per thread (lxml parsers must not be shared across threads)."""
    p = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
        _local.parser = p
    return p


def _head(data: bytes, n: int = 60) -> str:
    return repr(bytes(data[:n]))


def safe_tree(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse bytes into an lxml root element, refusing DTDs, entities and oversize input."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadDocument(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise BadDocument(f"document of {len(data)} bytes exceeds the {max_bytes} byte limit")
    if not data.strip():
        raise BadDocument("empty document")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise BadDocument(f"document declares a DTD or entities, which are refused: {_head(data)}")
    try:
        root = etree.fromstring(data, _parser())
    except (etree.LxmlError, ValueError, LookupError, UnicodeError, MemoryError) as exc:
        raise BadDocument(f"malformed XML ({exc}): {_head(data)}") from exc
    if root is None:
        raise BadDocument(f"no root element: {_head(data)}")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise BadDocument(f"document declares a DTD, which is refused: {_head(data)}")
    return root


def _split(tag: Any) -> tuple[str, str]:
    """(namespace prefix as ``{uri}`` or ``""``, local name)."""
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        end = tag.find("}")
        return tag[: end + 1], tag[end + 1 :]
    return "", tag


def _version(q: str) -> str:
    m = _VERSION.search(q[1:-1]) if q else None
    return m.group(1) if m else ""


def _int(v: str | None) -> int | None:
    if v is None or v == "":
        return None
    return int(v)


def _float(v: str | None) -> float | None:
    if v is None:
        return None
    v = v.strip()
    if not v or v == "UNAVAILABLE":
        return None
    return float(v)


def _header(el: Any) -> Header:
    g = el.get
    return Header(
        instance_id=_int(g("instanceId")),
        creation_time=g("creationTime") or "",
        sender=g("sender") or "",
        version=g("version") or "",
        buffer_size=_int(g("bufferSize")),
        next_sequence=_int(g("nextSequence")),
        first_sequence=_int(g("firstSequence")),
        last_sequence=_int(g("lastSequence")),
        asset_count=_int(g("assetCount")),
    )


def parse_document(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, only: frozenset[str] | None = None
) -> Document:
    """Parse any MTConnect answer; the root element decides which kind it is.

    ``only``, when given, keeps just the observations of those data item ids (the adapter passes
    the ids it maps, which skips the rest of a large /sample after one attribute read each).
    """
    root = safe_tree(data, max_bytes=max_bytes)
    try:
        return _dispatch(root, data, only)
    except BadDocument:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise BadDocument(f"invalid MTConnect document ({exc}): {_head(data)}") from exc


def _dispatch(root: Any, data: bytes, only: frozenset[str] | None) -> Document:
    q, local = _split(root.tag)
    if local == "MTConnectStreams":
        return _streams(root, q, only)
    if local == "MTConnectDevices":
        return _devices(root, q)
    if local == "MTConnectError":
        return _error(root, q)
    if local == "MTConnectAssets":
        return _assets(root, q)
    if root.get("assetId") is not None or local in _ASSET_ROOTS:
        return AssetsDocument("", Header(), (_asset(root),))
    raise BadDocument(f"not an MTConnect document (root element {local!r}): {_head(data)}")


def _expect(doc: Document, kind: type[Any], data: bytes) -> Any:
    if isinstance(doc, kind):
        return doc
    if isinstance(doc, ErrorDocument):
        codes = ", ".join(f"{e.code}: {e.message}" for e in doc.errors)
        raise BadDocument(f"agent answered an error document where {kind.__name__} was expected ({codes})")
    raise BadDocument(f"expected {kind.__name__}, got {type(doc).__name__}: {_head(data)}")


def parse_streams(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, only: frozenset[str] | None = None
) -> StreamsDocument:
    """Parse a /current or /sample answer (optionally only some data items); other kinds are a BadDocument."""
    return _expect(parse_document(data, max_bytes=max_bytes, only=only), StreamsDocument, data)  # type: ignore[no-any-return]


def parse_devices(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> DevicesDocument:
    """Parse a /probe answer; any other kind is a BadDocument."""
    return _expect(parse_document(data, max_bytes=max_bytes), DevicesDocument, data)  # type: ignore[no-any-return]


def parse_error(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ErrorDocument:
    """Parse an MTConnectError answer; any other kind is a BadDocument."""
    return _expect(parse_document(data, max_bytes=max_bytes), ErrorDocument, data)  # type: ignore[no-any-return]


def parse_assets(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> AssetsDocument:
    """Parse an /assets or /asset/ID answer (or a bare asset element)."""
    return _expect(parse_document(data, max_bytes=max_bytes), AssetsDocument, data)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- streams


def _streams(root: Any, q: str, only: frozenset[str] | None = None) -> StreamsDocument:
    header = Header()
    out: list[MtcObservation] = []
    append = out.append
    qlen = len(q)
    t_header, t_streams, t_ds, t_cs = q + "Header", q + "Streams", q + "DeviceStream", q + "ComponentStream"
    containers = {q + k: v for k, v in _CATEGORY.items()}
    for child in root.iterchildren(t_header, t_streams):
        if child.tag == t_header:
            header = _header(child)
            continue
        for ds in child.iterchildren(t_ds):
            dev = ds.get("name") or ds.get("uuid") or ""
            for cs in ds.iterchildren(t_cs):
                cid = cs.get("componentId") or ""
                for cont in cs.iterchildren(*containers):
                    cat = containers[cont.tag]
                    cond = cat == "CONDITION"
                    for el in cont.iterchildren("*"):
                        did = el.get("dataItemId")
                        if only is not None and did not in only:
                            continue
                        seq = el.get("sequence")
                        ts = el.get("timestamp")
                        tag = el.tag
                        if tag.startswith(q):
                            tag = tag[qlen:]
                        else:  # a vendor extension: an observation if it looks like one, else ignored
                            if seq is None or did is None:
                                continue
                            tag = _split(tag)[1]
                        if did is None or ts is None:
                            raise BadDocument(f"observation {tag} without dataItemId or timestamp")
                        text = el.text
                        if cond:
                            level: str | None = tag
                            value: ObservedValue = text.strip() if text else ""
                            if tag == "Unavailable":
                                level = value = None
                            obs = MtcObservation(int(seq), ts, did, cat, el.get("type") or tag, value, dev, cid, level)
                            obs.native_code = el.get("nativeCode")
                            append(obs)
                            continue
                        if tag.endswith(_SETS):
                            value = _set_value(el, q)
                        elif text == "UNAVAILABLE":
                            value = None
                        else:
                            value = text if text is not None else ""
                        obs = MtcObservation(int(seq), ts, did, cat, tag, value, dev, cid)
                        if tag in _ASSET_EVENTS:
                            obs.asset_type = el.get("assetType")
                        append(obs)
    return StreamsDocument(_version(q), header, out)


def _set_value(el: Any, q: str) -> ObservedValue:
    """Entries of a DATA_SET (key -> text) or TABLE (key -> {cell key -> text}); UNAVAILABLE -> None."""
    if len(el) == 0:
        text = (el.text or "").strip()
        return None if text == "UNAVAILABLE" else {}
    entries: DataSetValue = {}
    for entry in el.iterchildren((q or "{}") + "Entry"):
        key = entry.get("key")
        if key is None:
            continue
        if entry.get("removed") == "true":
            entries[key] = None
            continue
        cells = list(entry.iterchildren((q or "{}") + "Cell"))
        if cells:
            entries[key] = {c.get("key") or "": (c.text or "").strip() for c in cells}
        else:
            entries[key] = (entry.text or "").strip()
    return entries


# ---------------------------------------------------------------- devices


def _devices(root: Any, q: str) -> DevicesDocument:
    header = Header()
    devices: list[Device] = []
    for child in root.iterchildren(q + "Header", q + "Devices"):
        if child.tag == q + "Header":
            header = _header(child)
            continue
        for dev in child.iterchildren(q + "Device", q + "Agent"):
            name = dev.get("name") or dev.get("id") or ""
            uuid = dev.get("uuid") or ""
            items: list[DataItem] = []
            _component(dev, q, (_label(dev, q),), name, uuid, items)
            devices.append(Device(name, uuid, dev.get("id") or "", tuple(items), _split(dev.tag)[1]))
    return DevicesDocument(_version(q), header, tuple(devices))


def _label(el: Any, q: str) -> str:
    local = _split(el.tag)[1]
    name = el.get("name")
    return f"{local}[{name}]" if name else local


def _component(el: Any, q: str, path: tuple[str, ...], device: str, uuid: str, out: list[DataItem]) -> None:
    ctype = _split(el.tag)[1]
    for child in el.iterchildren(q + "DataItems", q + "Components"):
        if child.tag == q + "DataItems":
            for di in child.iterchildren(q + "DataItem"):
                g = di.get
                ident = g("id")
                if not ident:
                    raise BadDocument(f"DataItem without id in {'/'.join(path)}")
                out.append(
                    DataItem(
                        id=ident,
                        category=g("category") or "",
                        type=g("type") or "",
                        device=device,
                        device_uuid=uuid,
                        name=g("name"),
                        sub_type=g("subType"),
                        units=g("units"),
                        representation=g("representation"),
                        component_id=el.get("id") or "",
                        component_type=ctype,
                        component_name=el.get("name"),
                        path=path,
                    )
                )
        else:
            for comp in child.iterchildren((q or "{}") + "*"):
                _component(comp, q, (*path, _label(comp, q)), device, uuid, out)


# ---------------------------------------------------------------- errors


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def _error(root: Any, q: str) -> ErrorDocument:
    header = Header()
    errors: list[ErrorEntry] = []
    for child in root.iterchildren((q or "{}") + "*"):
        local = _split(child.tag)[1]
        if local == "Header":
            header = _header(child)
        elif local == "Errors":
            errors.extend(_error_entry(e) for e in child.iterchildren((q or "{}") + "*"))
        elif local == "Error":
            errors.append(_error_entry(child))
    if not errors:
        raise BadDocument("MTConnectError document without any Error")
    return ErrorDocument(_version(q), header, tuple(errors))


def _error_entry(el: Any) -> ErrorEntry:
    local = _split(el.tag)[1]
    code = el.get("errorCode")
    message = (el.text or "").strip()
    for sub in el:
        sl = _split(sub.tag)[1]
        if sl == "ErrorCode" and not code:
            code = (sub.text or "").strip()
        elif sl == "ErrorMessage":
            message = (sub.text or "").strip() or message
    if not code:
        code = _snake(local) if local and local != "Error" else "UNKNOWN"
    return ErrorEntry(code, message)


# ---------------------------------------------------------------- assets


def _assets(root: Any, q: str) -> AssetsDocument:
    header = Header()
    assets: list[Asset] = []
    for child in root.iterchildren((q or "{}") + "*"):
        local = _split(child.tag)[1]
        if local == "Header":
            header = _header(child)
        elif local == "Assets":
            assets.extend(_asset(a) for a in child.iterchildren((q or "{}") + "*"))
    return AssetsDocument(_version(q), header, tuple(assets))


def _children(el: Any, name: str) -> list[Any]:
    return [c for c in el if _split(c.tag)[1] == name]


def _child(el: Any, name: str) -> Any:
    for c in el:
        if _split(c.tag)[1] == name:
            return c
    return None


def _life(el: Any, item: str | None = None) -> Life:
    g = el.get
    return Life(
        type=g("type") or "",
        count_direction=g("countDirection") or "",
        value=_float(el.text),
        warning=_float(g("warning")),
        limit=_float(g("limit")),
        initial=_float(g("initial")),
        item=item,
    )


def _asset(el: Any) -> Asset:
    local = _split(el.tag)[1]
    g = el.get
    asset_id = g("assetId") or ""
    removed = g("removed") == "true"
    if local != "CuttingTool":
        return GenericAsset(asset_id, local, g("timestamp") or "", g("deviceUuid") or "", removed)
    cycle = _child(el, "CuttingToolLifeCycle")
    status: list[str] = []
    tool_life: list[Life] = []
    item_life: list[Life] = []
    ptn = loc = None
    if cycle is not None:
        cs = _child(cycle, "CutterStatus")
        if cs is not None:
            status = [(s.text or "").strip() for s in _children(cs, "Status")]
        tool_life = [_life(t) for t in _children(cycle, "ToolLife")]
        p = _child(cycle, "ProgramToolNumber")
        ptn = (p.text or "").strip() if p is not None else None
        lo = _child(cycle, "Location")
        loc = (lo.text or "").strip() if lo is not None else None
        items = _child(cycle, "CuttingItems")
        if items is not None:
            for ci in _children(items, "CuttingItem"):
                idx = ci.get("indices") or ci.get("itemId") or ""
                item_life.extend(_life(il, idx) for il in _children(ci, "ItemLife"))
    return CuttingToolAsset(
        asset_id=asset_id,
        tool_id=g("toolId") or "",
        serial_number=g("serialNumber") or "",
        timestamp=g("timestamp") or "",
        device_uuid=g("deviceUuid") or "",
        removed=removed,
        status=tuple(status),
        program_tool_number=ptn,
        location=loc,
        tool_life=tuple(tool_life),
        item_life=tuple(item_life),
    )
