"""End to end: a daemon on a replay source, configured with MQTT and a webhook, notifies a real broker and receiver."""

from __future__ import annotations

import json
from pathlib import Path

from monitor.config import load_site
from monitor.sinks.payload import SCHEMA
from monitor.store import SqliteStore
from tests.daemons import running_daemon
from tests.notify.conftest import subscribed, wait_until
from tests.notify.mosquitto import Mosquitto
from tests.notify.test_webhook import SECRET, _verify, receiving
from tests.streams import batch, write_jsonl, write_site


async def test_daemon_publishes_alerts_to_mqtt_and_webhook(broker: Mosquitto, tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(10, oot_at=7))
    site_file = write_site(tmp_path, replay)
    async with receiving() as rx, subscribed(broker.socket_path) as sub:
        with site_file.open("a", encoding="utf-8") as f:
            f.write(
                "sinks:\n"
                f"  mqtt: {{transport: unix, socket_path: '{broker.socket_path}', retry_initial_s: 0.05, retry_max_s: 0.5}}\n"
                f"  webhooks:\n    - {{url: '{rx.url}', secret: '${{HOOK_SECRET}}', retry_initial_s: 0.05}}\n"
            )
        site = load_site(site_file, environ={"HOOK_SECRET": SECRET})
        async with running_daemon(site) as running:
            await sub.wait_for(lambda: bool(sub.on("/alerts/")), timeout_s=30)
            await sub.wait_for(
                lambda: any((m.json()["last_part"] or {}).get("part_number") == 10 for m in sub.on("/m1/status")), timeout_s=30
            )
            await wait_until(lambda: bool(rx.attempts), timeout_s=30)
            status = (await running.daemon.status())["sinks"]

    alert = sub.on("/alerts/")[0]
    doc = alert.json()
    assert alert.topic == f"monitor/test-cell/m1/alerts/{doc['feature']}"
    assert doc["schema"] == SCHEMA and doc["site"] == "test-cell" and doc["kind"] == "out_of_tolerance"
    assert doc["part_number"] == 7
    hook = json.loads(rx.attempts[0].body)
    assert hook == doc  # one payload format for both outputs
    assert _verify(SECRET, rx.attempts[0].body, rx.attempts[0].headers["X-Monitor-Signature"])
    machine = sub.on("/m1/status")[-1].json()  # the latest retained status
    with SqliteStore(site.store_path) as store:
        still_open = store.alerts(machine="m1", open_only=True)
    assert machine["program"] == "O1001" and machine["site"] == "test-cell"
    assert machine["last_part"]["part_number"] == 10 and machine["open_alerts"] == len(still_open)
    assert set(status) == {"mqtt", "webhook-1"}
    assert status["mqtt"]["filtered"] > 0  # raw signals never entered the MQTT queue
