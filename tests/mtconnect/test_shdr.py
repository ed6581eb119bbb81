"""SHDR into our agent: line parsing, a live adapter over TCP, and the two recorded logs read back by our adapter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.client import MtConnectAdapter
from adapters.mtconnect.parser import parse_assets, parse_streams
from adapters.mtconnect.shdr import ShdrConnection, ShdrFeeder, agent_for_device_file, replay_shdr
from monitor.config import MtConnectMachine
from monitor.model import CONNECTION_SIGNAL, Observation
from tests.mtconnect._devices import vmc
from tests.mtconnect._shared import shared


async def _current(agent: MtConnectAgent) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(agent.url + "/current") as r:
        doc = parse_streams(await r.read())
    out: dict[str, Any] = {}
    for o in doc.observations:
        if o.category == "CONDITION":
            out.setdefault(o.data_item_id, []).append((o.level, o.native_code, o.value))
        else:
            out[o.data_item_id] = o.value
    return out


async def test_feeder_values_conditions_sets_and_assets() -> None:
    async with MtConnectAgent([vmc()]) as agent:
        f = ShdrFeeder(agent, "vmc")
        for line in [
            "2024-01-01T00:00:00.1234567Z|Sload|12.5|part_count|3|unknown_key|9|program|O1",
            "2024-01-01T00:00:01Z|vmc_system|WARNING|W1|1||too hot",
            "2024-01-01T00:00:02Z|vmc_system|FAULT|F1|2||broken",
            "2024-01-01T00:00:03Z|macros|500=25.001 501='a b' 502",
            "2024-01-01T00:00:04Z|@ASSET@|T9.1|CuttingTool|--multiline--XYZ",
            '<CuttingTool assetId="T9.1" toolId="T9" serialNumber="1"><CuttingToolLifeCycle>',
            '<ToolLife type="MINUTES" countDirection="UP" limit="90">12</ToolLife></CuttingToolLifeCycle></CuttingTool>',
            "--multiline--XYZ",
            "* PONG 10000",
            "2024-01-01T00:00:05Z|Srpm|UNAVAILABLE",
        ]:
            f.feed(line)
        cur = await _current(agent)
        assert cur["vmc_load"] == "12.5" and cur["vmc_pc"] == "3" and cur["vmc_prog"] == "O1"
        assert cur["vmc_speed"] is None
        assert sorted(cur["vmc_system"]) == [("Fault", "F1", "broken"), ("Warning", "W1", "too hot")]
        assert cur["vmc_vars"] == {"500": "25.001", "501": "a b", "502": None}
        assert cur["vmc_asset_chg"] == "T9.1"
        assert f.unknown == {"unknown_key": 1}
        f.feed("2024-01-01T00:00:06Z|vmc_system|NORMAL||||")
        assert (await _current(agent))["vmc_system"] == [("Normal", None, "")]
        async with aiohttp.ClientSession() as s, s.get(agent.url + "/asset/T9.1") as r:
            tool = parse_assets(await r.read()).assets[0]
        assert tool.tool_life[0].limit == 90.0  # type: ignore[union-attr]


async def test_live_adapter_over_tcp_with_ping_pong() -> None:
    pings = 0
    got_ping = asyncio.Event()

    async def fake_adapter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        writer.write(b"2024-01-01T00:00:00Z|Sload|33|part_count|7\n")
        await writer.drain()
        while line := await reader.readline():
            if line.startswith(b"* PING"):
                pings += 1
                writer.write(b"* PONG 200\n")
                await writer.drain()
                if pings >= 2:
                    got_ping.set()
        writer.close()

    server = await asyncio.start_server(fake_adapter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, MtConnectAgent([vmc()]) as agent:
        conn = ShdrConnection(agent, "vmc", "127.0.0.1", port, reconnect_s=0.05)
        task = asyncio.create_task(conn.run())
        try:
            await asyncio.wait_for(got_ping.wait(), 10)
            assert conn.heartbeat_s == 0.2
            cur = await _current(agent)
            assert cur["vmc_load"] == "33" and cur["vmc_pc"] == "7"
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def _log_values(path: Path, key: str) -> list[str | None]:
    out: list[str | None] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("|")
        for i in range(1, len(fields) - 1):
            if fields[i] == key and (i % 2 == 1):
                out.append(None if fields[i + 1] == "UNAVAILABLE" else fields[i + 1])
    return out


def _dedup(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


@pytest.mark.interop
@pytest.mark.parametrize(
    ("device_file", "device", "log", "keys"),
    [
        (
            "cppagent-demo-Devices-okuma-mazak_2.7.xml",
            "OKUMA",
            "cppagent-demo-okuma-imts2022.txt",
            {"spindle.load": "S1load", "part.count": "ppartcount", "program.name": "pprogram"},
        ),
        (
            "nist-smstestbed-Devices_1.3.xml",
            "Mazak01",
            "nist-Mazak01-20170516-20170517.txt",
            {"spindle.load": "S2load", "part.count": "PartCountAct", "program.name": "program"},
        ),
    ],
    ids=["okuma", "nist-mazak01"],
)
async def test_recorded_log_replays_through_agent_and_adapter(
    device_file: str, device: str, log: str, keys: dict[str, str]
) -> None:
    agent, name = agent_for_device_file(shared("devices", device_file).read_bytes(), device)
    assert name == device
    log_path = shared("shdr", log)
    expected: dict[str, list[Any]] = {}
    for signal, key in keys.items():
        raw = _dedup([None, *_log_values(log_path, key)])
        expected[signal] = [v if v is None or signal == "program.name" else float(v) for v in raw]
    async with agent:
        cfg = MtConnectMachine.model_validate(
            {
                "id": "m",
                "signals": keys,
                "source": {"type": "mtconnect", "url": agent.url, "device": device, "interval_ms": 0, "count": 5000},
            }
        )
        async with MtConnectAdapter(cfg) as adapter:
            seen: dict[str, list[Observation]] = {s: [] for s in keys}
            want = sum(len(v) for v in expected.values())
            got = 0
            connected = asyncio.Event()

            async def read() -> None:
                nonlocal got
                async for obs in adapter.observations():
                    if obs.signal == CONNECTION_SIGNAL:
                        connected.set()
                    if obs.signal in seen:
                        seen[obs.signal].append(obs)
                        got += 1
                        if got >= want:
                            return

            reader = asyncio.create_task(read())
            await asyncio.wait_for(connected.wait(), 10)  # /current read before the replay starts
            feeder = await replay_shdr(agent, device, log_path, speed=0)
            await asyncio.wait_for(reader, 30)
    assert feeder.lines > 8000
    for signal in keys:
        assert [o.value for o in seen[signal]] == expected[signal], signal
    assert len(expected["spindle.load"]) > 20 and len(expected["part.count"]) > 2
