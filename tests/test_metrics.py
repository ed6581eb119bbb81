"""Prometheus metrics at /metrics: every family the issue names is exposed with the right values,
and a real Prometheus server (Debian's) scrapes the running daemon and answers queries on them."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from monitor.config import load_site
from tests.daemons import running_daemon
from tests.servers.prometheus import running_prometheus
from tests.streams import batch, write_jsonl, write_site

FAMILIES = {
    "cnc_monitor_info": "gauge",  # an info metric: a gauge of 1 with the labels
    "cnc_monitor_source_observations": "counter",
    "cnc_monitor_source_gaps": "counter",
    "cnc_monitor_source_reconnects": "counter",
    "cnc_monitor_source_restarts": "counter",
    "cnc_monitor_source_connected": "gauge",
    "cnc_monitor_source_last_data_age_seconds": "gauge",
    "cnc_monitor_parts": "counter",
    "cnc_monitor_open_alerts": "gauge",
    "cnc_monitor_open_conditions": "gauge",
    "cnc_monitor_sink_backlog": "gauge",
    "cnc_monitor_sink_written": "counter",
    "cnc_monitor_sink_retries": "counter",
    "cnc_monitor_sink_dropped": "counter",
    "cnc_monitor_store_write_seconds": "histogram",
    "cnc_monitor_event_loop_lag_seconds": "histogram",
    "cnc_monitor_config_loaded_timestamp_seconds": "gauge",
    "cnc_monitor_reloads": "counter",
}


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(r.read().decode())


def _site(tmp_path: Path) -> Path:
    # 10 parts, the last out of tolerance: an open critical alert; a webhook output that cannot connect
    site = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(10, oot_at=10)), dashboard=True)
    site.write_text(site.read_text() + "sinks:\n  webhooks:\n    - {url: 'http://127.0.0.1:9/hook', retry_initial_s: 0.1}\n")
    return site


async def test_metrics_expose_every_family_with_the_daemons_numbers(tmp_path: Path) -> None:
    async with running_daemon(load_site(_site(tmp_path))) as running:
        daemon = running.daemon
        await running.parts(10)
        await running.until(lambda e: e.kind == "alert" and e.data.get("kind") == "out_of_tolerance")
        text = await asyncio.to_thread(_get, f"{daemon.dashboard_url}metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    missing = {name: kind for name, kind in FAMILIES.items() if name not in families or families[name].type != kind}
    assert not missing, missing

    def value(family: str, sample: str, **labels: str) -> float:
        found = [
            s.value for s in families[family].samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, (family, sample, labels, families[family].samples)
        return float(found[0])

    source = {"machine": "m1", "source": f"replay {tmp_path / 'm1.jsonl'}"}
    assert value("cnc_monitor_parts", "cnc_monitor_parts_total", machine="m1", status="complete") == 10
    delivered = value("cnc_monitor_source_observations", "cnc_monitor_source_observations_total", **source)
    assert delivered == len(batch(10, oot_at=10))
    assert value("cnc_monitor_source_gaps", "cnc_monitor_source_gaps_total", **source) == 0
    assert value("cnc_monitor_open_alerts", "cnc_monitor_open_alerts", machine="m1", severity="critical") >= 1
    oot = value(
        "cnc_monitor_open_conditions", "cnc_monitor_open_conditions", machine="m1", condition="out_of_tolerance", state="open"
    )
    assert oot == 1  # one condition for the feature, whatever its detectors say
    assert value("cnc_monitor_store_write_seconds", "cnc_monitor_store_write_seconds_count", kind="part") == 10
    assert value("cnc_monitor_source_last_data_age_seconds", "cnc_monitor_source_last_data_age_seconds", **source) >= 0
    assert value("cnc_monitor_sink_backlog", "cnc_monitor_sink_backlog", sink="webhook-1", where="memory") >= 1
    assert value("cnc_monitor_event_loop_lag_seconds", "cnc_monitor_event_loop_lag_seconds_count") >= 1
    assert value("cnc_monitor_info", "cnc_monitor_info", site="test-cell") == 1


async def test_a_real_prometheus_scrapes_the_daemon_and_answers(tmp_path: Path) -> None:
    async with running_daemon(load_site(_site(tmp_path))) as running:
        daemon = running.daemon
        await running.parts(10)
        assert daemon.dashboard_url is not None
        target = daemon.dashboard_url.split("//", 1)[1].rstrip("/")
        with running_prometheus(tmp_path / "prometheus", [target]) as prometheus:
            result: list[dict[str, Any]] = []
            async with asyncio.timeout(60):
                while not result:  # the first scrape happens within one interval of the start
                    await asyncio.sleep(0.2)
                    result = await asyncio.to_thread(prometheus.query, 'cnc_monitor_parts_total{machine="m1",status="complete"}')
            assert [float(r["value"][1]) for r in result] == [10.0]
            up = await asyncio.to_thread(prometheus.query, 'up{job="cnc-monitor"}')
            assert [r["value"][1] for r in up] == ["1"]
            rate = await asyncio.to_thread(prometheus.query, "sum(cnc_monitor_source_observations_total)")
            assert float(rate[0]["value"][1]) > 0
