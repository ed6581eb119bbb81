"""One bad source never takes the cell down: hostile agents over real HTTP and a source that fails
in a way nobody foresaw, next to a healthy machine, through the real daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from adapters.mtconnect.agent import MtConnectAgent
from monitor.config import load_site
from monitor.model import AlertKind, PartStatus
from monitor.store import SqliteStore
from tests.daemons import running_daemon
from tests.mtconnect._devices import vmc
from tests.servers.hostile_agent import HostileAgent
from tests.streams import PROGRAM_YAML, batch, write_jsonl

HOSTILE = ("linetoolong", "bigheader", "hugeprobe", "hugesample", "endless", "garbage", "stale", "silent")
PARTS = 12


def _site(tmp: Path, hostile: HostileAgent, healthy: Path, broken: Path) -> Path:
    (tmp / "programs").mkdir()
    (tmp / "programs" / "o1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    machines: list[dict[str, Any]] = [
        {"id": "m1", "source": {"type": "replay", "path": str(healthy), "speed": 40.0}, "tracking": {"grace_s": 1.0}},
        {"id": "broken-file", "source": {"type": "replay", "path": str(broken)}},
    ]
    for kind in HOSTILE:
        source = {
            "type": "mtconnect",
            "url": hostile.url(kind),
            "device": "vmc",
            "heartbeat_ms": 200,
            "request_timeout_s": 1.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
            "max_document_bytes": 4 << 20,
        }
        machines.append({"id": kind, "source": source, "signals": {"part.count": "vmc_pc"}})
    site = {"site": "hostile", "programs": "programs", "dashboard": {"enabled": False}, "machines": machines}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site), encoding="utf-8")
    return path


async def test_hostile_agents_and_a_crashing_source_never_stop_the_healthy_machine(tmp_path: Path) -> None:
    healthy = write_jsonl(tmp_path / "m1.jsonl", batch(PARTS))
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"signal": "part.count", "time": "2026-03-02T06:00:00+00:00", "value": 1}\n\xff\xfe\x00 not text\n')
    async with MtConnectAgent([vmc()]) as agent, HostileAgent(agent.url) as hostile:
        agent.publish("vmc", "vmc_pc", 1.0)
        site = load_site(_site(tmp_path, hostile, healthy, broken))
        async with running_daemon(site, stop_timeout_s=20) as running:

            async def sources() -> dict[str, dict[str, Any]]:
                machines = (await running.daemon.status())["machines"]
                return {m: machines[m]["sources"][0] for m in machines}

            def all_sources_failed(now: dict[str, dict[str, Any]]) -> bool:
                failures = ("bad_document", "connect_failed", "stream_ended")
                failed = [sum(int(now[k]["counts"].get(c, 0)) for c in failures) for k in HOSTILE]
                restarts = int(now["broken-file"].get("supervisor", {}).get("restarts", 0))
                return min(failed) >= 2 and restarts >= 2

            async with asyncio.timeout(60):
                while True:
                    await running.next_event()  # raises if the daemon stopped
                    now = await sources()
                    finished = now["m1"]["counts"].get("replay_finished", 0)
                    m1_parts = running.parts_by_machine.get("m1", 0)
                    if m1_parts >= PARTS - 1 and finished and all_sources_failed(now):  # the last part waits for the stop
                        break
            status = await running.daemon.status()
    with SqliteStore(site.store_path) as store:
        parts = store.parts(machine="m1")
        lost = {a.machine for a in store.alerts() if a.kind is AlertKind.SIGNAL_LOST}
    assert [p.part_number for p in parts] == list(range(1, PARTS + 1))
    assert all(p.status is PartStatus.COMPLETE for p in parts)
    broken_source = status["machines"]["broken-file"]["sources"][0]
    assert "UnicodeDecodeError" in broken_source["last_error"]
    assert broken_source["supervisor"]["restarts"] >= 2
    assert set(HOSTILE) | {"broken-file"} <= lost  # each bad source shows as lost, with an alert
