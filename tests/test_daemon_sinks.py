"""The daemon with outputs configured: every stored part reaches a real InfluxDB-v2-speaking
server (victoria-metrics) and a real MQTT broker (mosquitto) through `monitor run`'s wiring."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.config import load_site
from tests.daemons import run_until_parts
from tests.servers.victoria import running_victoria
from tests.streams import batch, write_jsonl, write_site


async def test_daemon_writes_parts_and_alerts_to_influx(tmp_path: Path) -> None:
    with running_victoria(tmp_path / "vm") as vm:
        replay = write_jsonl(tmp_path / "m1.jsonl", batch(10, oot_at=7))
        site_path = write_site(tmp_path, replay)
        site_path.write_text(
            site_path.read_text()
            + f"sinks:\n  influx: {{url: '{vm.url}', token: 'secret-token', flush_interval_s: 0.1, spool_dir: spool}}\n"
        )
        run = await run_until_parts(load_site(site_path), 10)  # stopping flushes the sink
        assert [s.status()["written"] > 0 for s in run.daemon.sinks] == [True]
        series = await asyncio.to_thread(vm.export, '{__name__=~"part_.*", machine="m1"}')
        dia = [s for s in series if s["metric"]["__name__"] == "part_probe.hole1_dia"]
        assert len(dia) == 1
        assert sorted(dia[0]["values"])[-1] == pytest.approx(10.02)
        assert len(dia[0]["timestamps"]) == 10  # one point per stored part, none twice
        alerts = await asyncio.to_thread(vm.export, '{__name__=~"alert_.*"}')
        assert any(s["metric"].get("kind") == "out_of_tolerance" for s in alerts)
