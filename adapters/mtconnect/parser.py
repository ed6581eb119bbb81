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

Streams documents (the bulk: every /sample) are parsed from lxml's parser events without building
a tree, and timestamps are kept as text (parsed on demand and cached); that keeps a large /sample
within a small factor of a bare lxml parse-and-walk of the same bytes. The other kinds are small
and are read from a tree.

>>> doc = parse_document(b'<MTConnectStreams><Header instanceId="7" nextSequence="3"/><Streams>'
...     b'<DeviceStream name="m"><ComponentStream componentId="c"><Samples><Load dataItemId="l" '
...     b'sequence="2" timestamp="2024-01-01T00:00:00Z">12.5</Load></Samples></ComponentStream>'
...     b'</DeviceStream></Streams></MTConnectStreams>')
>>> doc.header.instance_id, [(o.data_item_id, o.value) for o in doc.observations]
(7, [('l', '12.5')])
"""

from __future__ import annotations

import dataclasses
import gc
import re
import threading
from typing import Any, TypeVar

from lxml import etree

from adapters.mtconnect.documents import (
    Asset,
    AssetsDocument,
    CuttingToolAsset,
    DataItem,
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
    "streams_tree",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Largest document accepted; a /sample of count=10000 is a few MB, so this is generous."""

_local = threading.local()
_VERSION = re.compile(r":(\d+(?:\.\d+)*)$")
_SETS = ("DataSet", "Table")
_ASSET_EVENTS = frozenset({"AssetChanged", "AssetRemoved"})
_ASSET_ROOTS = frozenset(
    {
        "CuttingTool",
        "CuttingToolArchetype",
        "Part",
        "PartArchetype",
        "File",
        "RawMaterial",
        "QIFDocumentWrapper",
        "ComponentConfigurationParameters",
        "Fixture",
        "Pallet",
    }
)
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


def _check_bytes(data: bytes, max_bytes: int) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadDocument(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise BadDocument(f"document of {len(data)} bytes exceeds the {max_bytes} byte limit")
    if not data or data.isspace():
        raise BadDocument("empty document")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise BadDocument(f"document declares a DTD or entities, which are refused: {_head(data)}")
    return data


def safe_tree(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse bytes into an lxml root element, refusing DTDs, entities and oversize input."""
    data = _check_bytes(data, max_bytes)
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


def streams_tree(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Any, str, Header] | None:
    """(root element, ``{namespace}`` prefix of its elements, header) of a clean Streams document read
    whole into a tree, for a caller that walks the common shape itself (:mod:`adapters.mtconnect.client`);
    None for anything else: another kind, malformed, a DTD, an undeclared prefix. Only for small
    documents (the tree costs several times the bytes); :func:`parse_document` then says what it is.

    The same hardened parser as :func:`safe_tree`, so an element's text here is the text the event
    parser gathers (comments dropped, CDATA and entities resolved to text)."""
    try:
        data = _check_bytes(data, max_bytes)
    except BadDocument:
        return None
    parser = _parser()
    try:
        root = etree.fromstring(data, parser)
    except (etree.LxmlError, ValueError, LookupError, UnicodeError, MemoryError):
        return None
    if root is None or parser.error_log:
        return None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        return None
    q, local = _split(root.tag)
    if local != "MTConnectStreams":
        return None
    header = Header()
    named = q + "Header"
    try:
        for top in root:
            if top.tag == named:
                header = _header_from(top.attrib)  # the last one counts, as in the event parser
    except ValueError:
        return None
    return root, q, header


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
    return _header_from(el.attrib)


def _header_from(attrib: Any) -> Header:
    g = attrib.get
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


def parse_document(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, only: frozenset[str] | None = None) -> Document:
    """Parse any MTConnect answer; the root element decides which kind it is.

    ``only``, when given, keeps just the observations of those data item ids (the adapter passes
    the ids it maps, which skips the rest of a large /sample after one attribute read each).
    """
    data = _check_bytes(data, max_bytes)
    try:
        fast = _parse_streams_events(data, only)
    except BadDocument:
        raise
    except (etree.LxmlError, ValueError, TypeError, LookupError, UnicodeError, MemoryError, OverflowError) as exc:
        raise BadDocument(f"malformed or invalid document ({exc}): {_head(data)}") from exc
    if fast is not None:
        return fast
    root = safe_tree(data, max_bytes=max_bytes)
    try:
        return _dispatch(root, data, only)
    except BadDocument:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise BadDocument(f"invalid MTConnect document ({exc}): {_head(data)}") from exc


def _dispatch(root: Any, data: bytes, only: frozenset[str] | None) -> Document:
    q, local = _split(root.tag)
    if local == "MTConnectDevices":
        return _devices(root, q)
    if local == "MTConnectError":
        return _error(root, q)
    if local == "MTConnectAssets":
        return _assets(root, q)
    if root.get("assetId") is not None or local in _ASSET_ROOTS:
        return AssetsDocument("", Header(), (_asset(root),))
    raise BadDocument(f"not an MTConnect document (root element {local!r}): {_head(data)}")


_D = TypeVar("_D", bound=Document)


def _of_kind(doc: Document, kind: type[_D], data: bytes) -> _D:
    """``doc`` if it is a ``kind``; else a BadDocument saying what came instead."""
    if isinstance(doc, kind):
        return doc
    if isinstance(doc, ErrorDocument):
        codes = ", ".join(f"{e.code}: {e.message}" for e in doc.errors)
        raise BadDocument(f"agent answered an error document where {kind.__name__} was expected ({codes})")
    raise BadDocument(f"expected {kind.__name__}, got {type(doc).__name__}: {_head(data)}")


def parse_streams(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, only: frozenset[str] | None = None) -> StreamsDocument:
    """Parse a /current or /sample answer (optionally only some data items); other kinds are a BadDocument."""
    return _of_kind(parse_document(data, max_bytes=max_bytes, only=only), StreamsDocument, data)


def parse_devices(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> DevicesDocument:
    """Parse a /probe answer; any other kind is a BadDocument."""
    return _of_kind(parse_document(data, max_bytes=max_bytes), DevicesDocument, data)


def parse_error(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ErrorDocument:
    """Parse an MTConnectError answer; any other kind is a BadDocument."""
    return _of_kind(parse_document(data, max_bytes=max_bytes), ErrorDocument, data)


def parse_assets(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> AssetsDocument:
    """Parse an /assets or /asset/ID answer (or a bare asset element)."""
    return _of_kind(parse_document(data, max_bytes=max_bytes), AssetsDocument, data)


# ---------------------------------------------------------------- streams


class _NotStreams(Exception):
    """Raised by the stream target at the root element when the document is another kind."""


class _DtdRefused(Exception):
    """Raised by the stream target when the document declares a DTD."""


class _StreamTarget:
    """lxml parser target that builds observations straight from parser events.

    No tree is built and every attribute dict comes from C in one piece, which is what keeps a
    large /sample close to the speed of a bare lxml parse. Levels: root 1, Header/Streams 2,
    DeviceStream 3, ComponentStream 4, Samples/Events/Condition 5, observation 6, Entry 7, Cell 8.
    """

    __slots__ = (
        "cat",
        "cell",
        "cid",
        "cur",
        "dev",
        "entries",
        "entry",
        "header",
        "level",
        "only",
        "out",
        "q",
        "qlen",
        "text",
        "version",
    )

    def __init__(self, only: frozenset[str] | None) -> None:
        self.reset(only)

    def reset(self, only: frozenset[str] | None) -> None:
        """Ready for the next document (one target serves every parse of its thread's parser)."""
        self.only = only
        self.out: list[MtcObservation] = []
        self.level = 0
        self.q = ""
        self.qlen = 0
        self.version = ""
        self.header = Header()
        self.dev = ""
        self.cid = ""
        self.cat: str | None = None
        self.cur: tuple[str, dict[str, str]] | None = None
        self.text = ""
        self.entries: dict[str, Any] | None = None
        self.entry: tuple[str, list[str], dict[str, str | None] | None] | None = None
        self.cell: tuple[str, list[str]] | None = None

    def doctype(self, *args: Any) -> None:
        raise _DtdRefused("document declares a DTD, which is refused")

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.level = level = self.level + 1
        if level == 6:
            if self.cat is None:
                return
            if self.only is not None and attrib.get("dataItemId") not in self.only:
                self.cur = None
                return
            self.cur = (tag, attrib)
            self.text = ""
            self.entries = None
            return
        if level == 7:
            if self.cur is not None and tag.endswith("Entry"):
                if self.entries is None:
                    self.entries = {}
                key = attrib.get("key")
                removed = attrib.get("removed") == "true"
                self.entry = (key or "", [], None) if key is not None and not removed else None
                if key is not None and removed:
                    self.entries[key] = None
            return
        if level == 8:
            if self.entry is not None and tag.endswith("Cell"):
                self.cell = (attrib.get("key") or "", [])
            return
        if level == 5:
            local = tag[self.qlen :] if tag.startswith(self.q) else ""
            self.cat = _CATEGORY.get(local)
            return
        if level == 4:
            self.cid = attrib.get("componentId") or ""
            return
        if level == 3:
            self.dev = attrib.get("name") or attrib.get("uuid") or ""
            return
        if level == 2:
            if tag == self.q + "Header":
                self.header = _header_from(attrib)
            return
        q, local = _split(tag)
        if local != "MTConnectStreams":
            raise _NotStreams(local)
        self.q, self.qlen, self.version = q, len(q), _version(q)

    def data(self, text: str) -> None:
        level = self.level
        if level == 6:
            if self.cur is not None:
                self.text += text
        elif level == 7:
            if self.entry is not None:
                self.entry[1].append(text)
        elif level == 8 and self.cell is not None:
            self.cell[1].append(text)

    def end(self, tag: str) -> None:
        level = self.level
        self.level = level - 1
        if level == 6:
            cur = self.cur
            if cur is None:
                return
            self.cur = None
            tag, a = cur
            seq, ts, did = a.get("sequence"), a.get("timestamp"), a.get("dataItemId")
            if tag.startswith(self.q):
                tag = tag[self.qlen :]
            else:  # a vendor extension: an observation if it looks like one, else ignored
                if seq is None or did is None:
                    return
                tag = _split(tag)[1]
            if did is None or ts is None or seq is None:
                raise BadDocument(f"observation {tag} without dataItemId, timestamp or sequence")
            text = self.text
            cat = self.cat or ""
            value: ObservedValue
            if cat == "CONDITION":
                value = text.strip()
                cond_level: str | None = tag
                if tag == "Unavailable":
                    cond_level = value = None
                obs = MtcObservation(int(seq), ts, did, cat, a.get("type") or tag, value, self.dev, self.cid, cond_level)
                obs.native_code = a.get("nativeCode")
            elif tag.endswith(_SETS):
                value = self.entries if self.entries is not None else (None if text.strip() == "UNAVAILABLE" else {})
                obs = MtcObservation(int(seq), ts, did, cat, tag, value, self.dev, self.cid)
            else:
                obs = MtcObservation(int(seq), ts, did, cat, tag, None if text == "UNAVAILABLE" else text, self.dev, self.cid)
                if tag in _ASSET_EVENTS:
                    obs.asset_type = a.get("assetType")
            self.out.append(obs)
        elif level == 7:
            entry = self.entry
            if entry is not None and self.entries is not None:
                self.entries[entry[0]] = entry[2] if entry[2] is not None else "".join(entry[1]).strip()
            self.entry = None
        elif level == 8:
            cell, entry = self.cell, self.entry
            if cell is not None and entry is not None:
                row = entry[2]
                if row is None:
                    row = {}
                    self.entry = (entry[0], entry[1], row)
                row[cell[0]] = "".join(cell[1]).strip()
            self.cell = None
        elif level == 5:
            self.cat = None

    def close(self) -> StreamsDocument:
        doc = StreamsDocument(self.version, self.header, self.out)
        self.out = []
        return doc


_GC_PAUSE_BYTES = 256 * 1024

_STREAM_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
}


def _stream_parser(only: frozenset[str] | None) -> Any:
    """This thread's target parser, its target reset for a new document.

    Creating a target parser costs about as much as parsing a 50-observation page (lxml inspects
    the target's methods each time), and a daemon parses a hundred such pages a second: one per
    thread is kept (lxml parsers must not be shared across threads; a parse never re-enters)."""
    pair: tuple[Any, _StreamTarget] | None = getattr(_local, "streams", None)
    if pair is None:
        target = _StreamTarget(only)
        pair = (etree.XMLParser(target=target, **_STREAM_OPTIONS), target)
        _local.streams = pair
    else:
        pair[1].reset(only)
    return pair[0]


def _parse_streams_events(data: bytes, only: frozenset[str] | None) -> StreamsDocument | None:
    """The fast path for Streams documents; None when the root is another kind."""
    parser = _stream_parser(only)
    # A large page creates tens of thousands of small records at once; the cyclic collector would
    # run dozens of times over them (they hold no cycles), which costs more than the parse itself.
    pause = len(data) > _GC_PAUSE_BYTES and gc.isenabled()
    if pause:
        gc.disable()
    try:
        doc: StreamsDocument = etree.fromstring(data, parser)
    except _NotStreams:
        return None
    except _DtdRefused as exc:
        raise BadDocument(f"{exc}: {_head(data)}") from exc
    finally:
        parser.target.out = []  # what a failed parse gathered is not kept until the next one
        if pause:
            gc.enable()
    # a target parser does not raise on namespace errors: an element whose prefix is never declared
    # (a hand-written adapter's extension) is read by its local name, and said, never silently
    undeclared = sorted({e.message for e in parser.error_log if e.type_name == "NS_ERR_UNDEFINED_NAMESPACE"})
    if undeclared:
        return dataclasses.replace(doc, warnings=tuple(undeclared))
    return doc


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
