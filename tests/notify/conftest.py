"""Fixtures of the notification tests: a real mosquitto broker and a persistent MQTT subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from monitor.model import Alert, AlertKind, AlertState, Severity
from monitor.sinks.base import RunningSink
from tests.notify.mosquitto import Mosquitto, running_mosquitto

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def make_alert(
    n: int,
    *,
    state: AlertState = AlertState.OPEN,
    machine: str = "vmc-01",
    feature: str = "hole1_pos",
    severity: Severity = Severity.WARNING,
    message: str | None = None,
) -> Alert:
    return Alert(
        id=f"a{n}",
        machine=machine,
        program="O1234",
        feature=feature,
        kind=AlertKind.FORECAST,
        severity=severity,
        state=state,
        part_number=10 + n,
        message=message or f"{feature} drifting +X 1.{n} um/part",
        time=T0 + timedelta(minutes=n),
        evidence={"parts_to_breach": 16.0, "offset": {"register": "X wear offset", "change_mm": -0.012}},
    )


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with running_mosquitto() as server:
        yield server


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A persistent-session subscriber to ``monitor/#`` that reconnects when the broker comes back."""

    socket_path: Path
    identifier: str = "test-subscriber"
    messages: list[Received] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(_probe, self.socket_path)  # paho leaks a Unix socket whose connect fails
                async with aiomqtt.Client(
                    str(self.socket_path), transport="unix", identifier=self.identifier, clean_session=False, timeout=5
                ) as client:
                    await client.subscribe("monitor/#", qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        self.messages.append(Received(str(m.topic), payload, m.qos, m.retain))
                        self._changed.set()
            except (aiomqtt.MqttError, OSError):
                self.subscribed.clear()
                await asyncio.sleep(0.02)  # reconnect backoff while the broker is down, not synchronisation

    def on(self, topic_part: str) -> list[Received]:
        return [m for m in self.messages if topic_part in m.topic]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


def _probe(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))


@contextlib.asynccontextmanager
async def subscribed(socket_path: Path, identifier: str = "test-subscriber") -> AsyncIterator[Subscriber]:
    sub = Subscriber(socket_path, identifier)
    task = asyncio.create_task(sub.run())
    try:
        async with asyncio.timeout(10):
            await sub.subscribed.wait()
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll a condition (bounded): for sink state that has no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(sink: RunningSink) -> AsyncIterator[RunningSink]:
    """A sink wrapper running for the block, closed (flushed) and its task ended after it."""
    task = asyncio.create_task(sink.run())
    try:
        yield sink
    finally:
        await sink.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
