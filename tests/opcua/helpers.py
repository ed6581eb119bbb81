"""Helpers for the OPC UA tests: site-config builder, condition polling, an observation collector."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.opcua.certs import generate_certificate
from adapters.opcua.client import OpcUaAdapter
from monitor.config import OpcUaMachine
from monitor.model import CONNECTION_SIGNAL, Observation
from monitor.sim.opcua_server import MachineShape, SimSecurity, signal_map

MACHINE = MachineShape("vmc-01", probes=("hole1_x", "hole1_y", "hole1_dia"), tools=(1, 12))


@dataclass
class Pki:
    """A simulated server's security and a client that trusts it (and is trusted by it)."""

    server: SimSecurity
    client_cert: Path
    client_key: Path
    trust_dir: Path
    server_cert: Path

    @property
    def root(self) -> Path:
        """The folder holding server/, own/ and trusted/."""
        return self.trust_dir.parent


def make_pki(root: Path, users: dict[str, str], writers: frozenset[str] | None = None) -> Pki:
    """Certificates for the simulated server and a client under ``root``; the client trusts the server."""
    server = generate_certificate(root / "server/cert.der", root / "server/key.pem", "urn:cnc-monitor:sim")
    client = generate_certificate(root / "own/cert.der", root / "own/key.pem", "urn:cnc-monitor:test-client")
    trust = root / "trusted"
    trust.mkdir()
    (trust / "sim.der").write_bytes(server.certificate.read_bytes())
    security = SimSecurity(server.certificate, server.private_key, users=users, writers=writers)
    return Pki(security, client.certificate, client.private_key, trust, server.certificate)


def machine_config(endpoint: str, signals: dict[str, Any] | None = None, **source: Any) -> OpcUaMachine:
    """An OpcUaMachine as the site file would give it, fast timings for tests."""
    src: dict[str, Any] = {
        "type": "opcua",
        "endpoint": endpoint,
        "publishing_interval_ms": 50,
        "sampling_interval_ms": 10,
        "queue_size": 10,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "request_timeout_s": 2.0,
    }
    src.update(source)
    return OpcUaMachine.model_validate(
        {"id": MACHINE.id, "source": src, "signals": signals if signals is not None else signal_map(MACHINE)}
    )


async def wait_until(predicate: Callable[[], bool], within_s: float = 10.0, what: str = "condition") -> None:
    """Poll a condition (not a synchronisation sleep): fail with a message after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Collector:
    """Reads an adapter's observations in a task so tests can wait for what they expect."""

    def __init__(self, adapter: OpcUaAdapter) -> None:
        self.adapter = adapter
        self.items: list[Observation] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for obs in self.adapter.observations():
                self.items.append(obs)
        except Exception as exc:  # surfaced to the test through .error
            self.error = exc

    def of(self, signal: str) -> list[Observation]:
        return [o for o in self.items if o.signal == signal]

    async def wait(self, predicate: Callable[[list[Observation]], bool], within_s: float = 10.0, what: str = "") -> None:
        await wait_until(lambda: predicate(self.items) or self.error is not None, within_s, what or "observations")
        if self.error is not None and not predicate(self.items):
            raise AssertionError(f"adapter failed: {self.error!r}")

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def connected(items: list[Observation]) -> bool:
    """True once the adapter reported its first connection."""
    return any(o.signal == CONNECTION_SIGNAL and o.value == "connected" for o in items)


def secure_source(pki: Pki, endpoint: str, policy: str = "Basic256Sha256", **extra: Any) -> dict[str, Any]:
    """The source keys of a SignAndEncrypt connection with the client of ``pki`` and a user from the environment."""
    src: dict[str, Any] = {
        "security_policy": policy,
        "security_mode": "SignAndEncrypt",
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "trust_dir": str(pki.trust_dir),
        "username_env": "TEST_OPCUA_USER",
        "password_env": "TEST_OPCUA_PASSWORD",
    }
    src.update(extra)
    return src
