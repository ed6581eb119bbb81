"""The OPC UA adapter against the simulated CNC over TCP: mapping, timestamps, status, config checks."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary, variant_to_binary
from pydantic import ValidationError

import adapters.opcua.addressing as addressing_mod
import adapters.opcua.certs as certs_mod
import adapters.opcua.client as client_mod
import adapters.opcua.config as config_mod
import adapters.opcua.discover as discover_mod
import adapters.opcua.session as session_mod
import monitor.sim.opcua_server as simserver_mod
from adapters.opcua.addressing import BrowsePathAddress, NodeAddress, parse_address
from adapters.opcua.client import OpcUaAdapter, queue_size_warnings
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL, Observation
from monitor.plugins import adapter_factory
from monitor.sim.opcua_server import SIM_APPLICATION_URI, OpcUaSimServer
from monitor.tracking import PartTracker
from tests.opcua.helpers import MACHINE, Collector, machine_config

T0 = datetime(2031, 3, 1, 8, 0, tzinfo=UTC)  # after the nodes' creation time


def test_public_names_are_exported() -> None:
    for mod in (addressing_mod, client_mod, simserver_mod, certs_mod, config_mod, discover_mod, session_mod):
        public = {n for n in vars(mod) if not n.startswith("_") and getattr(vars(mod)[n], "__module__", None) == mod.__name__}
        assert public <= set(mod.__all__), (mod.__name__, public - set(mod.__all__))


def test_registry_serves_this_adapter() -> None:
    assert adapter_factory("opcua") is OpcUaAdapter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nsu=urn:x:y;s=Macro.R500", NodeAddress("urn:x:y", "s", "Macro.R500")),
        ("ns=urn:vendor:cnc;s=Spindle1.Load", NodeAddress("urn:vendor:cnc", "s", "Spindle1.Load")),
        ("i=2258", NodeAddress(None, "i", "2258")),
        ("ns=0;i=2258", NodeAddress(None, "i", "2258")),
        ("MA:Machines/app:VMC-01", BrowsePathAddress((("MA", "Machines"), ("app", "VMC-01")))),
    ],
)
def test_parse_address(text: str, expected: object) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["ns=3;s=Spindle1.Load", "Machines/app:X", "i=abc"])
def test_parse_address_refuses_unstable_or_unprefixed(text: str) -> None:
    with pytest.raises(ValueError, match=r"namespace|prefix|numeric"):
        parse_address(text)


def test_numeric_namespace_index_is_a_config_error() -> None:
    """Refused when the site file is loaded (so `monitor check` says it), not at the first connect."""
    with pytest.raises(ValidationError, match="namespace index 3 may change"):
        machine_config("opc.tcp://127.0.0.1:1", {"spindle.load": "ns=3;s=Spindle1.Load"})


def test_queue_size_must_cover_publishing_interval() -> None:
    cfg = machine_config(
        "opc.tcp://127.0.0.1:1",
        {"spindle.load": {"node": "i=2258", "queue_size": 2}, "spindle.speed": "i=2258"},
        publishing_interval_ms=500,
        sampling_interval_ms=100,
        queue_size=5,
    )
    warnings = queue_size_warnings(cfg.source, OpcUaAdapter(cfg).plans)
    assert len(warnings) == 1 and warnings[0].startswith("spindle.load: queue_size 2 < ")


def test_stale_timeout_must_exceed_keepalive_period() -> None:
    cfg = machine_config("opc.tcp://127.0.0.1:1", {}, publishing_interval_ms=1000, keepalive_count=10, stale_after_s=5)
    assert any(w.startswith("stale_after_s 5 <= ") for w in OpcUaAdapter(cfg).warnings)


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    cfg = machine_config("opc.tcp://127.0.0.1:1", {}, reconnect_min_s=0.5, reconnect_max_s=8.0)
    adapter = OpcUaAdapter(cfg, seed=1)
    delays = [adapter._backoff(a) for a in range(8)]
    steps = [min(8.0, 0.5 * 2**a) for a in range(8)]
    assert all(s / 2 <= d <= s for d, s in zip(delays, steps, strict=True))
    assert len({round(d / s, 6) for d, s in zip(delays, steps, strict=True)}) > 1  # jittered, not fixed
    again = OpcUaAdapter(cfg, seed=1)
    assert [again._backoff(a) for a in range(8)] == delays  # seeded: repeatable


def test_decoded_nan_is_one_object_so_a_value_sent_again_is_a_repeat() -> None:
    """Each decode of a Double NaN makes a new float, and a NaN equals nothing but itself: a probe's NaN
    sent again (a reconnect's initial values) was counted and noted again. Decoded as the one
    ``math.nan`` it is recognised as a repeat. The largest UInt64/Int64 are finite floats."""
    wire = variant_to_binary(ua.Variant(float("nan"), ua.VariantType.Double))
    first, again = (client_mod._to_value(variant_from_binary(Buffer(wire)).Value) for _ in range(2))
    assert first is math.nan and again is math.nan
    tracker = PartTracker("m1", {})
    for value in (first, again):
        tracker.update(Observation("m1", "probe.hole1_x", T0, value))
    assert tracker.counts["non_numeric_probe_values"] == 1 and tracker.counts["duplicates"] == 1
    for big, kind in ((2**64 - 1, ua.VariantType.UInt64), (-(2**63), ua.VariantType.Int64)):
        raw = variant_from_binary(Buffer(variant_to_binary(ua.Variant(big, kind)))).Value
        assert client_mod._to_value(raw) == float(big) and Observation("m1", "probe.x", T0, raw).number == float(big)


async def test_values_arrive_with_source_timestamps(sim: OpcUaSimServer) -> None:
    async with OpcUaAdapter(machine_config(sim.endpoint)) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(lambda items: any(o.signal == CONNECTION_SIGNAL for o in items), what="connected")
            for i in range(1, 6):
                await sim.publish(MACHINE.id, "spindle.load", 10.0 * i, T0 + timedelta(seconds=i))
            await sim.publish(MACHINE.id, "program.name", "O1234", T0)
            await sim.publish(MACHINE.id, "execution", "ACTIVE", T0)
            await sim.publish(MACHINE.id, "part.count", 7, T0)
            await sim.publish(MACHINE.id, "probe.hole1_x", 25.0012, T0)
            await col.wait(lambda items: any(o.signal == "probe.hole1_x" and o.value == 25.0012 for o in items))
            await col.wait(lambda items: len([o for o in items if o.signal == "spindle.load" and o.time >= T0]) == 5)
            loads = [(o.time, o.value) for o in col.of("spindle.load") if o.time >= T0]
            assert loads == [(T0 + timedelta(seconds=i), 10.0 * i) for i in range(1, 6)]
            assert [o.value for o in col.of("program.name")][-1] == "O1234"
            assert [o.value for o in col.of("execution")][-1] == "ACTIVE"
            assert [o.value for o in col.of("part.count")][-1] == 7.0
            assert adapter.resolved["probe.hole1_x"] == f"nsu={SIM_APPLICATION_URI};s=vmc-01.Vendor.Macro.R500"
            assert adapter.resolved["spindle.load"].startswith(f"nsu={SIM_APPLICATION_URI};")
        finally:
            await col.aclose()


async def test_bad_status_becomes_unavailable_and_logs_once(sim: OpcUaSimServer, caplog: pytest.LogCaptureFixture) -> None:
    async with OpcUaAdapter(machine_config(sim.endpoint)) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(lambda items: any(o.signal == CONNECTION_SIGNAL for o in items), what="connected")
            for i in range(3):
                await sim.publish(MACHINE.id, "probe.hole1_y", None, T0 + timedelta(seconds=i))
                await sim.publish(MACHINE.id, "probe.hole1_y", 40.0 + i, T0 + timedelta(seconds=i, milliseconds=500))
            await col.wait(lambda items: any(o.signal == "probe.hole1_y" and o.value == 42.0 for o in items))
            values = [o.value for o in col.of("probe.hole1_y") if o.time >= T0]
            assert values == [None, 40.0, None, 41.0, None, 42.0]
            logged = [r for r in caplog.records if "BadNoCommunication" in r.getMessage()]
            assert len(logged) == 1
            assert adapter.stats.counts["bad_status:BadNoCommunication"] == 3
        finally:
            await col.aclose()


async def test_unknown_browse_path_is_skipped_and_reported(sim: OpcUaSimServer) -> None:
    signals = {
        "spindle.load": "MA:Machines/app:vmc-01/CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActLoad",
        "spindle.speed": "MA:Machines/app:vmc-01/CNC:CncInterface/CNC:CncSpindleList/app:S9/CNC:ActSpeed",
        "tool.number": "IA:Nothing",  # a known prefix whose namespace this server lacks
    }
    async with OpcUaAdapter(machine_config(sim.endpoint, signals)) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(lambda items: any(o.signal == CONNECTION_SIGNAL for o in items), what="connected")
            await sim.publish(MACHINE.id, "spindle.load", 55.0, T0)
            await col.wait(lambda items: any(o.signal == "spindle.load" and o.value == 55.0 for o in items))
            assert set(adapter.resolved) == {"spindle.load"}
            assert adapter.stats.counts["unresolved:spindle.speed"] == 1
            assert adapter.stats.counts["unresolved:tool.number"] == 1
        finally:
            await col.aclose()


async def test_deadband_filters_small_changes(sim: OpcUaSimServer) -> None:
    signals = {"spindle.load": {"node": "nsu=urn:cnc-monitor:sim;s=vmc-01.CncInterface.CncSpindleList.S1.ActLoad",
                                "deadband": 1.0}}  # fmt: skip
    await sim.publish(MACHINE.id, "spindle.load", 0.0, T0 - timedelta(seconds=1))  # asyncua's deadband needs a value
    async with OpcUaAdapter(machine_config(sim.endpoint, signals)) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(lambda items: any(o.signal == CONNECTION_SIGNAL for o in items), what="connected")
            for i, v in enumerate([10.0, 10.5, 10.9, 12.0, 12.2, 20.0]):
                await sim.publish(MACHINE.id, "spindle.load", v, T0 + timedelta(seconds=i))
            await col.wait(lambda items: any(o.value == 20.0 for o in items))
            assert [o.value for o in col.of("spindle.load") if o.time >= T0] == [10.0, 12.0, 20.0]
        finally:
            await col.aclose()


async def test_client_queue_overflow_is_counted_and_reported_as_gap(sim: OpcUaSimServer) -> None:
    cfg = machine_config(sim.endpoint, notification_queue=1, publishing_interval_ms=200)
    async with OpcUaAdapter(cfg) as adapter:
        col = Collector(adapter)
        try:
            await col.wait(lambda items: any(o.signal == CONNECTION_SIGNAL for o in items), what="connected")
            for i in range(20):  # one publish response carries them all; the client queue holds one
                await sim.publish(MACHINE.id, "spindle.load", float(i), T0 + timedelta(milliseconds=i))
            await col.wait(lambda items: any(o.signal == GAP_SIGNAL for o in items), what="gap")
            assert adapter.stats.counts["client_queue_overflow"] >= 1
            assert "client queue overflowed" in str(col.of(GAP_SIGNAL)[0].value)
        finally:
            await col.aclose()
