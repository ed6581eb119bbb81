"""``monitor run`` with ``sinks.influx`` configured: the daemon's parts and alerts reach the server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from monitor.config import load_site
from tests.daemons import run_until_parts
from tests.servers.victoria import VictoriaMetrics
from tests.streams import batch, write_jsonl, write_site

TOKEN = "daemon-token-1234"


async def test_daemon_writes_parts_alerts_and_signals_to_influx(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(12, oot_at=9))
    site_file = write_site(tmp_path, replay)
    with site_file.open("a", encoding="utf-8") as f:
        f.write(
            f"""\
sinks:
  influx:
    url: {victoria.url}
    token: ${{INFLUX_TOKEN}}
    flush_interval_s: 0.05
    spool_dir: spool
    signals: {{spindle.load: {{mode: change}}}}
"""
        )
    site = load_site(site_file, environ={"INFLUX_TOKEN": TOKEN})
    run = await run_until_parts(site, 12)

    [sink] = run.daemon.sinks
    status = sink.status()
    assert status["state"] == "closed" and status["dropped"] == 0 and status["backlog_memory"] == 0, status
    assert status["written"] >= 12 + 1, status
    rows = await asyncio.to_thread(victoria.export)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["metric"]["__name__"], []).append(row)
    [numbers] = by_name["part_part_number"]
    assert numbers["metric"]["machine"] == "m1" and numbers["metric"]["program"] == "O1001"
    assert sorted(numbers["values"]) == [float(i) for i in range(1, 13)]
    oot = [r for r in by_name["alert_part_number"] if r["metric"]["kind"] == "out_of_tolerance"]
    assert oot and 9.0 in oot[0]["values"]
    assert "signal_value" in by_name, "the configured raw signal is written"
