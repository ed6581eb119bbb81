"""Discovery against the simulator over TCP: what it lists is enough to write a working mapping."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.opcua.client import OpcUaAdapter
from adapters.opcua.config import OpcUaSource
from adapters.opcua.discover import discover
from monitor.sim.opcua_server import SIM_APPLICATION_URI, OpcUaSimServer, signal_map
from tests.opcua.helpers import MACHINE, Collector, connected, machine_config

T0 = datetime(2031, 1, 1, tzinfo=UTC)


async def test_discover_lists_companion_places_with_suggestions(sim: OpcUaSimServer) -> None:
    await sim.publish(MACHINE.id, "spindle.load", 61.5, T0)
    found = await discover(OpcUaSource.for_url(sim.endpoint))
    by_path = {d.path: d for d in found}
    load = by_path["MA:Machines/app:vmc-01/CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActLoad"]
    assert load.suggested == "spindle.load"
    assert load.data_type == "Double" and load.value == "61.5"
    assert load.address == f"nsu={SIM_APPLICATION_URI};s=vmc-01.CncInterface.CncSpindleList.S1.ActLoad"
    suggested = {d.suggested for d in found if d.suggested}
    assert {"spindle.load", "spindle.speed", "tool.number", "program.name", "execution", "part.count"} <= suggested
    assert {"tool.life.12", "probe.hole1_x"} <= suggested
    limit = by_path["MA:Machines/app:vmc-01/MT:Equipment/MT:Tools/app:T12/MT:ToolLife/app:Count/MT:LimitValue"]
    assert limit.kind == "property" and limit.suggested is None
    # the default map of the simulator is exactly what discovery suggests for those places
    for signal, path in signal_map(MACHINE).items():
        if "/" in path and signal != "tool.life":
            assert by_path[path].suggested == signal, signal
    # unset values show their status rather than a fake reading
    assert by_path["MA:Machines/app:vmc-01/MT:Production/MT:ActiveProgram/MT:Name"].value == "BadWaitingForInitialData"


async def test_discover_filter_and_the_listed_addresses_work(sim: OpcUaSimServer) -> None:
    found = await discover(OpcUaSource.for_url(sim.endpoint), filter="hole1")
    assert found and all("hole1" in (d.suggested or "") or "hole1" in d.path for d in found)
    signals = {d.suggested: d.address for d in found if d.suggested}
    assert set(signals) == {"probe.hole1_x", "probe.hole1_y", "probe.hole1_dia"}
    async with OpcUaAdapter(machine_config(sim.endpoint, signals)) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(connected)
            await sim.publish(MACHINE.id, "probe.hole1_dia", 10.0071, T0)
            await col.wait(lambda items: any(o.signal == "probe.hole1_dia" and o.value == 10.0071 for o in items))
        finally:
            await col.aclose()
