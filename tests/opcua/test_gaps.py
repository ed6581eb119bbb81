"""What the OPC UA adapter does about data it may have missed, over real sockets.

A TCP proxy is cut between the adapter and our simulated CNC (asyncua's server) while the machine
goes on; afterwards the adapter either reads the window back from the server's history (HistoryRead)
or reports it as one gap in the source's clock. Also: each publish's changes in time order, a
subscription that is alive but silent, asyncua's disconnect tracebacks, a resumed daemon.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import AdapterState
from adapters.opcua.client import OpcUaAdapter
from monitor.model import GAP_SIGNAL, Observation
from monitor.sim.opcua_server import OpcUaSimServer
from tests.opcua.helpers import MACHINE, Collector, connected, machine_config, wait_until
from tests.opcua.proxy import FaultProxy

T0 = datetime(2031, 5, 1, 6, 0, tzinfo=UTC)
FAST: dict[str, float] = {"stale_after_s": 1.0, "keepalive_count": 2, "publishing_interval_ms": 50, "request_timeout_s": 1.0}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def counts(items: list[Observation]) -> list[tuple[datetime, float]]:
    return [(o.time, float(o.value)) for o in items if o.signal == "part.count" and isinstance(o.value, float)]


@pytest.mark.parametrize("history", [True, False], ids=["with-history", "without-history"])
async def test_cut_link_is_filled_from_history_or_reported_as_one_gap_in_source_time(history: bool) -> None:
    async with (
        OpcUaSimServer([MACHINE], history=1000 if history else 0) as srv,
        FaultProxy("127.0.0.1", srv.port) as proxy,
        OpcUaAdapter(machine_config(proxy.endpoint, None, **FAST)) as adapter,
    ):
        col = Collector(adapter)
        try:
            await col.wait(connected, what="connected")
            await srv.publish("vmc-01", "part.count", 1, at(10))
            await col.wait(lambda items: (at(10), 1.0) in counts(items), what="counter 1")
            proxy.cut()
            missed = [("probe.hole1_x", 25.001, at(15)), ("part.count", 2, at(20)), ("probe.hole1_x", 25.002, at(25))]
            missed.append(("part.count", 3, at(30)))
            for signal, value, when in missed:
                await srv.publish("vmc-01", signal, value, when)
            await wait_until(lambda: adapter.stats.counts["stale"] >= 1, what="the cut noticed")
            await proxy.restore()
            await wait_until(lambda: adapter.sessions >= 2 and adapter.state is AdapterState.CONNECTED, within_s=20)
            await srv.publish("vmc-01", "part.count", 4, at(40))
            await col.wait(lambda items: (at(40), 4.0) in counts(items), what="counter 4")
            gaps = col.of(GAP_SIGNAL)
            if history:
                assert gaps == []
                assert counts(col.items) == [(at(10), 1.0), (at(20), 2.0), (at(30), 3.0), (at(40), 4.0)]
                probes = [(o.time, o.value) for o in col.of("probe.hole1_x") if o.value is not None]
                assert probes == [(at(15), 25.001), (at(25), 25.002)]
                assert adapter.stats.counts["history_fills"] == 1
            else:
                # one window of the source's clock: from its last value before the cut to the
                # newest value found after it; what the server still shows comes after it
                (gap,) = gaps
                assert (gap.time, gap.end) == (at(10), at(30))
                assert "lost" in str(gap.value) and "no history" in str(gap.value)
                assert counts(col.items) == [(at(10), 1.0), (at(30), 3.0), (at(40), 4.0)]
                assert col.items.index(gap) < next(i for i, o in enumerate(col.items) if o.value == 3.0)
        finally:
            await col.aclose()


async def test_each_publish_is_passed_on_in_source_time_order(sim: OpcUaSimServer) -> None:
    # the server groups one publish's changes by monitored item; the tracker needs them by time
    cfg = machine_config(sim.endpoint, publishing_interval_ms=400, stale_after_s=10.0)
    async with OpcUaAdapter(cfg) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(connected, what="connected")
            writes = [("spindle.load", 10.0, at(2)), ("part.count", 5, at(1)), ("spindle.load", 11.0, at(3))]
            writes += [("probe.hole1_x", 25.0, at(0.5)), ("part.count", 6, at(4))]
            for signal, value, when in writes:  # all within one publishing interval
                await sim.publish("vmc-01", signal, value, when)
            await col.wait(lambda items: (at(4), 6.0) in counts(items), what="all written")
            got = [(o.signal, o.time) for o in col.items if o.value is not None and o.time >= T0]
            assert got == sorted(got, key=lambda x: x[1])
            assert len(got) == len(writes)
        finally:
            await col.aclose()


async def test_alive_but_silent_subscription_is_noticed_and_recovered(sim: OpcUaSimServer) -> None:
    cfg = machine_config(sim.endpoint, verify_interval_s=0.3, stale_after_s=30.0, keepalive_count=2)
    async with OpcUaAdapter(cfg) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(connected, what="connected")
            await sim.publish("vmc-01", "part.count", 1, at(1))
            await col.wait(lambda items: (at(1), 1.0) in counts(items), what="counter 1")
            assert await sim.silence_subscriptions() == 1  # keep-alives still come, changes do not
            await sim.publish("vmc-01", "part.count", 2, at(2))
            await wait_until(lambda: adapter.stats.counts["silent_subscription"] == 1, within_s=10, what="silence noticed")
            await wait_until(lambda: adapter.sessions >= 2 and adapter.state is AdapterState.CONNECTED, within_s=10)
            await sim.publish("vmc-01", "part.count", 3, at(3))
            await col.wait(lambda items: (at(3), 3.0) in counts(items), what="counter 3 delivered")
            # the change the silent subscription held back is accounted for: as a gap up to it
            (gap,) = col.of(GAP_SIGNAL)
            assert (gap.time, gap.end) == (at(1), at(2))
            assert "silent" in str(gap.value)
        finally:
            await col.aclose()


@pytest.mark.parametrize("history", [True, False], ids=["with-history", "without-history"])
async def test_resumed_by_time_after_a_restart(history: bool) -> None:
    async with OpcUaSimServer([MACHINE], history=1000 if history else 0) as srv:
        for n in (1, 2, 3):
            await srv.publish("vmc-01", "part.count", n, at(10 * n))
        cfg = machine_config(srv.endpoint)
        # the daemon stored parts up to counter 1 (at 10 s) before it stopped
        async with OpcUaAdapter(cfg, resume={"time": at(10).isoformat()}) as adapter:
            col = Collector(adapter)
            try:
                await col.wait(lambda items: (at(30), 3.0) in counts(items), what="counter 3")
                if history:
                    assert counts(col.items)[:3] == [(at(10), 1.0), (at(20), 2.0), (at(30), 3.0)]
                    assert col.of(GAP_SIGNAL) == []
                else:
                    (gap,) = col.of(GAP_SIGNAL)
                    assert (gap.time, gap.end) == (at(10), at(30))
                    assert "not reading" in str(gap.value)
                assert adapter.position_at(at(30)) == {"time": at(30).isoformat()}
            finally:
                await col.aclose()


async def test_asyncua_disconnect_traceback_becomes_one_counted_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    srv = OpcUaSimServer([MACHINE])
    await srv.start()
    port = srv.port
    try:
        async with OpcUaAdapter(machine_config(srv.endpoint)) as adapter:
            col = Collector(adapter)
            try:
                for n in (1, 2):
                    await wait_until(lambda: adapter.sessions == n, what="connected")  # noqa: B023 (awaited here)
                    await srv.stop()
                    await wait_until(lambda: adapter.stats.counts["reconnects"] == n, what="loss noticed")  # noqa: B023
                    srv = OpcUaSimServer([MACHINE], port=port)
                    await srv.start()
                await wait_until(lambda: adapter.sessions == 3, what="connected again")
            finally:
                await col.aclose()
    finally:
        await srv.stop()
    assert not [r for r in caplog.records if r.name.startswith("asyncua") and "iteration crashed" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("asyncua")]
    crashed = {k: v for k, v in adapter.stats.counts.items() if k.startswith("asyncua:Publish iteration crashed")}
    assert sum(crashed.values()) >= 2
    lines = [r for r in caplog.records if "asyncua: Publish iteration crashed" in r.getMessage()]
    assert len(lines) == len(crashed) and all(r.getMessage().startswith("vmc-01:") for r in lines)
