"""Where a signal lives on an OPC UA server: NodeIds by namespace URI and prefixed browse paths.

Namespace indexes are the server's private numbering and may change when it restarts, so the
site file never holds one: a NodeId names its namespace by URI, and a browse path names each
element's namespace with a short prefix from :data:`PREFIXES` (or the source's ``namespaces``).
Both are turned into concrete NodeIds by :func:`resolve` after every connect.

>>> parse_address("nsu=urn:vendor:cnc;s=Macro.R500")
NodeAddress(namespace_uri='urn:vendor:cnc', identifier_type='s', identifier='Macro.R500')
>>> parse_address("MT:Production/MT:ActiveProgram/MT:Name").elements[1]
('MT', 'ActiveProgram')
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncua is imported where it is used: a site without OPC UA never loads it
    from asyncua import Client, ua

__all__ = [
    "APP_PREFIX",
    "PREFIXES",
    "Address",
    "BrowsePathAddress",
    "NodeAddress",
    "Resolution",
    "format_nodeid",
    "parse_address",
    "resolve",
]

PREFIXES: dict[str, str] = {
    "UA": "http://opcfoundation.org/UA/",
    "DI": "http://opcfoundation.org/UA/DI/",
    "IA": "http://opcfoundation.org/UA/IA/",
    "MA": "http://opcfoundation.org/UA/Machinery/",
    "MT": "http://opcfoundation.org/UA/MachineTool/",
    "CNC": "http://opcfoundation.org/UA/CNC",
}
"""Browse-path prefixes of the companion specifications (OPC 10000-100 DI, OPC 40001 Machinery,
OPC 40501 MachineTool, OPC 40502 CNC; the CNC URI has no trailing slash in its NodeSet)."""

APP_PREFIX = "app"
"""Prefix of the server's own instance names (machine, tool, spindle names): the namespace of the
source's ``namespaces: {app: URI}``, else the server's ApplicationUri namespace (NamespaceArray[1],
OPC 10000-5 §6.3.1)."""

_NODEID = re.compile(r"^(?:(?P<key>nsu|ns)=(?P<ns>[^;]+);)?(?P<t>[isgb])=(?P<id>.+)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A NodeId whose namespace is named by URI (None = the OPC UA base namespace 0)."""

    namespace_uri: str | None
    identifier_type: str
    identifier: str

    def __str__(self) -> str:
        head = f"nsu={self.namespace_uri};" if self.namespace_uri else ""
        return f"{head}{self.identifier_type}={self.identifier}"


@dataclass(frozen=True, slots=True)
class BrowsePathAddress:
    """A path of (prefix, BrowseName) pairs from the Objects folder."""

    elements: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return "/".join(f"{p}:{n}" for p, n in self.elements)


Address = NodeAddress | BrowsePathAddress


def parse_address(text: str) -> Address:
    """Parse a site-file address; raises ValueError saying how to write it instead."""
    text = text.strip()
    m = _NODEID.match(text)
    if m is not None:
        ns = m.group("ns")
        uri: str | None = None
        if ns is not None:
            if ns.isdigit():
                if int(ns) != 0:
                    raise ValueError(
                        f"{text!r}: namespace index {ns} may change when the server restarts; "
                        "write the namespace URI instead (nsu=<uri>;...; `monitor discover` prints it)"
                    )
            else:
                uri = ns
        ident = m.group("id")
        if m.group("t") == "i" and not ident.isdigit():
            raise ValueError(f"{text!r}: numeric identifier expected after i=")
        return NodeAddress(uri, m.group("t"), ident)
    elements: list[tuple[str, str]] = []
    for part in text.strip("/").split("/"):
        prefix, sep, name = part.partition(":")
        if not sep or not prefix or not name:
            raise ValueError(
                f"{text!r}: element {part!r} needs a namespace prefix (MA:, MT:, CNC:, DI:, app: ...), "
                "or write a NodeId as nsu=<uri>;s=<id>"
            )
        elements.append((prefix, name))
    return BrowsePathAddress(tuple(elements))


def format_nodeid(nodeid: ua.NodeId, namespaces: Sequence[str]) -> str:
    """A NodeId written with its namespace URI, the form the site file takes."""
    from asyncua import ua

    ident = nodeid.Identifier
    t = {
        ua.NodeIdType.TwoByte: "i",
        ua.NodeIdType.FourByte: "i",
        ua.NodeIdType.Numeric: "i",
        ua.NodeIdType.String: "s",
        ua.NodeIdType.Guid: "g",
        ua.NodeIdType.ByteString: "b",
    }[nodeid.NodeIdType]
    if t == "b" and isinstance(ident, bytes):
        ident = base64.b64encode(ident).decode("ascii")
    if nodeid.NamespaceIndex == 0:
        return f"{t}={ident}"
    uri = namespaces[nodeid.NamespaceIndex] if nodeid.NamespaceIndex < len(namespaces) else str(nodeid.NamespaceIndex)
    return f"nsu={uri};{t}={ident}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """Result of resolving addresses on one connection: NodeIds found and the reason for each miss."""

    nodes: dict[str, ua.NodeId]
    missing: dict[str, str]
    namespaces: list[str]


def _prefix_table(namespaces: Sequence[str], extra: Mapping[str, str]) -> dict[str, str]:
    table = dict(PREFIXES)
    if len(namespaces) > 1:
        table[APP_PREFIX] = namespaces[1]
    table.update(extra)
    return table


def _to_nodeid(addr: NodeAddress, ns_index: Mapping[str, int]) -> ua.NodeId:
    from asyncua import ua

    idx = 0
    if addr.namespace_uri is not None:
        if addr.namespace_uri not in ns_index:
            raise KeyError(f"namespace {addr.namespace_uri!r} is not on this server")
        idx = ns_index[addr.namespace_uri]
    if addr.identifier_type == "i":
        return ua.NodeId(int(addr.identifier), idx)
    if addr.identifier_type == "s":
        return ua.NodeId(addr.identifier, idx, ua.NodeIdType.String)
    if addr.identifier_type == "g":
        return ua.NodeId(uuid.UUID(addr.identifier), idx, ua.NodeIdType.Guid)
    return ua.NodeId(base64.b64decode(addr.identifier), idx, ua.NodeIdType.ByteString)


async def resolve(client: Client, addresses: Mapping[str, Address], extra_prefixes: Mapping[str, str]) -> Resolution:
    """Turn every address into this server's NodeId, in one TranslateBrowsePaths call.

    A NodeId address is not checked for existence here: creating the monitored item does that.
    """
    from asyncua import ua

    namespaces: list[str] = list(await client.get_namespace_array())
    ns_index = {uri: i for i, uri in enumerate(namespaces)}
    table = _prefix_table(namespaces, extra_prefixes)
    nodes: dict[str, ua.NodeId] = {}
    missing: dict[str, str] = {}
    keys: list[str] = []
    paths: list[ua.BrowsePath] = []
    for key, addr in addresses.items():
        if isinstance(addr, NodeAddress):
            try:
                nodes[key] = _to_nodeid(addr, ns_index)
            except KeyError as exc:
                missing[key] = str(exc.args[0])
            continue
        rel = ua.RelativePath()
        bad = None
        for prefix, name in addr.elements:
            uri = table.get(prefix)
            if uri is None:
                bad = f"unknown prefix {prefix!r}; known: {', '.join(sorted(table))}"
                break
            if uri not in ns_index:
                bad = f"namespace {uri!r} (prefix {prefix}) is not on this server"
                break
            el = ua.RelativePathElement()
            el.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
            el.IsInverse = False
            el.IncludeSubtypes = True
            el.TargetName = ua.QualifiedName(name, ns_index[uri])
            rel.Elements.append(el)
        if bad is not None:
            missing[key] = bad
            continue
        bp = ua.BrowsePath()
        bp.StartingNode = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        bp.RelativePath = rel
        keys.append(key)
        paths.append(bp)
    if paths:
        results = await client.uaclient.translate_browsepaths_to_nodeids(paths)
        for key, result in zip(keys, results, strict=True):
            if result.StatusCode.is_good() and result.Targets:
                target = result.Targets[0].TargetId
                nodes[key] = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
            else:
                missing[key] = f"browse path not found ({result.StatusCode.name})"
    return Resolution(nodes, missing, namespaces)
