"""The MQTT sink against a real mosquitto: topics, payloads, retained status, broker restarts."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest
from pydantic import SecretStr

from monitor.errors import SinkError
from monitor.model import CONNECTION_SIGNAL, Alert, AlertState, Observation, PartRecord, PartStatus, Severity
from monitor.sinks.base import RunningSink, SinkContext, SinkState
from monitor.sinks.config import MqttConfig
from monitor.sinks.mqtt import MqttSink
from monitor.sinks.payload import SCHEMA
from tests.notify.conftest import T0, make_alert, running, subscribed, wait_until
from tests.notify.mosquitto import Mosquitto


def _config(socket_path: Path, **kw: object) -> MqttConfig:
    return MqttConfig.model_validate(
        {"transport": "unix", "socket_path": socket_path, "retry_initial_s": 0.05, "retry_max_s": 0.2, "timeout_s": 2.0, **kw}
    )


def _running(config: MqttConfig, base_dir: Path, *, open_alerts: list[Alert] | None = None) -> RunningSink:
    context = SinkContext("cell-3", "mqtt", open_alerts=open_alerts or [])
    return RunningSink.for_output(MqttSink.from_config(config, context), config, base_dir=base_dir)


def _part(n: int) -> PartRecord:
    t = T0 + timedelta(minutes=n)
    return PartRecord(
        f"k{n}", "vmc-01", "O1234", n, t - timedelta(seconds=90), t, PartStatus.COMPLETE, measurements={"probe.hole1_x": 25.001}
    )


async def test_alerts_and_status_arrive_as_documented(broker: Mosquitto, tmp_path: Path) -> None:
    sink = _running(
        _config(broker.socket_path), tmp_path, open_alerts=[make_alert(90, machine="vmc-01", severity=Severity.CRITICAL)]
    )
    async with subscribed(broker.socket_path) as sub, running(sink):
        sink.offer(Observation("vmc-01", CONNECTION_SIGNAL, T0, "connected"))
        sink.offer(Observation("vmc-01", "spindle.load", T0, 41.0))  # not for MQTT: filtered before the queue
        sink.offer(_part(7))
        sink.offer(make_alert(1))
        sink.offer(make_alert(1, state=AlertState.ACKNOWLEDGED))
        await sub.wait_for(lambda: len(sub.on("/alerts/")) == 2)
        await sub.wait_for(lambda: any(m.json()["open_alerts"] == 2 for m in sub.on("/status")))

    alerts = sub.on("/alerts/")
    assert [m.topic for m in alerts] == ["monitor/cell-3/vmc-01/alerts/hole1_pos"] * 2
    assert all(m.qos == 1 and not m.retain for m in alerts)
    first, second = (m.json() for m in alerts)
    assert first["schema"] == SCHEMA and first["site"] == "cell-3"
    assert (first["id"], first["state"], second["state"]) == ("a1", "open", "acknowledged")
    assert first["machine"] == "vmc-01" and first["program"] == "O1234" and first["part_number"] == 11
    assert first["evidence"]["offset"]["change_mm"] == -0.012
    assert first["text"] == "WARNING open: cell-3/vmc-01 O1234 hole1_pos part 11: hole1_pos drifting +X 1.1 um/part"
    assert sink.filtered == 1 and sink.dropped == 0

    # A newcomer gets the retained status and the online flag at once.
    async with aiomqtt.Client(str(broker.socket_path), transport="unix", timeout=5) as client:
        await client.subscribe("monitor/cell-3/+/status", qos=1)
        await client.subscribe("monitor/cell-3/online", qos=1)
        got: dict[str, bytes] = {}
        async with asyncio.timeout(10):
            async for m in client.messages:
                assert m.retain
                got[str(m.topic)] = m.payload if isinstance(m.payload, bytes) else b""
                if len(got) == 2:
                    break
    status = json.loads(got["monitor/cell-3/vmc-01/status"])
    assert status["connection"] == "connected" and status["program"] == "O1234"
    assert status["last_part"]["part_number"] == 7
    assert status["open_alerts"] == 2  # one from the store at start, one raised now
    assert status["open_alerts_by_severity"] == {"watch": 0, "warning": 1, "critical": 1}
    assert got["monitor/cell-3/online"] == b"false"  # the sink closed cleanly


async def test_broker_restart_loses_nothing_within_the_queue_bound(broker: Mosquitto, tmp_path: Path) -> None:
    bound = 50
    sink = _running(_config(broker.socket_path, queue_size=bound, batch_size=10), tmp_path)
    sink._rng = random.Random(3)
    async with subscribed(broker.socket_path) as sub, running(sink):
        for n in range(5):
            sink.offer(make_alert(n))
        await sub.wait_for(lambda: len(sub.on("/alerts/")) == 5)

        await asyncio.to_thread(broker.stop)
        sink.offer(make_alert(5))  # taken by the writer, fails, held for retry
        await wait_until(lambda: sink.state in (SinkState.RETRYING, SinkState.DOWN) and sink.status()["backlog_memory"] == 1)
        for n in range(6, 6 + bound + 10):  # the queue holds `bound` more; the last 10 overflow
            sink.offer(make_alert(n))
        assert sink.dropped == 10
        retries_while_down = sink.retries

        await asyncio.to_thread(broker.start)
        await sub.wait_for(lambda: len({m.json()["id"] for m in sub.on("/alerts/")}) == 5 + 1 + bound)
        await wait_until(lambda: sink.state is SinkState.CONNECTED and sink.status()["backlog_memory"] == 0)

    ids = list(dict.fromkeys(m.json()["id"] for m in sub.on("/alerts/")))
    assert ids == [f"a{n}" for n in range(6 + bound)]  # in order, nothing lost, the overflow counted
    assert sink.written == 6 + bound and sink.dropped == 10
    assert retries_while_down >= 1 and broker.starts == 2


async def test_unreachable_broker_is_a_retryable_error_without_the_password(tmp_path: Path) -> None:
    config = _config(tmp_path / "nothing.sock", username="u", password=SecretStr("s3cret-pw"))
    sink = MqttSink(config, "cell-3")
    with pytest.raises(SinkError) as info:
        await sink.write([make_alert(1)])
    await sink.aclose()
    assert info.value.retryable is True
    assert "s3cret-pw" not in str(info.value) and "s3cret-pw" not in repr(config)


def test_topic_levels_are_made_safe() -> None:
    sink = MqttSink(_config(Path("/x.sock"), prefix="plant/a"), "cell 3")
    assert sink.alert_topic("vmc/01", "hole#1+") == "plant/a/cell 3/vmc_01/alerts/hole_1_"
    assert sink.status_topic("") == "plant/a/cell 3/_/status"


def test_config_requires_a_socket_for_unix() -> None:
    with pytest.raises(ValueError, match="socket_path"):
        MqttConfig.model_validate({"transport": "unix"})


def test_site_file_builds_the_mqtt_sink_with_the_password_from_the_environment(tmp_path: Path) -> None:
    from monitor.config import load_site
    from monitor.plugins import build_sinks

    (tmp_path / "programs").mkdir()
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        "site: cell-3\n"
        "sinks:\n"
        "  mqtt: {host: broker.local, port: 1883, prefix: plant, username: mon, password: '${MQTT_PASSWORD}'}\n"
    )
    site = load_site(site_file, environ={"MQTT_PASSWORD": "pw-from-env"})
    sinks = [s for s in build_sinks(site) if s.name == "mqtt"]
    assert len(sinks) == 1
    mqtt = sinks[0].sink
    assert isinstance(mqtt, MqttSink) and mqtt.status_topic("m1") == "plant/cell-3/m1/status"
    assert mqtt.secrets == ("pw-from-env",) and "pw-from-env" not in repr(site.config)


async def test_close_is_bounded_when_the_broker_died(broker: Mosquitto) -> None:
    sink = MqttSink(_config(broker.socket_path, timeout_s=30.0), "cell-3")
    await sink.write([make_alert(1)])
    await asyncio.to_thread(broker.stop)
    started = asyncio.get_running_loop().time()
    await sink.aclose()
    assert asyncio.get_running_loop().time() - started < 5.0


def test_status_changes_only_when_something_shown_changes() -> None:
    from monitor.sinks.mqtt import RetainedStatus

    status = RetainedStatus("vmc-01")
    opened = make_alert(1)
    assert status.apply(opened) and not status.apply(opened)  # a retried batch changes nothing
    assert status.apply(make_alert(1, severity=Severity.CRITICAL))  # escalation: counts by severity change
    assert status.apply(_part(3)) and not status.apply(_part(3))
    assert not status.apply(Observation("vmc-01", "program.name", T0, "O1234"))  # program already known from the part
    assert status.apply(Observation("vmc-01", CONNECTION_SIGNAL, T0, "lost"))
    assert status.apply(make_alert(1, state=AlertState.CLOSED)) and not status.apply(make_alert(1, state=AlertState.CLOSED))
    doc = status.document("cell-3")
    assert doc["open_alerts"] == 0 and doc["connection"] == "lost" and doc["last_part"]["part_number"] == 3


async def test_spooled_queue_survives_a_daemon_restart_while_the_broker_is_down(broker: Mosquitto, tmp_path: Path) -> None:
    config = _config(broker.socket_path, spool_dir="spool/mqtt")
    async with subscribed(broker.socket_path) as sub:
        await asyncio.to_thread(broker.stop)
        first = _running(config, tmp_path)
        async with running(first):
            for n in range(8):
                first.offer(make_alert(n))
            await wait_until(lambda: first.state in (SinkState.RETRYING, SinkState.DOWN))
        assert first.status()["backlog_disk"] == 8 and first.dropped == 0  # all on disk at close

        await asyncio.to_thread(broker.start)
        second = _running(config, tmp_path)  # the restarted daemon
        async with running(second):
            second.offer(make_alert(8))
            await sub.wait_for(lambda: len({m.json()["id"] for m in sub.on("/alerts/")}) == 9)
    ids = list(dict.fromkeys(m.json()["id"] for m in sub.on("/alerts/")))
    assert ids == [f"a{n}" for n in range(9)]  # the spooled ones first, in order
