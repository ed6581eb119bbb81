"""`monitor discover` against a server that follows no companion specification (tests/opcua/foreign.py):
plainly named variables are suggested by name, data type and unit, units come from EUInformation,
and every path is printed in a form the site file takes (with the namespaces line to add)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from adapters.opcua.config import OpcUaSource
from adapters.opcua.discover import discover
from monitor.config import load_site
from tests.opcua.foreign import FOREIGN_URI, ForeignCnc
from tests.streams import PROGRAM_YAML

ROOT = Path(__file__).resolve().parents[2]


async def test_plain_names_are_suggested_with_units_and_usable_paths(tmp_path: Path) -> None:
    async with ForeignCnc() as cnc:
        found = {d.path: d for d in await discover(OpcUaSource.for_url(cnc.endpoint))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "discover", cnc.endpoint, "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        table = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "discover", cnc.endpoint,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
            env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        table_out, _ = await asyncio.wait_for(table.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    prefix = "foreign-cnc"
    counter = found[f"{prefix}:Cnc/{prefix}:PartCounter"]
    assert counter.suggested == "part.count" and counter.data_type == "UInt32"
    assert found[f"{prefix}:Cnc/{prefix}:ActiveProgram"].suggested == "program.name"
    load = found[f"{prefix}:Cnc/{prefix}:Spindle/{prefix}:Load"]
    assert (load.suggested, load.units) == ("spindle.load", "%")
    speed = found[f"{prefix}:Cnc/{prefix}:Spindle/{prefix}:Speed"]
    assert (speed.suggested, speed.units) == ("spindle.speed", "rpm")
    result = found[f"{prefix}:Cnc/{prefix}:Probe/{prefix}:Result1"]
    assert (result.suggested, result.units) == ("probe.result1", "mm")
    assert found[f"{prefix}:Cnc/{prefix}:Probe/{prefix}:ResultId"].suggested == "part.id"
    assert counter.extra["namespaces"] == f"{prefix}: {FOREIGN_URI}"
    assert not any(p.startswith("ns") and ":" in p.split("/")[0][:4] for p in found)  # no ns2: anywhere
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert {r["suggested"] for r in rows} >= {"part.count", "program.name", "spindle.load", "part.id"}
    assert f"namespaces: {{{prefix}: {FOREIGN_URI}}}" in " ".join(table_out.decode().split())

    # either column, copied as printed, works in a site file (with the namespaces line the table gives)
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "O1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    signals = {r["suggested"]: r["path"] for r in rows if r["suggested"] in ("part.count", "spindle.load")}
    signals["program.name"] = next(r["address"] for r in rows if r["suggested"] == "program.name")
    site = {
        "site": "discover-test",
        "dashboard": {"enabled": False},
        "machines": [
            {
                "id": "m1",
                "source": {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840", "namespaces": {prefix: FOREIGN_URI}},
                "signals": signals,
            }
        ],
    }
    (tmp_path / "site.yaml").write_text(json.dumps(site), encoding="utf-8")
    assert set(load_site(tmp_path / "site.yaml").config.machines[0].signals) == {"part.count", "spindle.load", "program.name"}
