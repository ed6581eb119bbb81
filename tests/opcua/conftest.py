"""Fixtures for the OPC UA tests: a simulated CNC on a real socket, plain or secure-only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from monitor.sim.opcua_server import OpcUaSimServer
from tests.opcua.helpers import MACHINE, Pki, make_pki


@pytest.fixture
async def sim() -> AsyncIterator[OpcUaSimServer]:
    async with OpcUaSimServer([MACHINE]) as srv:
        yield srv


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), {"operator": "s3cret"})


@pytest.fixture
async def secure_sim(pki: Pki) -> AsyncIterator[OpcUaSimServer]:
    async with OpcUaSimServer([MACHINE], security=pki.server) as srv:
        yield srv
