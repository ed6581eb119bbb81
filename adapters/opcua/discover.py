"""Browse an OPC UA server and list its variables, enough to write a machine's ``signals:`` section.

Each variable comes with its browse path (prefixed as the site file wants it; a namespace no
companion specification names gets a prefix derived from its URI, which the row says to declare in
``source.namespaces``), its NodeId with the namespace URI, data type, engineering unit
(EUInformation) and current value, and the canonical signal it would map to: by the places the
companion specifications define (OPC 40502 spindle and channel lists, OPC 40501 production and
tool life), else by its name, data type and unit (a UInt32 ``PartCounter``, a String
``ActiveProgram``, a Double ``Spindle/Load`` in %).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from asyncua import Client, ua

from adapters.base import DiscoveredSignal
from adapters.opcua.addressing import APP_PREFIX, PREFIXES, format_nodeid
from adapters.opcua.config import OpcUaSource
from adapters.opcua.session import close_quietly, open_client
from monitor.model import is_canonical_signal

__all__ = ["MAX_NODES", "derived_prefix", "discover", "suggest_by_name", "suggest_signal"]

MAX_NODES = 20_000
"""Browsing stops after this many nodes (a controller may expose far more; use --filter)."""

_MAX_DEPTH = 16
_BATCH = 500

_SUGGESTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"CNC:CncSpindleList/[^/]+/CNC:ActLoad$"), "spindle.load"),
    (re.compile(r"CNC:CncSpindleList/[^/]+/CNC:ActSpeed$"), "spindle.speed"),
    (re.compile(r"CNC:CncSpindleList/[^/]+/CNC:ActOverride$"), "spindle.override"),
    (re.compile(r"CNC:CncChannelList/[^/]+/CNC:ActMainProgramName$"), "program.name"),
    (re.compile(r"CNC:CncChannelList/[^/]+/CNC:ActProgramName$"), "program.name"),
    (re.compile(r"CNC:CncChannelList/[^/]+/CNC:ToolId$"), "tool.number"),
    (re.compile(r"MT:ActiveProgram/MT:Name$"), "program.name"),
    (re.compile(r"MT:ActiveProgram/MT:State/UA:CurrentState$"), "execution"),
    (re.compile(r"MT:Statistics/MT:PartsProducedInLifetime$"), "part.count"),
    (re.compile(r"MT:PartsCompleted$"), "part.count"),
]
_TOOL_LIFE = re.compile(r"MT:Tools/[^/:]+:(?P<tool>[^/]+)/MT:ToolLife/[^/]+$")


def suggest_signal(path: str, description: str = "") -> str | None:
    """The canonical signal a companion-spec place maps to, or None.

    >>> suggest_signal("MA:Machines/app:VMC/CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActLoad")
    'spindle.load'
    >>> suggest_signal("MA:Machines/app:VMC/MT:Equipment/MT:Tools/app:T12/MT:ToolLife/app:Count")
    'tool.life.12'
    """
    for pattern, signal in _SUGGESTIONS:
        if pattern.search(path):
            return signal
    m = _TOOL_LIFE.search(path)
    if m is not None:
        digits = re.sub(r"\D", "", m.group("tool"))
        return f"tool.life.{int(digits)}" if digits else "tool.life"
    if description and is_canonical_signal(description):
        return description
    return None


_INTEGER_TYPES = frozenset({"Byte", "SByte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Integer", "UInteger"})
_REAL_TYPES = frozenset({"Float", "Double", "Number", "Decimal"})
_TEXT_TYPES = frozenset({"String", "LocalizedText"})
_PERCENT = frozenset({"", "%", "percent", "pct"})
_RPM = frozenset({"rpm", "1/min", "r/min", "rev/min", "min-1", "u/min"})
_PROBE_PLACES = ("probe", "measur", "inspect", "gaug", "result")


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def suggest_by_name(path: str, data_type: str = "", units: str = "") -> str | None:
    """The canonical signal a plainly named variable looks like, from its name, data type and unit.

    For servers that follow no companion specification (``PartCounter``, ``ActiveProgram``,
    ``Spindle/Load`` in %); a load in newtons or a text that looks like a number is not suggested.

    >>> suggest_by_name("app:Cnc/app:PartCounter", "UInt32")
    'part.count'
    >>> suggest_by_name("app:Cnc/app:Spindle/app:Load", "Double", "%")
    'spindle.load'
    >>> suggest_by_name("app:Cnc/app:Spindle/app:Load", "Double", "N") is None
    True
    >>> suggest_by_name("app:Cnc/app:Probe/app:Result1", "Double", "mm")
    'probe.result1'
    """
    names = [element.partition(":")[2] or element for element in path.split("/") if element]
    if not names:
        return None
    leaf, parents = _words(names[-1]), " ".join(_words(n) for n in names[:-1])
    integer, real, text = data_type in _INTEGER_TYPES, data_type in _REAL_TYPES, data_type in _TEXT_TYPES
    numeric = integer or real
    unit = units.strip().lower()
    spindle = "spindle" in parents or leaf.startswith("spindle")
    if numeric and re.search(r"parts?(count|counter|produced|completed|total|made|done)|(piece|workpiece)s?count", leaf):
        return "part.count"
    if numeric and re.search(r"(result|measurement|probe|part|inspection)(id|seq|sequence|serial|serialnumber)$", leaf):
        return "part.id"
    if text and re.search(r"^(active|current|main|selected|running)?(main)?(program|prog|partprogram)(name)?$", leaf):
        return "program.name"
    if text and re.search(r"execution|runstate|runmode|(program|channel|cycle)(state|status)$", leaf):
        return "execution"
    if numeric and spindle and "override" in leaf:
        return "spindle.override"
    if numeric and spindle and re.search(r"load|power", leaf) and unit in _PERCENT:
        return "spindle.load"
    if numeric and ((spindle and re.search(r"speed|rpm|velocity|rev", leaf)) or unit in _RPM):
        return "spindle.speed"
    if numeric and re.search(r"tool(life|wear|lifeused|lifecount)|lifeused", leaf):
        return "tool.life"
    if integer and re.search(r"^(active|current|actual)?tool(number|no|nr|id)?$", leaf):
        return "tool.number"
    if real and any(p in parents or leaf.startswith(p) for p in _PROBE_PLACES) and unit not in _RPM:
        return "probe." + re.sub(r"[^a-z0-9_]", "_", names[-1].lower()).strip("_")
    return None


def derived_prefix(uri: str, taken: Iterable[str] = ()) -> str:
    """A short browse-path prefix for a namespace no companion specification names, from its URI.

    >>> derived_prefix("urn:example:foreign-cnc")
    'foreign-cnc'
    >>> derived_prefix("http://vendor.com/UA/Machine/", taken={"Machine"})
    'Machine2'
    """
    tail = re.split(r"[/:#]+", uri.strip().rstrip("/:#"))[-1]
    base = re.sub(r"[^A-Za-z0-9_.-]", "", tail)[:24] or "ns"
    if base[0].isdigit():
        base = "n" + base
    used = set(taken) | set(PREFIXES) | {APP_PREFIX}
    prefix, n = base, 2
    while prefix in used:
        prefix, n = f"{base}{n}", n + 1
    return prefix


def _prefixes(namespaces: Sequence[str]) -> tuple[dict[int, str], dict[str, str]]:
    """Prefix per namespace index, and the prefixes a site file must declare in ``source.namespaces``
    (namespaces no companion specification names): {prefix: URI}."""
    by_uri = {uri: p for p, uri in PREFIXES.items()}
    out: dict[int, str] = {}
    declare: dict[str, str] = {}
    for i, uri in enumerate(namespaces):
        if i == 1:
            out[i] = APP_PREFIX
        elif uri in by_uri:
            out[i] = by_uri[uri]
        elif i > 1:
            prefix = derived_prefix(uri, declare)
            out[i] = prefix
            declare[prefix] = uri
    out[0] = "UA"
    return out, declare


def _text(value: object, limit: int = 60) -> str:
    if value is None:
        return ""
    if isinstance(value, ua.LocalizedText):
        value = value.Text or ""
    s = str(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


async def _browse_tree(client: Client, prefixes: dict[int, str]) -> list[tuple[str, ua.NodeId, bool]]:
    """Breadth-first over hierarchical references from Objects; returns (path, node, is_property)."""
    found: list[tuple[str, ua.NodeId, bool]] = []
    seen: set[ua.NodeId] = set()
    server_object = ua.NodeId(ua.ObjectIds.Server)
    level: list[tuple[str, ua.NodeId]] = [("", ua.NodeId(ua.ObjectIds.ObjectsFolder))]
    for _ in range(_MAX_DEPTH):
        if not level or len(seen) >= MAX_NODES:
            break
        nxt: list[tuple[str, ua.NodeId]] = []
        for start in range(0, len(level), _BATCH):
            chunk = level[start : start + _BATCH]
            params = ua.BrowseParameters()
            params.View = ua.ViewDescription()
            params.RequestedMaxReferencesPerNode = 0
            for _, nid in chunk:
                desc = ua.BrowseDescription()
                desc.NodeId = nid
                desc.BrowseDirection = ua.BrowseDirection.Forward
                desc.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
                desc.IncludeSubtypes = True
                desc.NodeClassMask = ua.NodeClass.Object | ua.NodeClass.Variable
                desc.ResultMask = ua.BrowseResultMask.All
                params.NodesToBrowse.append(desc)
            results = await client.uaclient.browse(params)
            for (path, _), result in zip(chunk, results, strict=True):
                for ref in result.References or []:
                    target = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType)
                    if target in seen or target == server_object:
                        continue
                    seen.add(target)
                    bn = ref.BrowseName
                    child = f"{path}/{prefixes.get(bn.NamespaceIndex, f'ns{bn.NamespaceIndex}')}:{bn.Name}".lstrip("/")
                    if ref.NodeClass == ua.NodeClass.Variable:
                        is_prop = ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty)
                        found.append((child, target, is_prop))
                    nxt.append((child, target))
        level = nxt
    return found


async def _read(client: Client, nodes: list[ua.NodeId], attr: ua.AttributeIds) -> list[ua.DataValue]:
    out: list[ua.DataValue] = []
    for start in range(0, len(nodes), _BATCH):
        out.extend(await client.uaclient.read_attributes(nodes[start : start + _BATCH], attr))
    return out


async def _type_names(client: Client, type_ids: set[ua.NodeId]) -> dict[ua.NodeId, str]:
    names: dict[ua.NodeId, str] = {}
    others = []
    for t in type_ids:
        if t.NamespaceIndex == 0 and isinstance(t.Identifier, int) and t.Identifier in ua.ObjectIdNames:
            names[t] = ua.ObjectIdNames[t.Identifier]
        else:
            others.append(t)
    if others:
        for t, dv in zip(others, await _read(client, others, ua.AttributeIds.BrowseName), strict=True):
            qn = dv.Value.Value if dv.Value is not None else None
            names[t] = qn.Name if isinstance(qn, ua.QualifiedName) else str(t)
    return names


async def discover(
    source: OpcUaSource, filter: str | None = None, *, warnings: list[str] | None = None
) -> list[DiscoveredSignal]:
    """List the variables of the server at ``source.endpoint`` (with its security settings), filtered by text.

    ``filter`` keeps variables whose path, NodeId or suggested signal contains it (case-insensitive).
    ``warnings`` (the discoverers' common signature) gets nothing here: an OPC UA server either
    answers a browse or the connection fails with an error.
    """
    client = await open_client(source)
    try:
        namespaces: list[str] = list(await client.get_namespace_array())
        prefixes, declare = _prefixes(namespaces)
        tree = await _browse_tree(client, prefixes)
        nodes = [nid for _, nid, _ in tree]
        values = await _read(client, nodes, ua.AttributeIds.Value)
        dtypes = await _read(client, nodes, ua.AttributeIds.DataType)
        descriptions = await _read(client, nodes, ua.AttributeIds.Description)
        type_ids = {dv.Value.Value for dv in dtypes if dv.Value is not None and isinstance(dv.Value.Value, ua.NodeId)}
        type_names = await _type_names(client, type_ids)
    finally:
        await close_quietly(client)
    units: dict[str, str] = {}
    for (path, _, is_prop), value in zip(tree, values, strict=True):
        eu = value.Value.Value if value.Value is not None else None
        if is_prop and path.endswith("/UA:EngineeringUnits") and isinstance(eu, ua.EUInformation):
            units[path.removesuffix("/UA:EngineeringUnits")] = _text(eu.DisplayName) or _text(eu.Description)
    needle = filter.lower() if filter else None
    out: list[DiscoveredSignal] = []
    for (path, nid, is_prop), value, dtype, desc in zip(tree, values, dtypes, descriptions, strict=True):
        address = format_nodeid(nid, namespaces)
        description = _text(desc.Value.Value if desc.Value is not None else None, 200)
        tid = dtype.Value.Value if dtype.Value is not None else None
        data_type = type_names.get(tid, "") if isinstance(tid, ua.NodeId) else ""
        unit = units.get(path, "")
        suggested = suggest_signal(path, description)
        if suggested is None and not is_prop:
            suggested = suggest_by_name(path, data_type, unit)
        if needle and not any(needle in s.lower() for s in (path, address, suggested or "")):
            continue
        status = value.StatusCode
        shown = _text(value.Value.Value if value.Value is not None else None)
        if status is not None and not status.is_good():
            shown = status.name
        used = {p: declare[p] for p in dict.fromkeys(e.partition(":")[0] for e in path.split("/")) if p in declare}
        extra = {"namespaces": ", ".join(f"{p}: {u}" for p, u in used.items())} if used else {}
        out.append(
            DiscoveredSignal(
                path=path,
                address=address,
                kind="property" if is_prop else "variable",
                data_type=data_type,
                units=unit,
                value=shown,
                suggested=suggested,
                extra=extra,
            )
        )
    return out
