"""Hostile and broken agents over real HTTP: every misbehaviour ends in a counted, logged failure
with a reason, the adapter keeps retrying with a growing wait, and memory stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.base import AdapterState
from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.client import MtConnectAdapter
from monitor.config import MtConnectMachine
from monitor.model import Observation
from tests.mtconnect._devices import vmc
from tests.servers.hostile_agent import HostileAgent

CAP = 2 << 20  # max_document_bytes in these tests: a 1 GB answer must stop costing memory here


def machine(url: str, **source: Any) -> MtConnectMachine:
    src = {
        "type": "mtconnect",
        "url": url,
        "device": "vmc",
        "interval_ms": 0,
        "heartbeat_ms": 200,
        "request_timeout_s": 1.0,
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.1,
        "max_document_bytes": CAP,
        **source,
    }
    return MtConnectMachine.model_validate({"id": "vmc-01", "source": src, "signals": {"part.count": "vmc_pc"}})


@pytest.fixture
async def hostile() -> AsyncIterator[HostileAgent]:
    async with MtConnectAgent([vmc()]) as agent, HostileAgent(agent.url) as server:
        agent.publish("vmc", "vmc_pc", 1.0)
        yield server


async def until(adapter: MtConnectAdapter, done: Callable[[], bool], limit_s: float = 20.0) -> list[Observation]:
    """Read the adapter's observations until ``done()`` holds (checked after each and every 20 ms)."""
    seen: list[Observation] = []

    async def read() -> None:
        async for obs in adapter.observations():
            seen.append(obs)

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(limit_s):
            while not done():
                assert not reader.done(), "the adapter stopped reading"
                await asyncio.sleep(0.02)  # polling a condition, with a deadline
    finally:
        reader.cancel()
    return seen


@pytest.mark.parametrize(
    ("kind", "counter", "reason"),
    [
        ("linetoolong", "bad_document", "Got more than"),
        ("bigheader", "connect_failed", "Got more than"),
        ("hugeprobe", "bad_document", "max_document_bytes"),
        ("hugesample", "bad_document", "max_document_bytes"),
        ("endless", "connect_failed", "no answer within 1 s"),
        ("garbage", "bad_document", "malformed"),
        ("stale", "stream_ended", "stale stream, no complete document"),
        ("silent", "connect_failed", "no answer within 1 s"),
    ],
)
async def test_misbehaving_agent_is_counted_with_a_reason_and_retried(
    hostile: HostileAgent, kind: str, counter: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with MtConnectAdapter(machine(hostile.url(kind))) as adapter:
        await until(adapter, lambda: adapter.stats.counts[counter] >= 2)
        assert adapter.state in (AdapterState.LOST, AdapterState.CONNECTING, AdapterState.CONNECTED)
        assert adapter.failures >= 2  # nothing usable arrived: the wait keeps growing
    logged = [r.getMessage() for r in caplog.records if f"'{counter}'" in r.getMessage()]
    assert len(logged) == 1, logged  # logged once, counted afterwards
    assert reason in logged[0] and hostile.url(kind) in logged[0]
    if kind.startswith("huge"):
        # refused at the cap, not read whole: far less than the 1 GB answer left the server per attempt
        attempts = sum(hostile.requests[kind].values())
        assert hostile.bytes_sent[kind] < attempts * (CAP + (16 << 20))


async def test_garbage_sample_after_a_valid_probe_backs_off_more_each_time(hostile: HostileAgent) -> None:
    """The probe and /current succeed every time; only /sample is garbage. Connecting is not data:
    the failures in a row (and so the wait) grow with every attempt instead of starting over."""
    async with MtConnectAdapter(machine(hostile.url("garbage"), reconnect_min_s=0.01, reconnect_max_s=10.0)) as adapter:
        await until(adapter, lambda: adapter.stats.counts["bad_document"] >= 5)
        samples = hostile.requests["garbage"]["sample"]
        assert adapter.failures >= samples - 1 >= 4
        assert hostile.requests["garbage"]["probe"] == samples  # a new handshake each time, and it worked


async def test_stale_stream_reports_lost_then_recovers_when_the_agent_heals(hostile: HostileAgent) -> None:
    """A stream that is open but never completes a document shows the source lost (the daemon
    raises its signal-lost alert from that), not connected."""
    states: list[object] = []
    async with MtConnectAdapter(machine(hostile.url("stale"))) as adapter, asyncio.timeout(20):
        async for obs in adapter.observations():  # until the second connection change, read in order
            if obs.signal == "source.connection":
                states.append(obs.value)
                if len(states) == 2:
                    break
        assert adapter.stats.counts["heartbeat_missed"] >= 1  # counted before the source was reported lost
    assert states == ["connected", "lost"]
