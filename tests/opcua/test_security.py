"""Security against the simulator over TCP: encrypted sessions with a user, and clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from adapters.base import AdapterState
from adapters.opcua.certs import application_uri_of, load_certificate
from adapters.opcua.client import OpcUaAdapter
from monitor.config import OpcUaMachine
from monitor.errors import ConnectError
from monitor.sim.opcua_server import OpcUaSimServer
from tests.opcua.helpers import MACHINE, Collector, Pki, connected, machine_config, secure_source

T0 = datetime(2031, 1, 1, tzinfo=UTC)


def test_generated_certificate_carries_the_application_uri(pki: Pki) -> None:
    assert application_uri_of(load_certificate(pki.client_cert)) == "urn:cnc-monitor:test-client"


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
        ("Basic256Sha256", "Sign"),
    ],
)
async def test_secure_session_with_user(
    pki: Pki, secure_sim: OpcUaSimServer, policy: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPCUA_USER", "operator")
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    cfg = machine_config(secure_sim.endpoint, **secure_source(pki, secure_sim.endpoint, policy, security_mode=mode))
    async with OpcUaAdapter(cfg) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(connected, what="connected")
            await secure_sim.publish(MACHINE.id, "spindle.load", 33.0, T0)
            await col.wait(lambda items: any(o.signal == "spindle.load" and o.value == 33.0 for o in items))
        finally:
            await col.aclose()


async def _first_error(cfg: OpcUaMachine) -> ConnectError:
    """Run an adapter until it gives up; the error surfaces from observations() (and again on close)."""
    with pytest.raises(ConnectError) as info:
        async with OpcUaAdapter(cfg) as adapter:
            async for _ in adapter.observations():
                pass
    assert adapter.state is not AdapterState.CONNECTED
    return info.value


async def test_wrong_password_is_a_clear_error(pki: Pki, secure_sim: OpcUaSimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPCUA_USER", "operator")
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "wrong")
    cfg = machine_config(secure_sim.endpoint, **secure_source(pki, secure_sim.endpoint))
    err = await _first_error(cfg)
    assert "TEST_OPCUA_USER" in str(err) and "password" in str(err)
    assert "Bad" in str(err)


async def test_missing_password_variable_is_named(pki: Pki, secure_sim: OpcUaSimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPCUA_USER", "operator")
    monkeypatch.delenv("TEST_OPCUA_PASSWORD", raising=False)
    cfg = machine_config(secure_sim.endpoint, **secure_source(pki, secure_sim.endpoint))
    err = await _first_error(cfg)
    assert "TEST_OPCUA_PASSWORD" in str(err)


async def test_untrusted_server_certificate_is_refused_with_its_path(
    pki: Pki, secure_sim: OpcUaSimServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEST_OPCUA_USER", "operator")
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", "s3cret")
    empty = tmp_path / "trusted"
    empty.mkdir()
    cfg = machine_config(secure_sim.endpoint, **secure_source(pki, secure_sim.endpoint, trust_dir=str(empty)))
    err = await _first_error(cfg)
    rejected = list((tmp_path / "rejected").glob("*.der"))
    assert len(rejected) == 1
    assert rejected[0].read_bytes() == load_certificate(pki.server_cert).public_bytes(Encoding.DER)
    assert str(rejected[0]) in str(err) and "not trusted" in str(err) and str(empty) in str(err)
