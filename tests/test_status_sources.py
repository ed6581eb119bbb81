"""A source that is refused for good shows why: in `monitor status` (also with the dashboard disabled,
from the daemon process's runtime file), in `status --json` and in the dashboard API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.opcua.certs import generate_certificate
from monitor.config import load_site
from monitor.sim.opcua_server import OpcUaSimServer, SimSecurity, signal_map
from tests.daemons import running_daemon
from tests.opcua.helpers import MACHINE
from tests.streams import PROGRAM_YAML

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    server = generate_certificate(root / "server/cert.der", root / "server/key.pem", "urn:cnc-monitor:sim")
    generate_certificate(root / "own/cert.der", root / "own/key.pem", "urn:cnc-monitor:test-client")
    trust = root / "trusted"
    trust.mkdir()
    (trust / "sim.der").write_bytes(server.certificate.read_bytes())
    return {"server_cert": server.certificate, "server_key": server.private_key, "root": root}


@pytest.fixture
async def secure_sim(pki: dict[str, Path]) -> AsyncIterator[OpcUaSimServer]:
    security = SimSecurity(pki["server_cert"], pki["server_key"], users={"operator": "s3cret"})
    async with OpcUaSimServer([MACHINE], security=security) as srv:
        yield srv


def write_site(tmp: Path, endpoint: str, pki_root: Path, *, dashboard: bool) -> Path:
    (tmp / "programs").mkdir(exist_ok=True)
    (tmp / "programs" / "O1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    site = {
        "site": "status-test",
        "store": {"path": "monitor.db"},
        "dashboard": {"enabled": dashboard, "port": 0},
        "machines": [
            {
                "id": MACHINE.id,
                "source": {
                    "type": "opcua",
                    "endpoint": endpoint,
                    "security_policy": "Basic256Sha256",
                    "security_mode": "SignAndEncrypt",
                    "certificate": str(pki_root / "own/cert.der"),
                    "private_key": str(pki_root / "own/key.pem"),
                    "trust_dir": str(pki_root / "trusted"),
                    "username_env": "STATUS_TEST_USER",
                    "password_env": "STATUS_TEST_PASSWORD",
                    "reconnect_min_s": 0.1,
                    "reconnect_max_s": 0.5,
                },
                "signals": signal_map(MACHINE),
            }
        ],
    }
    path = tmp / "site.yaml"
    path.write_text(json.dumps(site), encoding="utf-8")  # JSON is YAML
    return path


def monitor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


def failed_source(body: dict[str, Any]) -> dict[str, Any] | None:
    for machine in body.get("machines", {}).values():
        for source in machine.get("sources", []):
            if source.get("state") == "failed":
                return dict(source)
    return None


async def test_refused_source_shows_its_reason_with_the_dashboard_disabled(
    tmp_path: Path, pki: dict[str, Path], secure_sim: OpcUaSimServer
) -> None:
    site = write_site(tmp_path, secure_sim.endpoint, pki["root"], dashboard=False)
    env = {**os.environ, "STATUS_TEST_USER": "operator", "STATUS_TEST_PASSWORD": "wrong"}
    log = tmp_path / "daemon.log"
    with log.open("w", encoding="utf-8") as sink:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "run", "-c", str(site), cwd=ROOT, env=env, stdout=sink, stderr=sink
        )
    try:
        source = None
        deadline = time.monotonic() + 60
        while source is None:
            assert daemon.returncode is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the source never showed as failed"
            result = await asyncio.to_thread(monitor, "status", "-c", str(site), "--json", env=env)
            if result.returncode == 0:
                source = failed_source(json.loads(result.stdout))
            await asyncio.sleep(0.2)  # polling the CLI as a person would; the wait ends on what it shows
        assert "password" in source["reason"] and "STATUS_TEST_USER" in source["reason"]
        table = await asyncio.to_thread(monitor, "status", "-c", str(site), env=env)
        assert table.returncode == 0, table.stderr
        assert "failed" in table.stdout and "password" in table.stdout
        assert "read from" in table.stdout  # said where it came from
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), 30)
    gone = await asyncio.to_thread(monitor, "status", "-c", str(site), env=env)
    assert gone.returncode != 0 and "no running daemon" in (gone.stdout + gone.stderr)


async def test_dashboard_api_names_the_reason(
    tmp_path: Path, pki: dict[str, Path], secure_sim: OpcUaSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATUS_TEST_USER", "operator")
    monkeypatch.setenv("STATUS_TEST_PASSWORD", "wrong")
    site = load_site(write_site(tmp_path, secure_sim.endpoint, pki["root"], dashboard=True))
    async with running_daemon(site) as running:
        daemon = running.daemon
        assert daemon.dashboard_url is not None
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                async with session.get(daemon.dashboard_url + "api/machines") as resp:
                    body = await resp.json()
                sources = body["machines"][0]["sources"]
                if sources and sources[0]["state"] == "failed":
                    break
                assert time.monotonic() < deadline, sources
                await asyncio.sleep(0.1)
        assert "password" in sources[0]["reason"]
        assert body["machines"][0]["signal_lost"] is True
