"""`monitor discover` against a secure server, with a machine's security settings from the site file."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import yaml

from monitor.sim.opcua_server import OpcUaSimServer
from tests.opcua.helpers import Pki, secure_source

ROOT = Path(__file__).resolve().parents[2]


async def _discover(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEST_OPCUA_USER": "operator", "TEST_OPCUA_PASSWORD": "s3cret"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "discover", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_discover_uses_the_machines_security_settings(pki: Pki, secure_sim: OpcUaSimServer, tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    site = tmp_path / "site.yaml"
    source = {"type": "opcua", "endpoint": secure_sim.endpoint, **secure_source(pki, secure_sim.endpoint)}
    site.write_text(yaml.safe_dump({"site": "t", "machines": [{"id": "vmc-01", "source": source}]}))
    code, out, err = await _discover(secure_sim.endpoint, "-c", str(site), "--machine", "vmc-01", "--json", "--filter", "hole1")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["suggested"] for r in rows} >= {"probe.hole1_x", "probe.hole1_y", "probe.hole1_dia"}
    code, _, err = await _discover(secure_sim.endpoint, "-c", str(site), "--machine", "nope")
    assert code == 2 and "no OPC UA source for machine 'nope'" in err
