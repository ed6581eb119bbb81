"""An OPC UA server that is not ours: plain names, its own timing, no execution state.

It stands for the controller of issue 12: one machine that moves its part counter and writes its
probe results together once per part, with a result id the probing macro writes with them, and no
execution signal. Like that server it stamps each item's SourceTimestamp when it *samples* it, and
samples in the order the subscribed client created its monitored items (or in an order the test
chooses), each item 0.1-9 ms after the one before::

    Objects
    └── Cnc                       (urn:example:foreign-cnc)
        ├── PartCounter           UInt32
        ├── ActiveProgram         String
        ├── Spindle/Load          Double, EngineeringUnits %  (EUInformation)
        ├── Spindle/Speed         Double, EngineeringUnits 1/min
        └── Probe/Result1..3      Double, EngineeringUnits mm; Probe/ResultId UInt32
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from asyncua import Node, Server, ua

__all__ = ["FOREIGN_URI", "PROBE_NODES", "ForeignCnc"]

FOREIGN_URI = "urn:example:foreign-cnc"
PROBE_NODES = ("Probe.Result1", "Probe.Result2", "Probe.Result3")

_UNECE = "http://www.opcfoundation.org/UA/units/un/cefact"
_UNITS = {"%": (20529, "percent"), "mm": (5057869, "millimetre"), "1/min": (5066068, "revolutions per minute")}
"""UNECE Rec. 20 common codes (P1, MMT, RPM) as OPC UA UnitIds (OPC 10000-8 §5.6.3)."""


def _eu(unit: str) -> ua.EUInformation:
    unit_id, description = _UNITS[unit]
    info = ua.EUInformation()
    info.NamespaceUri = _UNECE
    info.UnitId = unit_id
    info.DisplayName = ua.LocalizedText(unit if unit != "1/min" else "rpm")
    info.Description = ua.LocalizedText(description)
    return info


class ForeignCnc:
    """``async with ForeignCnc() as cnc:`` serves on 127.0.0.1 (any free port) until the block ends."""

    def __init__(self, *, seed: int = 0, spacing_ms: tuple[float, float] = (0.1, 9.0)) -> None:
        self._rng = random.Random(seed)
        self.spacing_ms = spacing_ms
        self._server: Server | None = None
        self.ns = 0
        self.port = 0
        self.nodes: dict[str, ua.NodeId] = {}
        self.order: Sequence[str] | None = None
        """Sampling order (node names) chosen by the test; None = the subscribed client's order."""

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        server = Server()
        await server.init()
        server.set_endpoint("opc.tcp://127.0.0.1:0")
        server.set_server_name("foreign CNC")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await server.register_namespace(FOREIGN_URI)
        self._server = server
        cnc = await server.nodes.objects.add_object(ua.NodeId("Cnc", self.ns), ua.QualifiedName("Cnc", self.ns))
        await self._var(cnc, "PartCounter", 0, ua.VariantType.UInt32)
        await self._var(cnc, "ActiveProgram", "O1001", ua.VariantType.String)
        spindle = await cnc.add_object(ua.NodeId("Cnc.Spindle", self.ns), ua.QualifiedName("Spindle", self.ns))
        await self._var(spindle, "Spindle.Load", 0.0, ua.VariantType.Double, unit="%")
        await self._var(spindle, "Spindle.Speed", 0.0, ua.VariantType.Double, unit="1/min")
        probe = await cnc.add_object(ua.NodeId("Cnc.Probe", self.ns), ua.QualifiedName("Probe", self.ns))
        for name in PROBE_NODES:
            await self._var(probe, name, 0.0, ua.VariantType.Double, unit="mm")
        await self._var(probe, "Probe.ResultId", 0, ua.VariantType.UInt32)
        await server.start()
        assert server.bserver is not None
        self.port = server.bserver.port
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _var(self, parent: Node, name: str, value: Any, vtype: ua.VariantType, *, unit: str | None = None) -> None:
        nid = ua.NodeId(f"Cnc.{name}", self.ns)
        node = await parent.add_variable(nid, ua.QualifiedName(name.rpartition(".")[2], self.ns), ua.Variant(value, vtype), vtype)
        if unit is not None:
            await node.add_property(
                ua.NodeId(f"Cnc.{name}.EngineeringUnits", self.ns), ua.QualifiedName("EngineeringUnits", 0), _eu(unit)
            )
        self.nodes[name] = nid

    def node_address(self, name: str) -> str:
        """The address of a node as a NodeId with its namespace URI."""
        return f"nsu={FOREIGN_URI};s=Cnc.{name}"

    def _client_order(self) -> list[ua.NodeId]:
        """The nodes the subscribed clients monitor, in the order they created the monitored items."""
        assert self._server is not None
        order: list[ua.NodeId] = []
        for sub in self._server.iserver.subscription_service.subscriptions.values():
            for item in sub.monitored_item_srv._monitored_items.values():
                if item.read_value_id is not None and item.read_value_id.NodeId not in order:
                    order.append(item.read_value_id.NodeId)
        return order

    async def write(self, name: str, value: Any, time: datetime) -> None:
        assert self._server is not None
        nid = self.nodes[name]
        vtype = ua.VariantType.UInt32 if name in ("PartCounter", "Probe.ResultId") else None
        variant = ua.Variant(int(value), vtype) if vtype else ua.Variant(value)
        await self._server.write_attribute_value(nid, ua.DataValue(variant, SourceTimestamp=time, ServerTimestamp=time))

    async def together(self, values: Mapping[str, Any], time: datetime) -> list[tuple[str, datetime]]:
        """Write values the controller changed at ``time`` as the server samples them: one item after
        the other in its sampling order, each stamped a few ms after the one before. Returns the stamps."""
        by_id = {self.nodes[n]: n for n in values}
        order = list(self.order) if self.order is not None else [by_id[n] for n in self._client_order() if n in by_id]
        order += [n for n in values if n not in order]
        stamp = time
        out = []
        for name in order:
            stamp += timedelta(milliseconds=self._rng.uniform(*self.spacing_ms))
            await self.write(name, values[name], stamp)
            out.append((name, stamp))
        return out

    async def cycle(
        self, count: int, results: Sequence[float], start: datetime, *, cycle_s: float = 40.0, loads: Iterable[float] = ()
    ) -> datetime:
        """One part: spindle load while cutting, then the counter, the results and the result id together."""
        loads = list(loads)
        step = cycle_s / (len(loads) + 2)
        for i, load in enumerate(loads):
            await self.write("Spindle.Load", float(load), start + timedelta(seconds=step * (i + 1)))
        end = start + timedelta(seconds=cycle_s - step / 2)
        values: dict[str, Any] = {"PartCounter": count, "Probe.ResultId": count}
        values.update(zip(PROBE_NODES, results, strict=True))
        await self.together(values, end)
        return end
