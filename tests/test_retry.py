"""The one retry toolkit: every output and source reads, checks and applies retry waits the same way."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from adapters.mtconnect.config import MtConnectSource
from adapters.opcua.config import OpcUaSource
from monitor.retry import Backoff, Retry, retry_after_s
from monitor.sinks.base import RunningSink, SinkContext
from monitor.sinks.config import InfluxConfig, MqttConfig, OutputConfig, WebhookConfig
from monitor.sinks.webhook import WebhookSink


@pytest.mark.parametrize(
    ("model", "base", "first", "cap"),
    [
        (InfluxConfig, {"url": "http://influx:8086"}, "retry_initial_s", "retry_max_s"),
        (MqttConfig, {}, "retry_initial_s", "retry_max_s"),
        (WebhookConfig, {"url": "https://hooks.example/x"}, "retry_initial_s", "retry_max_s"),
        (OpcUaSource, {"type": "opcua", "endpoint": "opc.tcp://cnc:4840"}, "reconnect_min_s", "reconnect_max_s"),
        (MtConnectSource, {"type": "mtconnect", "url": "http://agent:5000"}, "reconnect_min_s", "reconnect_max_s"),
    ],
)
def test_first_wait_above_the_cap_is_one_config_error_naming_both_keys(
    model: type[BaseModel], base: dict[str, Any], first: str, cap: str
) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate({**base, first: 5.0, cap: 1.0})
    assert f"{first} 5.0 must not exceed {cap} 1.0" in str(info.value)


def test_every_output_says_queue_size_and_influx_still_reads_buffer_size() -> None:
    assert all("queue_size" in m.model_fields for m in (InfluxConfig, MqttConfig, WebhookConfig))
    assert not any("buffer_size" in m.model_fields for m in (InfluxConfig, MqttConfig, WebhookConfig))
    old = InfluxConfig.model_validate({"url": "http://influx:8086", "buffer_size": 123})
    assert old.queue_size == 123
    assert InfluxConfig.model_validate({"url": "http://influx:8086", "queue_size": 77}).queue_size == 77


def test_an_output_section_sets_up_its_running_sink(tmp_path: Path) -> None:
    config = WebhookConfig.model_validate(
        {"url": "https://hooks.example/x", "queue_size": 7, "spool_dir": "spool/hook", "retry_initial_s": 0.2, "retry_max_s": 3}
    )
    running = RunningSink.for_output(WebhookSink.from_config(config, SinkContext("cell", "webhook-1")), config, base_dir=tmp_path)
    assert (running.name, running.queue_size, running.batch_size) == ("webhook-1", 7, 1)
    assert running.spool_dir == tmp_path / "spool" / "hook"  # relative to the site file's folder
    assert running.backoff == Backoff(initial_s=0.2, max_s=3.0)
    influx = InfluxConfig.model_validate({"url": "http://i:8086", "batch_size": 50, "spool_max_mb": 2})
    assert (influx.batch_events(), influx.spool_bytes()) == (50, 2 * 1024 * 1024)
    assert OutputConfig().batch_events() == 1


def test_retry_after_reads_seconds_and_http_dates_and_refuses_garbage() -> None:
    now = datetime(2026, 10, 21, 7, 28, tzinfo=UTC)
    assert retry_after_s(" 12 ") == 12.0
    assert retry_after_s("Wed, 21 Oct 2026 07:28:30 GMT", now) == 30.0
    assert retry_after_s("Wed, 21 Oct 2026 07:27:00 GMT", now) == 0.0  # in the past: at once, never negative
    assert retry_after_s("-5") == 0.0
    assert [retry_after_s(v) for v in (None, "", "later", "nan", "inf")] == [None, None, None, None, None]


def test_retry_grows_to_the_cap_with_jitter_and_starts_over_after_success() -> None:
    retry = Retry(Backoff(initial_s=0.5, max_s=4.0), random.Random(3))
    waits = [retry.failed() for _ in range(6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len({round(w / c, 6) for w, c in zip(waits, ceilings, strict=True)}) > 1  # jittered
    retry.succeeded()
    assert retry.failures == 0 and 0.25 <= retry.failed() <= 0.5
    assert retry.failed(retry_after=60.0) == 60.0  # a server's Retry-After is a minimum
    assert Backoff(max_retry_after_s=10.0).delay(0, random.Random(0), retry_after=1e9) == 10.0  # bounded
