"""People's alert changes go to the running daemon's core, dashboard or not, so they survive the detectors.

The race this fixes: with the dashboard disabled, ``monitor ack`` wrote the acknowledgement straight
to the store; the daemon's engine still held the alert open and wrote it back as open at its next
escalation. Now the CLI reaches the core through its local control API (the daemon's runtime file
says where), and the core is the one writer of alert state.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.codec import observation_to_dict
from monitor.config import load_site
from monitor.daemon import open_core
from monitor.errors import MonitorError
from monitor.model import Observation, Severity
from monitor.runtime import StoreLock, read_runtime
from monitor.status import daemon_status
from monitor.store import SqliteStore
from tests.daemons import RunningDaemon, running_daemon
from tests.streams import cycle, obs, write_site

ROOT = Path(__file__).resolve().parents[1]
PARTS = 60


def _ramp() -> list[list[Observation]]:
    """Per part, its observations: hole1_dia steady, then drifting up by 0.4 um/part (seeded scatter)."""
    rng = random.Random(1)
    parts = [[obs(-10, "program.name", "O1001"), obs(-10, "part.count", 0)]]
    for i in range(1, PARTS + 1):
        dia = 10.0 + (0.0 if i <= 12 else 0.0004 * (i - 12)) + rng.gauss(0, 0.0006)
        parts.append(cycle(i * 20.0, i, dia=round(dia, 5)))
    return parts


def _monitor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "monitor", *args], env=env, capture_output=True, text=True, timeout=60)


class _Feed:
    """Writes the ramp into the replay source's FIFO part by part, waiting for each part to be stored."""

    def __init__(self, fifo: Path, running: RunningDaemon) -> None:
        self.parts = _ramp()
        self.next = 0
        self.running = running
        self._fd = os.open(fifo, os.O_WRONLY)  # the replay adapter has the FIFO open for reading

    async def part(self) -> list[dict[str, Any]]:
        """Send the next part's observations (whose start releases the part before) and wait until
        that part is stored; returns the alert changes seen meanwhile."""
        seen = len(self.running.alerts)
        lines = "".join(json.dumps(observation_to_dict(o)) + "\n" for o in self.parts[self.next])
        self.next += 1
        await asyncio.to_thread(os.write, self._fd, lines.encode())
        await self.running.parts(self.next - 2, timeout_s=20)
        await self.running.drain()  # the rest of that batch: its alert changes
        return self.running.alerts[seen:]

    def close(self) -> None:
        os.close(self._fd)


async def test_acknowledgement_through_the_cli_survives_an_escalation_with_the_dashboard_off(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m1.fifo")
    site_file = write_site(tmp_path, tmp_path / "m1.fifo", dashboard=False)
    site = load_site(site_file)
    rank = {str(s): s.rank for s in Severity}
    async with running_daemon(site) as running:
        assert running.daemon.dashboard_url is None and running.daemon.control_url is not None
        feed = _Feed(tmp_path / "m1.fifo", running)
        try:
            opened = None
            while opened is None:  # until the drift opens an alert below critical (it can still escalate)
                assert feed.next < PARTS, "the drift never opened an alert"
                changes = await feed.part()
                opened = next((a for a in changes if a["state"] == "open" and a["severity"] != "critical"), None)
            result = await asyncio.to_thread(_monitor, "ack", opened["id"], "-c", str(site_file))
            assert result.returncode == 0, result.stderr
            assert "acknowledged by local (engineer) (through the running daemon)" in result.stdout
            await running.drain()
            acked = [a for a in running.alerts if a["id"] == opened["id"]][-1]
            assert acked["state"] == "acknowledged"  # the core published the change, like any alert change
            escalated = None
            while escalated is None:  # the daemon goes on: the same alert escalates
                assert feed.next <= PARTS, f"alert {opened['id']} never escalated"
                changes = await feed.part()
                escalated = next(
                    (a for a in changes if a["id"] == opened["id"] and rank[a["severity"]] > rank[opened["severity"]]), None
                )
        finally:
            feed.close()
    assert escalated["state"] == "acknowledged"  # the escalation kept the person's acknowledgement
    with SqliteStore(site.store_path) as store:
        stored = store.alert(opened["id"])
    assert stored is not None and stored.state.value == "acknowledged" and stored.severity.value == escalated["severity"]


async def test_status_and_ack_reach_the_daemon_without_a_dashboard_and_only_with_its_token(tmp_path: Path) -> None:
    from tests.streams import batch, write_jsonl

    site_file = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(6, oot_at=4)), dashboard=False)
    site = load_site(site_file)
    async with running_daemon(site) as running:
        await running.parts(5)
        info = read_runtime(site.store_path)
        assert info is not None and info.control_url == running.daemon.control_url and info.dashboard_url is None
        assert (site.store_path.parent / "monitor.db.daemon.json").stat().st_mode & 0o077 == 0  # holds the token
        status = await daemon_status(site_file)
        assert status["machines"]["m1"]["parts"] >= 5 and status["site"] == "test-cell"
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(info.control_url + "status") as resp:
                assert resp.status == 401  # no token: nothing
            async with http.post(info.control_url + "alerts/x/ack", headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
        oot = await running.daemon.core.read(lambda store: [a for a in store.alerts() if a.kind.value == "out_of_tolerance"])
        result = await asyncio.to_thread(_monitor, "ack", oot[0].id, "-c", str(site_file), "--close")
        assert result.returncode == 0 and "closed by local (engineer) (through the running daemon)" in result.stdout, (
            result.stderr
        )
        missing = await asyncio.to_thread(_monitor, "ack", "no/such/alert", "-c", str(site_file))
        assert missing.returncode == 1 and "no open, unacknowledged alert no/such/alert" in missing.stderr
    assert read_runtime(site.store_path) is None  # removed at the clean stop
    with pytest.raises(MonitorError, match="no running daemon found"):
        await daemon_status(site_file)


async def test_one_daemon_per_store_and_offline_changes_wait_for_none(tmp_path: Path) -> None:
    from tests.streams import batch, write_jsonl

    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(2)), dashboard=False))
    async with open_core(site):
        with pytest.raises(MonitorError, match="another monitor daemon is running on"):
            async with open_core(site, lock_timeout_s=0.2):
                pass
        assert not StoreLock(site.store_path).try_acquire()  # a command may not write behind the core's back
    lock = StoreLock(site.store_path)
    assert lock.try_acquire()  # released when the core closed
    lock.release()
