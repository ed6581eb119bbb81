"""The simulated cell through our agent and back through our adapter: same values, same order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.mtconnect.client import MtConnectAdapter
from monitor.config import MtConnectMachine
from monitor.model import CONNECTION_SIGNAL, Observation
from monitor.sim import SimCell, load_scenario, run_cell
from monitor.sim.mtconnect_agent import DEFAULT_SIGNAL_MAP, SimAgentBinding


@pytest.mark.parametrize("macros", [False, True], ids=["measurement-items", "macro-data-set"])
async def test_sim_cell_reads_back(macros: bool) -> None:
    cell = SimCell(load_scenario("demo"), seed=3, parts=4)
    spec = cell.machines[0]
    events = [e for e in cell.events() if e.machine == spec.id]
    want_probe = [e.value for e in events if e.signal == "probe.hole1_x"]
    want_life = [e.value for e in events if e.signal == "tool.life"]
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
    # tool life travels as a CuttingTool asset: one re-read per ASSET_CHANGED, reading the asset as it is
    # by then (at speed=0 it may have moved on), so the history is a subsequence ending in the last value
    assert len(got["tool.life"]) == len(want_life) and got["tool.life"][-1] == want_life[-1]
    assert set(got["tool.life"]) <= set(want_life)
    assert "O1001" in got["program.name"] and "ACTIVE" in got["execution"]
    assert max(v for v in got["part.count"] if v is not None) >= 3
