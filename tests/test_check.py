"""`monitor check` catches what `run` would refuse or lose later, and `check --connect` resolves every
signal against the real servers; relative certificate paths are taken from the site file's folder."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from adapters.mtconnect.agent import MtConnectAgent
from adapters.opcua.certs import generate_certificate
from monitor.cli import app
from monitor.config import load_site
from monitor.sim.opcua_server import OpcUaSimServer, SimSecurity
from tests.mtconnect._devices import vmc
from tests.opcua.foreign import FOREIGN_URI, ForeignCnc
from tests.streams import PROGRAM_YAML


def write_site(folder: Path, machines: str) -> Path:
    (folder / "programs").mkdir(parents=True, exist_ok=True)
    (folder / "programs" / "O1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    path = folder / "site.yaml"
    path.write_text(f"site: check-test\ndashboard: {{enabled: false}}\nmachines:\n{machines}", encoding="utf-8")
    return path


SECURE = """\
  - id: vmc-01
    source:
      type: opcua
      endpoint: "{endpoint}"
      security_policy: Basic256Sha256
      security_mode: SignAndEncrypt
      certificate: pki/own/cert.der
      private_key: pki/own/key.pem
      trust_dir: pki/trusted
      username_env: CHECK_TEST_USER
      password_env: CHECK_TEST_PASSWORD
    signals:
      part.count: "nsu=urn:x;s=PartCounter"
"""


@pytest.fixture
def in_root(tmp_path: Path) -> Iterator[Path]:
    """Run from / as a service would: nothing may depend on the working directory."""
    here = Path.cwd()
    os.chdir("/")
    try:
        yield tmp_path
    finally:
        os.chdir(here)


def test_check_refuses_what_run_would_refuse_all_at_once(tmp_path: Path) -> None:
    site = write_site(
        tmp_path,
        """\
  - id: vmc-01
    source: {type: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
    signals:
      part.count: "ns=2;s=PartCounter"
      spindle.load: "ns2:Cnc/ns2:Spindle/ns2:Load"
      program.name: "fc:Cnc/fc:ActiveProgram"
""",
    )
    result = CliRunner().invoke(app, ["check", "-c", str(site)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"{site}:4 machines[0]" in text
    assert "namespace index 2 may change" in text and "nsu=<uri>" in text
    assert "unknown browse-path prefix fc" in text and "unknown browse-path prefix ns2" in text
    assert "source.namespaces" in text
    fixed = site.read_text().replace('4840"}', '4840", namespaces: {fc: "urn:example:foreign-cnc", ns2: "urn:x"}}')
    site.write_text(fixed.replace("ns=2;s=PartCounter", "nsu=urn:example:foreign-cnc;s=PartCounter"))
    result = CliRunner().invoke(app, ["check", "-c", str(site)])
    assert result.exit_code == 0, result.output


def test_check_names_unset_variables_and_missing_security_files(in_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHECK_TEST_USER", raising=False)
    monkeypatch.delenv("CHECK_TEST_PASSWORD", raising=False)
    site = write_site(in_root / "cell", SECURE.format(endpoint="opc.tcp://127.0.0.1:4840"))
    result = CliRunner().invoke(app, ["check", "-c", str(site), "--json"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "CHECK_TEST_USER" in text and "CHECK_TEST_PASSWORD" in text and "is not set" in text
    cell = in_root / "cell"
    assert f"certificate {cell}/pki/own/cert.der does not exist" in text  # site-relative, not from /
    assert f"monitor opcua-cert --out {cell}/pki/own" in text
    assert f"trust_dir {cell}/pki/trusted does not exist; create the folder" in text
    # what the hints say, done: the check passes, from / as from anywhere
    generate_certificate(cell / "pki/own/cert.der", cell / "pki/own/key.pem", "urn:cnc-monitor:test-client")
    (cell / "pki/trusted").mkdir()
    monkeypatch.setenv("CHECK_TEST_USER", "operator")
    monkeypatch.setenv("CHECK_TEST_PASSWORD", "s3cret")
    result = CliRunner().invoke(app, ["check", "-c", str(site)])
    assert result.exit_code == 0, result.output
    source = load_site(site).config.machines[0].source
    assert getattr(source, "certificate") == cell / "pki/own/cert.der"  # noqa: B009
    assert getattr(source, "trust_dir") == cell / "pki/trusted"  # noqa: B009


async def test_check_connect_lists_what_is_missing_per_machine(tmp_path: Path) -> None:
    async with ForeignCnc() as cnc:
        site = write_site(
            tmp_path,
            f"""\
  - id: m1
    source:
      type: opcua
      endpoint: "{cnc.endpoint}"
      namespaces: {{fc: "{FOREIGN_URI}"}}
    signals:
      part.count: "fc:Cnc/fc:PartCounter"
      spindle.load: "nsu={FOREIGN_URI};s=Cnc.Spindle.Load"
      probe.hole1_x: "fc:Cnc/fc:Probe/fc:Result9"
      probe.hole1_y: "nsu={FOREIGN_URI};s=Cnc.Probe.Nope"
      program.name: "nsu=urn:not-on-this-server;s=Program"
  - id: m2
    source: {{type: opcua, endpoint: "opc.tcp://127.0.0.1:9", reconnect_max_s: 1}}
    signals:
      part.count: "nsu={FOREIGN_URI};s=Cnc.PartCounter"
""",
        )
        result = await _invoke(["check", "-c", str(site), "--connect"])
        assert result.exit_code == 1
        text = " ".join(result.output.split())
        assert "m1 opcua" in text and "2 of 5 signals found" in text
        assert "missing probe.hole1_x: browse path not found" in text
        assert "missing probe.hole1_y: node" in text and "BadNodeIdUnknown" in text
        assert "missing program.name: namespace 'urn:not-on-this-server' is not on this server" in text
        assert "m2 opcua" in text and "cannot connect" in text
        as_json = await _invoke(["check", "-c", str(site), "--connect", "--json"])
        body = json.loads(as_json.output)
        by_machine = {s["machine"]: s for s in body["connect"]}
        assert sorted(by_machine["m1"]["resolved"]) == ["part.count", "spindle.load"]
        assert by_machine["m2"]["error"]


async def test_check_connect_names_the_security_settings_for_a_secure_only_server(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    server = generate_certificate(pki / "server/cert.der", pki / "server/key.pem", "urn:cnc-monitor:sim")
    async with OpcUaSimServer(["vmc-01"], security=SimSecurity(server.certificate, server.private_key)) as sim:
        site = write_site(
            tmp_path / "cell",
            f"""\
  - id: vmc-01
    source: {{type: opcua, endpoint: "{sim.endpoint}"}}
    signals:
      part.count: "MA:Machines/app:vmc-01/MT:Production/MT:Statistics/MT:PartsProducedInLifetime"
""",
        )
        result = await _invoke(["check", "-c", str(site), "--connect"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "refuses connections without security" in text
    assert "security_policy" in text and "security_mode" in text and "monitor opcua-cert" in text


async def _invoke(args: list[str]) -> Result:
    """The CLI runs its own event loop: invoke it from a worker thread, the test's loop serves the server."""
    return await asyncio.to_thread(CliRunner().invoke, app, args)


async def test_check_connect_resolves_mtconnect_items(tmp_path: Path) -> None:
    async with MtConnectAgent([vmc()]) as agent:
        site = write_site(
            tmp_path,
            f"""\
  - id: lathe
    source: {{type: mtconnect, url: "{agent.url}", device: vmc}}
    signals:
      spindle.load: {{type: LOAD, component: C}}
      part.count: vmc_pc
      probe.hole1_x: no_such_item
""",
        )
        result = await _invoke(["check", "-c", str(site), "--connect"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "lathe mtconnect" in text and "2 of 3 signals found" in text
    assert "missing probe.hole1_x:" in text and "no_such_item" in text
