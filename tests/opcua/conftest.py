"""Fixtures for the OPC UA tests: a simulated CNC on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from monitor.sim.opcua_server import OpcUaSimServer
from tests.opcua.helpers import MACHINE


@pytest.fixture
async def sim() -> AsyncIterator[OpcUaSimServer]:
    async with OpcUaSimServer([MACHINE]) as srv:
        yield srv
