"""A simulated CNC cell served over real OPC UA, shaped like OPC 40501 (MachineTool) and 40502 (CNC).

The demo, the tests and the benchmarks point the real adapter at this server. Loading the
OPC Foundation NodeSet2 files takes many seconds, so the simulator builds only the *shape* the
monitor reads, with the companion specifications' namespace URIs and BrowseNames::

    Objects
    └── MA:Machines
        └── app:<machine>
            ├── MT:Monitoring/MT:MachineTool/MT:PowerOnDuration
            ├── MT:Equipment/MT:Tools/app:T<n>/MT:ToolLife/app:Count   (+ Indication, WarningValue, LimitValue)
            ├── MT:Production
            │   ├── MT:ActiveProgram/MT:Name, MT:ActiveProgram/MT:State/UA:CurrentState
            │   └── MT:Statistics/MT:PartsProducedInLifetime
            ├── CNC:CncInterface
            │   ├── CNC:CncSpindleList/app:S1/CNC:ActLoad, CNC:ActSpeed, CNC:ActOverride
            │   └── CNC:CncChannelList/app:C1/CNC:ActProgramName, CNC:ActMainProgramName, CNC:ToolId
            └── app:Vendor
                ├── app:ActiveToolLife
                └── app:Macro/app:R500 ...   (probe results, one macro variable per probe value)

Instance nodes live in the server's own namespace (:data:`SIM_APPLICATION_URI`) with string
NodeIds ``<machine>.<path>``. :meth:`OpcUaSimServer.publish` is the hook the cell physics calls:
it writes the mapped node with the given SourceTimestamp, so subscribers see controller time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import Node, Server, ua
from asyncua.crypto.permission_rules import User, UserRole

from adapters.opcua.addressing import PREFIXES

__all__ = [
    "DEFAULT_SIGNAL_MAP",
    "SIM_APPLICATION_URI",
    "MachineShape",
    "OpcUaSimServer",
    "SimSecurity",
    "shapes_for",
    "signal_map",
]

log = logging.getLogger(__name__)

SIM_APPLICATION_URI = "urn:cnc-monitor:sim"
"""ApplicationUri of the simulator and the namespace of its instance nodes (prefix ``app``)."""

_MACHINE = "MA:Machines/app:{machine}"
DEFAULT_SIGNAL_MAP: dict[str, str] = {
    "spindle.load": _MACHINE + "/CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActLoad",
    "spindle.speed": _MACHINE + "/CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActSpeed",
    "spindle.override": _MACHINE + "/CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActOverride",
    "tool.number": _MACHINE + "/CNC:CncInterface/CNC:CncChannelList/app:C1/CNC:ToolId",
    "tool.life": _MACHINE + "/app:Vendor/app:ActiveToolLife",
    "program.name": _MACHINE + "/MT:Production/MT:ActiveProgram/MT:Name",
    "execution": _MACHINE + "/MT:Production/MT:ActiveProgram/MT:State/UA:CurrentState",
    "part.count": _MACHINE + "/MT:Production/MT:Statistics/MT:PartsProducedInLifetime",
}
"""Canonical signal -> browse path template (``{machine}`` filled in) for the simulator; probe
signals map to macro variables by NodeId, see :func:`signal_map`."""

_FIRST_MACRO = 500


@dataclass(frozen=True, slots=True)
class MachineShape:
    """One simulated machine: its id and the probe values and tools it exposes from the start.

    Probe values and tools first published later are added on the fly, but a client only sees
    them after its next (re)connect, so list the ones a config maps.
    """

    id: str
    probes: tuple[str, ...] = ()
    tools: tuple[int, ...] = ()
    extra: tuple[str, ...] = ()
    """Further canonical signals (e.g. ``part.complete``) exposed as vendor variables."""


def shapes_for(machines: Iterable[Any]) -> list[MachineShape]:
    """Shapes for the machines of a simulated cell (anything with ``id`` and ``signals``)."""
    out = []
    for m in machines:
        signals = tuple(m.signals)
        probes = tuple(s.removeprefix("probe.") for s in signals if s.startswith("probe."))
        extra = tuple(s for s in signals if not s.startswith("probe.") and s not in DEFAULT_SIGNAL_MAP)
        out.append(MachineShape(m.id, probes=probes, extra=extra))
    return out


def signal_map(machine: MachineShape | str) -> dict[str, str]:
    """The ``signals:`` section that reads ``machine`` from this simulator."""
    m = machine if isinstance(machine, MachineShape) else MachineShape(machine)
    out = {k: v.format(machine=m.id) for k, v in DEFAULT_SIGNAL_MAP.items()}
    for i, probe in enumerate(m.probes):
        out[f"probe.{probe}"] = f"nsu={SIM_APPLICATION_URI};s={m.id}.Vendor.Macro.R{_FIRST_MACRO + i}"
    for t in m.tools:
        out[f"tool.life.{t}"] = _MACHINE.format(machine=m.id) + f"/MT:Equipment/MT:Tools/app:T{t}/MT:ToolLife/app:Count"
    for sig in m.extra:
        out[sig] = f"nsu={SIM_APPLICATION_URI};s={m.id}.Vendor.{sig}"
    return out


@dataclass(frozen=True, slots=True)
class SimSecurity:
    """Switches the simulator to secure endpoints only, with user names instead of anonymous access."""

    certificate: Path
    private_key: Path
    users: Mapping[str, str] = field(default_factory=dict)
    policies: tuple[ua.SecurityPolicyType, ...] = (
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ua.SecurityPolicyType.Basic256Sha256_Sign,
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
        ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    )


class _PasswordUsers:
    """asyncua user manager accepting exactly the configured user names and passwords."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass(slots=True)
class _Var:
    node: ua.NodeId
    vtype: ua.VariantType


class OpcUaSimServer:
    """The simulator's OPC UA server; ``async with OpcUaSimServer([...]) as srv: srv.endpoint``.

    Binds ``host:port`` (port 0 = any free port; the real one is in :attr:`port` once started).
    """

    def __init__(
        self,
        machines: Sequence[str | MachineShape],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: SimSecurity | None = None,
        application_uri: str = SIM_APPLICATION_URI,
        start_time: datetime | None = None,
        extra_namespaces: Sequence[str] = (),
    ) -> None:
        self.machines = [m if isinstance(m, MachineShape) else MachineShape(m) for m in machines]
        if len({m.id for m in self.machines}) != len(self.machines):
            raise ValueError("machine ids must be unique")
        self.host = host
        self.port = port
        self.security = security
        self.application_uri = application_uri
        self.extra_namespaces = tuple(extra_namespaces)
        """Registered before the companion namespaces: shifts their indexes, as another firmware would."""
        self.start_time = start_time or datetime.now(UTC)
        """Timestamp of the placeholder (BadWaitingForInitialData) values before the first publish."""
        self._server: Server | None = None
        self._ns: dict[str, int] = {}
        self._vars: dict[tuple[str, str], list[_Var]] = {}
        self._objects: dict[tuple[str, str], Node] = {}
        self._macro_next: dict[str, int] = {}
        self._active_tool: dict[str, int] = {}
        self._last_values: dict[tuple[str, str], tuple[float | str | None, datetime]] = {}
        self._lock = asyncio.Lock()
        self.published = 0

    # ------------------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def endpoint(self) -> str:
        """The URL clients connect to (valid once started)."""
        return f"opc.tcp://{self.host}:{self.port}"

    async def start(self) -> None:
        """Build the address space and listen; returns once the socket accepts connections."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        user_manager = _PasswordUsers(self.security.users) if self.security and self.security.users else None
        server = Server(user_manager=user_manager)
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}")
        server.set_server_name("cnc-monitor simulated CNC cell")
        await server.set_application_uri(self.application_uri)
        server.set_match_discovery_client_ip(False)
        if self.security is not None:
            await server.load_certificate(str(self.security.certificate))
            await server.load_private_key(str(self.security.private_key))
            server.set_security_policy(list(self.security.policies))
            if self.security.users:
                server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self._server = server
        try:
            await self._build()
            for (machine, signal), (value, time) in list(self._last_values.items()):
                await self.publish(machine, signal, value, time)  # after a restart(): values survive
            await server.start()
        except BaseException:
            self._server = None
            await server.stop()
            raise
        if server.bserver is not None:
            self.port = server.bserver.port
        log.info("OPC UA simulator listening on %s", self.endpoint)

    async def stop(self) -> None:
        """Close every client connection and the listening socket (a 'killed' controller)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def restart(self) -> None:
        """Stop and start again on the same port, like a controller rebooting.

        The address space is rebuilt (new server, new sessions) and every signal gets its last
        published value back with its original timestamp, as a controller that keeps its
        counters and program across a reboot reports them.
        """
        await self.stop()
        self._vars.clear()
        self._objects.clear()
        self._active_tool.clear()
        await self.start()

    # ------------------------------------------------------------------------------ address space
    async def _build(self) -> None:
        assert self._server is not None
        srv = self._server
        for uri in self.extra_namespaces:
            await srv.register_namespace(uri)
        for prefix in ("DI", "MA", "MT", "CNC"):
            self._ns[prefix] = await srv.register_namespace(PREFIXES[prefix])
        self._ns["app"] = await srv.get_namespace_index(self.application_uri)
        self._ns["UA"] = 0
        objects = srv.nodes.objects
        machines = await objects.add_object(ua.NodeId("Machines", self._ns["app"]), self._q("MA", "Machines"))
        for m in self.machines:
            await self._build_machine(machines, m)

    def _q(self, prefix: str, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self._ns[prefix])

    def _id(self, machine: str, path: str) -> ua.NodeId:
        return ua.NodeId(f"{machine}.{path}", self._ns["app"])

    async def _obj(self, parent: Node, machine: str, path: str, prefix: str, name: str) -> Node:
        node = await parent.add_object(self._id(machine, path), self._q(prefix, name))
        self._objects[(machine, path)] = node
        return node

    async def _var(
        self,
        parent: Node,
        machine: str,
        path: str,
        prefix: str,
        name: str,
        value: Any,
        vtype: ua.VariantType,
        signals: Iterable[str] = (),
        description: str | None = None,
    ) -> Node:
        nid = self._id(machine, path)
        node = await parent.add_variable(nid, self._q(prefix, name), ua.Variant(value, vtype), vtype)
        if signals:
            # No value until the machine publishes one: a client must not mistake the
            # placeholder for a reading, nor its creation time for controller time.
            await self._server_or_fail().write_attribute_value(
                nid,
                ua.DataValue(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData),
                    SourceTimestamp=self.start_time,
                    ServerTimestamp=self.start_time,
                ),
            )
        if description:
            await node.write_attribute(ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(description))))
        for s in signals:
            self._vars.setdefault((machine, s), []).append(_Var(nid, vtype))
        return node

    async def _build_machine(self, machines: Node, m: MachineShape) -> None:
        mid = m.id
        root = await machines.add_object(ua.NodeId(mid, self._ns["app"]), self._q("app", mid))
        self._objects[(mid, "")] = root
        mon = await self._obj(root, mid, "Monitoring", "MT", "Monitoring")
        mt = await self._obj(mon, mid, "Monitoring.MachineTool", "MT", "MachineTool")
        await self._var(mt, mid, "Monitoring.MachineTool.PowerOnDuration", "MT", "PowerOnDuration", 0, ua.VariantType.UInt32)
        equipment = await self._obj(root, mid, "Equipment", "MT", "Equipment")
        await self._obj(equipment, mid, "Equipment.Tools", "MT", "Tools")
        for t in m.tools:
            await self._add_tool(mid, t)
        prod = await self._obj(root, mid, "Production", "MT", "Production")
        active = await self._obj(prod, mid, "Production.ActiveProgram", "MT", "ActiveProgram")
        await self._var(active, mid, "Production.ActiveProgram.Name", "MT", "Name", "", ua.VariantType.String, ["program.name"])
        state = await self._obj(active, mid, "Production.ActiveProgram.State", "MT", "State")
        await self._var(
            state, mid, "Production.ActiveProgram.State.CurrentState", "UA", "CurrentState",
            ua.LocalizedText("Initializing"), ua.VariantType.LocalizedText, ["execution"],
        )  # fmt: skip
        stats = await self._obj(prod, mid, "Production.Statistics", "MT", "Statistics")
        await self._var(
            stats, mid, "Production.Statistics.PartsProducedInLifetime", "MT", "PartsProducedInLifetime",
            0, ua.VariantType.UInt32, ["part.count"],
        )  # fmt: skip
        cnc = await self._obj(root, mid, "CncInterface", "CNC", "CncInterface")
        spindles = await self._obj(cnc, mid, "CncInterface.CncSpindleList", "CNC", "CncSpindleList")
        s1 = await self._obj(spindles, mid, "CncInterface.CncSpindleList.S1", "app", "S1")
        base = "CncInterface.CncSpindleList.S1."
        await self._var(s1, mid, base + "ActLoad", "CNC", "ActLoad", 0.0, ua.VariantType.Double, ["spindle.load"])
        await self._var(s1, mid, base + "ActSpeed", "CNC", "ActSpeed", 0.0, ua.VariantType.Double, ["spindle.speed"])
        await self._var(s1, mid, base + "ActOverride", "CNC", "ActOverride", 100.0, ua.VariantType.Double, ["spindle.override"])
        channels = await self._obj(cnc, mid, "CncInterface.CncChannelList", "CNC", "CncChannelList")
        c1 = await self._obj(channels, mid, "CncInterface.CncChannelList.C1", "app", "C1")
        base = "CncInterface.CncChannelList.C1."
        await self._var(c1, mid, base + "ActProgramName", "CNC", "ActProgramName", "", ua.VariantType.String, ["program.name"])
        await self._var(
            c1, mid, base + "ActMainProgramName", "CNC", "ActMainProgramName", "", ua.VariantType.String,
            ["program.name"],
        )  # fmt: skip
        await self._var(c1, mid, base + "ToolId", "CNC", "ToolId", 0, ua.VariantType.UInt32, ["tool.number"])
        vendor = await self._obj(root, mid, "Vendor", "app", "Vendor")
        await self._var(
            vendor, mid, "Vendor.ActiveToolLife", "app", "ActiveToolLife", 0.0, ua.VariantType.Double, ["tool.life"],
            description="tool.life",
        )  # fmt: skip
        await self._obj(vendor, mid, "Vendor.Macro", "app", "Macro")
        self._macro_next[mid] = _FIRST_MACRO
        for probe in m.probes:
            await self._add_probe(mid, probe)
        for sig in m.extra:
            await self._var(vendor, mid, f"Vendor.{sig}", "app", sig, 0.0, ua.VariantType.Double, [sig], description=sig)

    async def _add_tool(self, mid: str, number: int) -> None:
        tools = self._objects[(mid, "Equipment.Tools")]
        path = f"Equipment.Tools.T{number}"
        tool = await self._obj(tools, mid, path, "app", f"T{number}")
        life = await self._obj(tool, mid, path + ".ToolLife", "MT", "ToolLife")
        count = await self._var(
            life, mid, path + ".ToolLife.Count", "app", "Count", 0.0, ua.VariantType.Double, [f"tool.life.{number}"]
        )
        await count.add_property(self._id(mid, path + ".ToolLife.Count.Indication"), self._q("MT", "Indication"), 3)
        await count.add_property(self._id(mid, path + ".ToolLife.Count.WarningValue"), self._q("MT", "WarningValue"), 400.0)
        await count.add_property(self._id(mid, path + ".ToolLife.Count.LimitValue"), self._q("MT", "LimitValue"), 500.0)

    async def _add_probe(self, mid: str, probe: str) -> None:
        n = self._macro_next[mid]
        self._macro_next[mid] = n + 1
        macro = self._objects[(mid, "Vendor.Macro")]
        await self._var(
            macro, mid, f"Vendor.Macro.R{n}", "app", f"R{n}", 0.0, ua.VariantType.Double, [f"probe.{probe}"],
            description=f"probe.{probe}",
        )  # fmt: skip

    def _server_or_fail(self) -> Server:
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return self._server

    # ------------------------------------------------------------------------------ publishing
    async def publish_event(self, event: Any) -> None:
        """The :data:`monitor.sim.Publish` hook: write one ``SimEvent(time, machine, signal, value)``."""
        await self.publish(event.machine, event.signal, event.value, event.time)

    def node_of(self, machine: str, signal: str) -> ua.NodeId:
        """The (first) node a canonical signal of a machine is written to."""
        return self._vars[(machine, signal)][0].node

    async def publish(self, machine: str, signal: str, value: float | str | None, time: datetime) -> None:
        """Write ``value`` to the node(s) of ``signal`` with ``time`` as SourceTimestamp.

        ``None`` is published as status BadNoCommunication (the controller cannot say).
        ``tool.number`` also selects which tool's life ``tool.life`` updates.
        """
        server = self._server
        if server is None:
            raise RuntimeError("simulator is not running")
        key = (machine, signal)
        if key not in self._vars:
            await self._grow(machine, signal, value)
        if time.tzinfo is None:
            time = time.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        targets = list(self._vars[key])
        if signal == "tool.number" and isinstance(value, int | float):
            self._active_tool[machine] = int(value)
        if signal == "tool.life":
            tool = self._active_tool.get(machine)
            if tool is not None:
                if (machine, f"tool.life.{tool}") not in self._vars:
                    await self._grow(machine, f"tool.life.{tool}")
                targets.extend(self._vars[(machine, f"tool.life.{tool}")])
        for var in targets:
            if value is None:
                dv = ua.DataValue(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadNoCommunication),
                    SourceTimestamp=time,
                    ServerTimestamp=now,
                )
            else:
                dv = ua.DataValue(ua.Variant(_coerce(value, var.vtype), var.vtype), SourceTimestamp=time, ServerTimestamp=now)
            await server.write_attribute_value(var.node, dv)
        self._last_values[key] = (value, time)
        self.published += 1

    async def _grow(self, machine: str, signal: str, value: float | str | None = None) -> None:
        async with self._lock:
            if (machine, signal) in self._vars:
                return
            if (machine, "") not in self._objects:
                raise KeyError(f"unknown machine {machine!r}; simulator serves {[m.id for m in self.machines]}")
            if signal.startswith("probe."):
                await self._add_probe(machine, signal.removeprefix("probe."))
            elif signal.startswith("tool.life.") and signal.removeprefix("tool.life.").isdigit():
                await self._add_tool(machine, int(signal.removeprefix("tool.life.")))
            else:
                vendor = self._objects[(machine, "Vendor")]
                text = isinstance(value, str)
                await self._var(
                    vendor, machine, f"Vendor.{signal}", "app", signal, "" if text else 0.0,
                    ua.VariantType.String if text else ua.VariantType.Double, [signal], description=signal,
                )  # fmt: skip


def _coerce(value: float | str, vtype: ua.VariantType) -> Any:
    if vtype is ua.VariantType.LocalizedText:
        return ua.LocalizedText(str(value))
    if vtype is ua.VariantType.String:
        return str(value)
    if isinstance(value, str):
        raise TypeError(f"text {value!r} published to a numeric node")
    if vtype in (ua.VariantType.UInt32, ua.VariantType.Int32, ua.VariantType.UInt64):
        return round(value)
    return float(value)
