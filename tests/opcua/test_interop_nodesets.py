"""Interop: the OPC Foundation's NodeSet2 files loaded into a real server, read by companion-spec paths.

The server is built from the published type definitions (DI, IA, Machinery, ISA95 job control,
Machinery Jobs, MachineTool = OPC 40501, CNC = OPC 40502), with a MachineTool and a CncInterface
instantiated from those types, so the browse paths the adapter resolves are the specifications',
not the simulator's imitation of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Node, Server, ua
from asyncua.common.instantiate_util import instantiate

from adapters.opcua.client import OpcUaAdapter
from adapters.opcua.config import OpcUaSource
from adapters.opcua.discover import discover
from tests.opcua.helpers import Collector, connected, machine_config
from tests.requires import need_shared

pytestmark = pytest.mark.interop

NODESETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "opcua" / "nodesets"
LOAD_ORDER = [  # (file, strict_mode): see ../shared/opcua/nodesets/README.md
    ("Opc.Ua.Di.NodeSet2.xml", True),
    ("Opc.Ua.IA.NodeSet2.xml", True),
    ("Opc.Ua.Machinery.NodeSet2.xml", True),
    ("opc.ua.isa95-jobcontrol.nodeset2.xml", True),
    ("Opc.Ua.Machinery.Jobs.Nodeset2.xml", False),
    ("Opc.Ua.MachineTool.NodeSet2.xml", True),
    ("Opc.Ua.CNC.NodeSet.xml", False),
]
APP_URI = "urn:cnc-monitor:interop"
MT_URI = "http://opcfoundation.org/UA/MachineTool/"
MA_URI = "http://opcfoundation.org/UA/Machinery/"
CNC_URI = "http://opcfoundation.org/UA/CNC"
T0 = datetime(2031, 2, 1, tzinfo=UTC)

SIGNALS = {
    "spindle.load": "CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActLoad",
    "tool.life.12": "MA:Machines/app:VMC-01/MT:Equipment/MT:Tools/app:T12/MT:ToolLife/app:Count",
    "program.name": "MA:Machines/app:VMC-01/MT:Production/MT:ActiveProgram/MT:Name",
    "execution": "MA:Machines/app:VMC-01/MT:Production/MT:ActiveProgram/MT:State/UA:CurrentState",
    "part.count": "MA:Machines/app:VMC-01/MT:Production/MT:Statistics/MT:PartsProducedInLifetime",
}


@dataclass
class SpecServer:
    server: Server
    endpoint: str
    nodes: dict[str, Node]


async def _child(node: Node, *path: tuple[int, str]) -> Node:
    return await node.get_child([ua.QualifiedName(name, ns) for ns, name in path])


@pytest.fixture(scope="module")
def nodesets() -> Path:
    for f, _ in LOAD_ORDER:
        need_shared("opcua", "nodesets", f)
    return NODESETS


@pytest.fixture
async def spec_server(nodesets: Path) -> AsyncIterator[SpecServer]:
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    for name, strict in LOAD_ORDER:
        await server.import_xml(str(nodesets / name), strict_mode=strict)
    ns = await server.get_namespace_array()
    mt, ma, cnc = ns.index(MT_URI), ns.index(MA_URI), ns.index(CNC_URI)
    app = await server.register_namespace(APP_URI)

    machines = server.get_node(ua.NodeId(1001, ma))  # MA:Machines
    (vmc, *_) = await instantiate(
        machines, server.get_node(ua.NodeId(13, mt)), bname=ua.QualifiedName("VMC-01", app), idx=app
    )  # MachineToolType
    production = await _child(vmc, (mt, "Production"))
    await instantiate(  # ProductionStatisticsType: optional in ProductionType, not in the instance declaration
        production, server.get_node(ua.NodeId(20, mt)), bname=ua.QualifiedName("Statistics", mt), idx=app
    )
    tools = await _child(vmc, (mt, "Equipment"), (mt, "Tools"))
    (tool, *_) = await instantiate(
        tools, server.get_node(ua.NodeId(50, mt)), bname=ua.QualifiedName("T12", app), idx=app
    )  # ToolType
    life = await _child(tool, (mt, "ToolLife"))
    await instantiate(life, server.get_node(ua.NodeId(61, mt)), bname=ua.QualifiedName("Count", app), idx=app)

    (cnc_if, *_) = await instantiate(
        server.nodes.objects, server.get_node(ua.NodeId(1007, cnc)), bname=ua.QualifiedName("CncInterface", cnc), idx=app
    )  # CncInterfaceType
    spindles = await _child(cnc_if, (cnc, "CncSpindleList"))
    # the <CncSpindle> placeholder of CncSpindleListType is broken in the NodeSet; use CncSpindleType
    await instantiate(spindles, server.get_node(ua.NodeId(1005, cnc)), bname=ua.QualifiedName("S1", app), idx=app)

    nodes = {
        "spindle.load": await _child(cnc_if, (cnc, "CncSpindleList"), (app, "S1"), (cnc, "ActLoad")),
        "tool.life.12": await _child(life, (app, "Count")),
        "program.name": await _child(production, (mt, "ActiveProgram"), (mt, "Name")),
        "execution": await _child(production, (mt, "ActiveProgram"), (mt, "State"), (0, "CurrentState")),
        "part.count": await _child(production, (mt, "Statistics"), (mt, "PartsProducedInLifetime")),
    }
    await server.start()
    assert server.bserver is not None
    try:
        yield SpecServer(server, f"opc.tcp://127.0.0.1:{server.bserver.port}", nodes)
    finally:
        await server.stop()


async def _write(spec: SpecServer, signal: str, value: object, vtype: ua.VariantType) -> None:
    dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=T0, ServerTimestamp=T0)
    await spec.server.write_attribute_value(spec.nodes[signal].nodeid, dv)


async def test_adapter_subscribes_by_companion_spec_paths(spec_server: SpecServer) -> None:
    cfg = machine_config(spec_server.endpoint, SIGNALS, namespaces={"app": APP_URI})
    async with OpcUaAdapter(cfg) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(connected, what="connected")
            assert set(adapter.resolved) == set(SIGNALS), adapter.stats.as_dict()
            await _write(spec_server, "spindle.load", 47.5, ua.VariantType.Double)
            await _write(spec_server, "tool.life.12", 123.0, ua.VariantType.Double)
            await _write(spec_server, "program.name", "O4711", ua.VariantType.String)
            await _write(spec_server, "execution", ua.LocalizedText("Running"), ua.VariantType.LocalizedText)
            await _write(spec_server, "part.count", 17, ua.VariantType.UInt32)
            want = {
                ("spindle.load", 47.5),
                ("tool.life.12", 123.0),
                ("program.name", "O4711"),
                ("execution", "Running"),
                ("part.count", 17.0),
            }
            await col.wait(lambda items: want <= {(o.signal, o.value) for o in items}, what=str(want))
            assert all(o.time == T0 for o in col.items if (o.signal, o.value) in want)
        finally:
            await col.aclose()


async def test_discover_suggests_signals_on_the_spec_server(spec_server: SpecServer) -> None:
    found = await discover(OpcUaSource.for_url(spec_server.endpoint), filter="VMC-01")
    suggested = {d.suggested for d in found if d.suggested}
    assert {"program.name", "execution", "part.count", "tool.life.12"} <= suggested
    cnc = await discover(OpcUaSource.for_url(spec_server.endpoint), filter="CncSpindleList")
    assert any(d.suggested == "spindle.load" for d in cnc)
