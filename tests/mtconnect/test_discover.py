"""``monitor discover`` against our agent, as a user runs it (a subprocess), and the library call."""

from __future__ import annotations

import asyncio
import json
import sys

from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.discover import discover
from tests.mtconnect._devices import vmc


async def test_discover_library_call() -> None:
    async with MtConnectAgent([vmc(), vmc("lathe")]) as agent:
        agent.publish("vmc", "Sload", 12.5)
        found = await discover(MtConnectSource.for_url(agent.url, device="vmc"))
        by_id = {s.address: s for s in found}
        load = by_id["vmc_load"]
        assert (load.path, load.kind, load.data_type, load.units, load.value) == (
            "Device[vmc]/Axes/Rotary[C]",
            "SAMPLE",
            "LOAD",
            "PERCENT",
            "12.5",
        )
        assert load.suggested == "spindle.load"
        assert by_id["vmc_speed"].suggested == "spindle.speed" and by_id["vmc_speed"].data_type == "ROTARY_VELOCITY:ACTUAL"
        assert by_id["vmc_pc"].suggested == "part.count" and by_id["vmc_hole1_x"].suggested == "probe.hole1_x"
        assert by_id["vmc_system"].value == "UNAVAILABLE"
        assert all(s.extra["device"] == "vmc" for s in found)
        both = await discover(MtConnectSource.for_url(agent.url), "part_count")
        assert {s.address for s in both} == {"vmc_pc", "lathe_pc"}


async def test_discover_cli_json() -> None:
    async with MtConnectAgent([vmc()]) as agent:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor",
            "discover",
            agent.url,
            "--device",
            "vmc",
            "--json",
            "--filter",
            "load",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["address"] for r in rows] == ["vmc_load"]
    assert rows[0]["suggested"] == "spindle.load" and rows[0]["name"] == "Sload"


async def test_discover_cli_unreachable_says_what_to_do() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "discover",
        "http://127.0.0.1:9/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "discover failed" in err.decode() and "reachable" in err.decode()
