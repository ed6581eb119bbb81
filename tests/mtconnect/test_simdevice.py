"""The simulated cell through our agent and back through our adapter: same values, same order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.mtconnect.client import MtConnectAdapter
from monitor.config import MtConnectMachine
from monitor.model import CONNECTION_SIGNAL, Observation
from monitor.sim import SimCell, SimEvent, load_scenario, run_cell
from monitor.sim.mtconnect_agent import DEFAULT_SIGNAL_MAP, SimAgentBinding


@pytest.mark.parametrize("macros", [False, True], ids=["measurement-items", "macro-data-set"])
async def test_sim_cell_reads_back(macros: bool) -> None:
    cell = SimCell(load_scenario("demo"), seed=3, parts=4)
    spec = cell.machines[0]
    events = [e for e in cell.events() if e.machine == spec.id]
    want_probe = [e.value for e in events if e.signal == "probe.hole1_x"]
    want_life = _announced_lives(events)
    async with SimAgentBinding(cell.machines, macros=macros) as mtc:
        signals = mtc.signal_map(spec.id)
        assert {k: v for k, v in signals.items() if not k.startswith("probe.")} == {
            k: v for k, v in DEFAULT_SIGNAL_MAP.items() if k in spec.signals
        }
        cfg = MtConnectMachine.model_validate(
            {
                "id": spec.id,
                "signals": signals,
                "source": {"type": "mtconnect", "url": mtc.url, "device": spec.id, "interval_ms": 0},
            }
        )
        seen: list[Observation] = []
        async with MtConnectAdapter(cfg) as adapter:
            connected = asyncio.Event()

            async def read() -> None:
                async for obs in adapter.observations():
                    seen.append(obs)
                    if obs.signal == CONNECTION_SIGNAL:
                        connected.set()
                    probes = [o for o in seen if o.signal == "probe.hole1_x" and o.value is not None]
                    lives = [o for o in seen if o.signal == "tool.life"]
                    if len(probes) == len(want_probe) and len(lives) >= len(want_life):
                        return

            reader = asyncio.create_task(read())
            await asyncio.wait_for(connected.wait(), 10)
            await run_cell(cell, mtc.publish, speed=0)
            await asyncio.wait_for(reader, 20)
    got: dict[str, list[Any]] = {}
    for o in seen:
        got.setdefault(o.signal, []).append(o.value)
    assert [v for v in got["probe.hole1_x"] if v is not None] == want_probe
    # tool life travels as a CuttingTool asset, announced by ASSET_CHANGED only when it changed: one
    # re-read per announcement, reading the asset as it is by then (at speed=0 it may have moved on),
    # so the history is a subsequence ending in the last value
    assert len(got["tool.life"]) == len(want_life) and got["tool.life"][-1] == want_life[-1]
    assert set(got["tool.life"]) <= set(want_life)
    assert "O1001" in got["program.name"] and "ACTIVE" in got["execution"]
    assert max(v for v in got["part.count"] if v is not None) >= 3


def _announced_lives(events: list[SimEvent]) -> list[Any]:
    """The tool life updates that change the asset of the tool in the spindle (the agent announces
    those, not a tool loaded again with the life it had)."""
    tool, last, out = "0", dict[str, Any](), []
    for e in events:
        if e.signal == "tool.number" and isinstance(e.value, float):
            tool = str(int(e.value))
        elif e.signal == "tool.life" and last.get(tool, object()) != e.value:
            last[tool] = e.value
            out.append(e.value)
    return out


async def test_the_agent_announces_a_tool_life_only_when_it_changed() -> None:
    cell = SimCell(load_scenario("demo"), seed=3, parts=3)
    events = [e for e in cell.events() if e.machine == cell.machines[0].id]
    announced = _announced_lives(events)
    assert 0 < len(announced) < sum(1 for e in events if e.signal == "tool.life")  # reloaded tools repeat their life
    async with SimAgentBinding(cell.machines[:1]) as mtc:
        for e in events:
            mtc.publish(e)
        buffered = mtc.agent._buffer.range(1, 1_000_000)
    assert sum(1 for o in buffered if o.data_item_id.endswith("_asset_chg") and o.value) == len(announced)
