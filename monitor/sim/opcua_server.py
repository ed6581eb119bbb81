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
                ├── app:Macro/app:R500 ...   (probe results, one macro variable per probe value)
                ├── app:Offsets/app:G54/app:X, Y, Z          (work offsets, writable)
                └── app:ToolOffsets/app:T12/app:DiameterWear ... (tool wear registers, writable)

Instance nodes live in the server's own namespace (:data:`SIM_APPLICATION_URI`) with string
NodeIds ``<machine>.<path>``. :meth:`OpcUaSimServer.publish` is the hook the cell physics calls:
it writes the mapped node with the given SourceTimestamp, so subscribers see controller time.

The offset registers (work offsets, tool wear) are the only nodes a client may write, and only a
user named in :attr:`SimSecurity.writers` (anyone on an insecure simulator). Every accepted write
is kept in :attr:`OpcUaSimServer.register_writes`; :attr:`OpcUaSimServer.alter_writes` lets a test
play a controller (or a proxy) that stores something else than what was written. What a register
does to the parts is :mod:`monitor.sim.closedloop`'s business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import Node, Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole

from adapters.opcua.addressing import PREFIXES
from monitor.sim.process import PROBE_TOOL_NUMBER

__all__ = [
    "DEFAULT_SIGNAL_MAP",
    "SIM_APPLICATION_URI",
    "TOOL_REGISTER_LEAVES",
    "MachineShape",
    "OpcUaSimServer",
    "RegisterWrite",
    "SimSecurity",
    "default_registers",
    "register_entries",
    "register_path",
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
    registers: tuple[str, ...] = ()
    """Writable offset registers by :func:`register_path` (``Offsets.G54.X``, ``ToolOffsets.T12.DiameterWear``)."""


TOOL_REGISTER_LEAVES: dict[str, str] = {
    "tool_length_wear": "LengthWear",
    "tool_radius_wear": "RadiusWear",
    "tool_diameter_wear": "DiameterWear",
    "lathe_x_wear": "XWear",
    "lathe_z_wear": "ZWear",
}
"""The simulator's node name of each tool register kind."""


def register_path(kind: str, *, tool: str | None = None, work_offset: str | None = None, axis: str | None = None) -> str:
    """Where the simulator keeps a register below its machine's ``Vendor`` folder.

    >>> register_path("work_offset", work_offset="G54", axis="x")
    'Offsets.G54.X'
    >>> register_path("tool_diameter_wear", tool="T12")
    'ToolOffsets.T12.DiameterWear'
    """
    if kind == "work_offset":
        if axis is None:
            raise ValueError("a work offset register needs its axis")
        return f"Offsets.{work_offset or 'G54'}.{axis.upper()}"
    if tool is None:
        raise ValueError(f"a {kind} register needs its tool")
    name = tool if tool.upper().startswith("T") else f"T{tool}"
    return f"ToolOffsets.{name}.{TOOL_REGISTER_LEAVES[kind]}"


def default_registers(tools: Iterable[int | str]) -> tuple[str, ...]:
    """G54 X/Y/Z and the mill wear registers (length, radius, diameter) of every cutting tool."""
    out = [register_path("work_offset", work_offset="G54", axis=a) for a in "xyz"]
    for t in tools:
        if str(t) == str(PROBE_TOOL_NUMBER):
            continue
        out.extend(register_path(k, tool=f"T{t}") for k in ("tool_length_wear", "tool_radius_wear", "tool_diameter_wear"))
    return tuple(out)


def register_entries(machine: str, paths: Iterable[str], **limits: Any) -> list[dict[str, Any]]:
    """``offsets.registers`` entries of a site file for registers of this simulator (``limits``: max_change ...)."""
    leaves = {v: k for k, v in TOOL_REGISTER_LEAVES.items()}
    out: list[dict[str, Any]] = []
    for path in paths:
        parts = path.split(".")
        entry: dict[str, Any]
        if parts[0] == "Offsets":
            entry = {"register": "work_offset", "work_offset": ".".join(parts[1:-1]), "axis": parts[-1].lower()}
        else:
            entry = {"register": leaves[parts[-1]], "tool": ".".join(parts[1:-1])}
        entry["node"] = f"nsu={SIM_APPLICATION_URI};s={machine}.Vendor.{path}"
        out.append({**entry, **limits})
    return out


def shapes_for(machines: Iterable[Any]) -> list[MachineShape]:
    """Shapes for the machines of a simulated cell (anything with ``id`` and ``signals``)."""
    out = []
    for m in machines:
        signals = tuple(m.signals)
        probes = tuple(s.removeprefix("probe.") for s in signals if s.startswith("probe."))
        extra = tuple(s for s in signals if not s.startswith("probe.") and s not in DEFAULT_SIGNAL_MAP)
        registers = default_registers(getattr(m, "tools", ()))
        out.append(MachineShape(m.id, probes=probes, extra=extra, registers=registers))
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
    writers: frozenset[str] | None = None
    """User names that may write the offset registers; None: every user."""
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


class _WriteRights(SimpleRoleRuleset):  # type: ignore[misc]  # asyncua's ruleset is untyped
    """Users may read; only the named writers may send a Write request (a controller's user rights)."""

    def __init__(self, writers: frozenset[str] | None) -> None:
        super().__init__()
        self._writers = writers
        self._write = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        if action_type_id == self._write and self._writers is not None and getattr(user, "name", None) not in self._writers:
            return False
        return bool(super().check_validity(user, action_type_id, body))


@dataclass(frozen=True, slots=True)
class RegisterWrite:
    """One accepted write of a register by a client: who, when, what it asked and what was stored."""

    time: datetime
    machine: str
    register: str
    written: float
    stored: float
    user: str | None


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
        history: int = 0,
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
        self.history = history
        """Values of history each signal's node keeps (HistoryRead), like a controller with a historian; 0 = none."""
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
        self._historized: set[ua.NodeId] = set()
        self.published = 0
        self.changed_at: dict[tuple[str, str], datetime] = {}
        """Per (machine, signal), the SourceTimestamp of the newest publish that changed the node's
        value or status: the newest update a subscriber is told of (OPC 10000-4 §7.22.2: the default
        trigger reports value and status changes only). ``monitor demo`` waits for the daemon to
        have read up to these."""
        self._registers: dict[tuple[str, str], float] = {}
        self._register_nodes: dict[ua.NodeId, tuple[str, str]] = {}
        self.register_writes: list[RegisterWrite] = []
        """Every client write of a register, in order."""
        self.alter_writes: Callable[[str, str, float], float] | None = None
        """Test hook ``(machine, register, written) -> stored``: a controller that keeps another value."""

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
            server.set_security_policy(list(self.security.policies), permission_ruleset=_WriteRights(self.security.writers))
            if self.security.users:
                server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.subscribe_server_callback(CallbackType.PostWrite, self._after_write)
        self._server = server
        try:
            await self._build()
            for (machine, signal), (value, time) in list(self._last_values.items()):
                await self.publish(machine, signal, value, time)  # after a restart(): values survive
            await server.start()
            if self.history:
                await self._historize()
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
        self._historized.clear()
        self._objects.clear()
        self._active_tool.clear()
        self._register_nodes.clear()
        await self.start()

    async def _historize(self) -> None:
        """Keep the last ``history`` values written to every signal node, readable with HistoryRead.

        Every write is kept (like a controller's historian), not only changes: asyncua's own
        historizing subscribes with a value-change trigger and would drop a probe that measured
        the same value twice. Kept by count, since the simulated clock is not the host's."""
        server = self._server_or_fail()
        storage = server.iserver.history_manager.storage
        self._historized = {var.node for vars_ in self._vars.values() for var in vars_}
        for nodeid in sorted(self._historized, key=str):
            node = server.get_node(nodeid)
            await storage.new_historized_node(nodeid, None, self.history)
            await node.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(True))
            await node.set_attr_bit(ua.AttributeIds.AccessLevel, ua.AccessLevel.HistoryRead)
            await node.set_attr_bit(ua.AttributeIds.UserAccessLevel, ua.AccessLevel.HistoryRead)

    async def silence_subscriptions(self) -> int:
        """Fault drill: every client subscription stays alive (keep-alives) but delivers no change any
        more, like a server whose sampling hung; subscriptions created later work. Returns how many."""
        server = self._server_or_fail()
        silenced = 0
        for sub in list(server.iserver.subscription_service.subscriptions.values()):
            if sub.pub_request_callback is not None:  # a client's, not the server's own (history)
                await sub.set_publishing_mode(False)
                silenced += 1
        return silenced

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
        for path in m.registers:
            await self._add_register(vendor, mid, path)

    async def _add_register(self, vendor: Node, mid: str, path: str) -> None:
        parent, parent_path = vendor, "Vendor"
        *folders, leaf = path.split(".")
        if folders and folders[0] == "Offsets" and len(folders) > 2:  # a work offset named with a dot (G54.1)
            folders = [folders[0], ".".join(folders[1:])]
        for name in folders:
            parent_path = f"{parent_path}.{name}"
            existing = self._objects.get((mid, parent_path))
            parent = existing if existing is not None else await self._obj(parent, mid, parent_path, "app", name)
        value = self._registers.setdefault((mid, path), 0.0)
        nid = self._id(mid, f"Vendor.{path}")
        node = await parent.add_variable(
            nid, self._q("app", leaf), ua.Variant(value, ua.VariantType.Double), ua.VariantType.Double
        )
        await node.set_writable()
        await node.write_attribute(
            ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(f"offset register {path}")))
        )
        self._register_nodes[nid] = (mid, path)

    async def _after_write(self, event: ServerItemCallback, dispatcher: Any) -> None:
        """Keep what clients wrote to registers (surviving a restart), and let a test alter it."""
        results = event.response_params or []
        for item, status in zip(event.request_params.NodesToWrite, results, strict=False):
            key = self._register_nodes.get(item.NodeId)
            if key is None or not status.is_good() or item.AttributeId != ua.AttributeIds.Value:
                continue
            written = float(item.Value.Value.Value)
            stored = written if self.alter_writes is None else float(self.alter_writes(key[0], key[1], written))
            if stored != written:
                await self._server_or_fail().write_attribute_value(
                    item.NodeId, ua.DataValue(ua.Variant(stored, ua.VariantType.Double))
                )
            self._registers[key] = stored
            user = getattr(event.user, "name", None)
            self.register_writes.append(RegisterWrite(datetime.now(UTC), key[0], key[1], written, stored, user))

    def register_value(self, machine: str, register: str) -> float:
        """A register's value now (0 until written); KeyError for a register the machine does not have."""
        return self._registers[(machine, register)]

    async def set_register(self, machine: str, register: str, value: float) -> None:
        """Change a register as a machinist at the control would (not through OPC UA, not recorded)."""
        if (machine, register) not in self._registers:
            raise KeyError(f"{machine} has no register {register}")
        self._registers[(machine, register)] = value
        if self._server is not None:
            await self._server.write_attribute_value(
                self._id(machine, f"Vendor.{register}"), ua.DataValue(ua.Variant(value, ua.VariantType.Double))
            )

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

    def read_signal(self, machine: str, signal: str) -> Any:
        """The value a client reads now from the (first) node of a signal (None while it has none)."""
        dv = self._server_or_fail().read_attribute_value(self.node_of(machine, signal))
        return dv.Value.Value if dv.Value is not None else None

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
        first = server.read_attribute_value(targets[0].node)
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
            if var.node in self._historized:
                await server.iserver.history_manager.storage.save_node_value(var.node, dv)
        self._last_values[key] = (value, time)
        self.published += 1
        written = server.read_attribute_value(targets[0].node)
        if first.StatusCode != written.StatusCode or first.Value != written.Value:
            self.changed_at[key] = time

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
