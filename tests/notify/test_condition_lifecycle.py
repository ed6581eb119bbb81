"""A condition's whole life, as people and machines see it: it escalates, is acknowledged with a
comment, receives an "offset applied" action and recovers to ok, seen through the dashboard API,
MQTT (a real mosquitto) and the command line, with one id from the first signal to ok."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from monitor.codec import observation_to_dict
from monitor.config import load_site
from tests.daemons import RunningDaemon, running_daemon
from tests.notify.conftest import subscribed, wait_until
from tests.notify.mosquitto import Mosquitto
from tests.streams import cycle, obs, write_site

ROOT = Path(__file__).resolve().parents[2]
ENGINEER, OPERATOR = "erin-6b2f9d4c1a8e73", "otto-3e7a1c9f5d2b84"
_ENV = {"MONITOR_TOKEN_ERIN": ENGINEER, "MONITOR_TOKEN_OTTO": OPERATOR}


def _monitor(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_ENV, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("MONITOR_TOKEN", None)
    if token:
        env["MONITOR_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "monitor", *args], env=env, capture_output=True, text=True, timeout=60)


class _Feed:
    """Parts of O1001 into the replay source's FIFO, one at a time: hole1_dia as ``dia(n)``."""

    def __init__(self, fifo: Path, running: RunningDaemon) -> None:
        self.running = running
        self.n = 0
        self._fd = os.open(fifo, os.O_WRONLY)
        os.write(self._fd, self._lines([obs(-10, "program.name", "O1001"), obs(-10, "part.count", 0)]))

    @staticmethod
    def _lines(stream: list[Any]) -> bytes:
        return "".join(json.dumps(observation_to_dict(o)) + "\n" for o in stream).encode()

    async def part(self, dia: float) -> None:
        """Send one more part and wait until the one before it is stored (its start releases it)."""
        self.n += 1
        await asyncio.to_thread(os.write, self._fd, self._lines(cycle(self.n * 20.0, self.n, dia=round(dia, 5))))
        await self.running.parts(self.n - 1, timeout_s=20)
        await self.running.drain()

    def close(self) -> None:
        os.close(self._fd)


async def test_a_condition_escalates_is_acknowledged_corrected_and_recovers(broker: Mosquitto, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m1.fifo")
    site_file = write_site(tmp_path, tmp_path / "m1.fifo", dashboard=True)
    with site_file.open("a", encoding="utf-8") as f:
        f.write(
            'users:\n  erin: {role: engineer, token: "${MONITOR_TOKEN_ERIN}"}\n'
            '  otto: {role: operator, token: "${MONITOR_TOKEN_OTTO}"}\n'
            f"sinks:\n  mqtt: {{transport: unix, socket_path: '{broker.socket_path}', retry_initial_s: 0.05, retry_max_s: 0.5}}\n"
        )
    os.environ.update(_ENV)
    rng = random.Random(3)
    try:
        site = load_site(site_file)
        async with (
            subscribed(broker.socket_path) as sub,
            running_daemon(site) as running,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
        ):
            assert running.daemon.dashboard_url is not None
            api = running.daemon.dashboard_url.rstrip("/")
            feed = _Feed(tmp_path / "m1.fifo", running)
            try:
                # steady, then hole1_dia grows 0.5 um a part (a worn boring head, nominal 10.000, upper 10.010)
                level = 0.0
                for _ in range(10):
                    await feed.part(10.0 + rng.gauss(0, 0.0006))
                cond: dict[str, Any] | None = None
                while cond is None or cond["condition"] not in ("warning", "critical"):
                    assert feed.n < 60, "the drift never reached warning"
                    level += 0.0005
                    await feed.part(10.0 + level + rng.gauss(0, 0.0006))
                    opened = [a for a in running.alerts if a["feature"] == "hole1_dia" and a["state"] != "closed"]
                    cond = opened[-1] if opened else None
                cid = cond["id"]
                assert cid.startswith("m1/O1001/hole1_dia/")
                # the operator acknowledges through the command line (the daemon is the one writer)
                acked = await asyncio.to_thread(
                    _monitor, "ack", cid, "-c", str(site_file), "-m", "T12 checked, will correct", token=OPERATOR
                )
                assert acked.returncode == 0 and "acknowledged by otto (operator)" in acked.stdout, acked.stderr
                # the drift goes on: still acknowledged while it escalates (the acknowledgement is never lost)
                for _ in range(4):
                    level += 0.0005
                    await feed.part(10.0 + level + rng.gauss(0, 0.0006))
                async with http.get(f"{api}/api/alerts/{quote(cid, safe='')}") as r:
                    now = await r.json()
                assert now["state"] == "acknowledged" and now["last_part"] == feed.n - 1
                advice = now["evidence"]["advice"]
                (offset,) = advice["offsets"]
                assert offset["label"] == "T12 D-wear" and offset["change_mm"] > 0  # a bore too big: more D (the path moves in)
                assert advice["action"].startswith("apply T12 D-wear") and now["message"].endswith(advice["action"])
                # the engineer applies the advised offset at the control and records it on the dashboard
                body = {"kind": "offset_applied", "alert_id": cid, "change": offset["change_mm"], "comment": "as advised"}
                async with http.post(f"{api}/api/actions", json=body, headers={"Authorization": f"Bearer {ENGINEER}"}) as r:
                    assert r.status == 200, await r.text()
                    applied = (await r.json())["action"]
                assert (applied["user"], applied["role"], applied["register"]["kind"]) == (
                    "erin",
                    "engineer",
                    "tool_diameter_wear",
                )
                # the next parts are centred again: the detectors expected that step, the condition recovers to ok
                seen = len(running.alerts)
                for _ in range(12):
                    await feed.part(10.0 + rng.gauss(0, 0.0006))
                    if any(a["id"] == cid and a["state"] == "closed" for a in running.alerts[seen:]):
                        break
                await feed.part(10.0 + rng.gauss(0, 0.0006))
            finally:
                feed.close()
            after = [a for a in running.alerts[seen:] if a["feature"] == "hole1_dia"]
            assert [a["condition"] for a in after][-1] == "ok" and after[-1]["state"] == "closed"
            assert "recovering" in [a["condition"] for a in after] and {a["id"] for a in after} == {cid}  # no false drift
            await sub.wait_for(lambda: any(m.json()["state"] == "closed" for m in sub.on("/alerts/hole1_dia")), timeout_s=20)
            async with http.get(f"{api}/api/actions?condition={quote(cid, safe='')}") as r:
                listed = (await r.json())["actions"]
    finally:
        for k in _ENV:
            os.environ.pop(k, None)
    # MQTT: one message per state change of one condition, from the first signal to ok
    docs = [m.json() for m in sub.on("/alerts/hole1_dia")]
    assert {d["id"] for d in docs} == {cid} and docs[0]["state"] == "open"
    changes = [(d["condition"], d["state"]) for d in docs]
    assert changes[-1] == ("ok", "closed") and any(s == "acknowledged" for _, s in changes)
    assert all(a != b for a, b in itertools.pairwise(changes)), "a message per change, not per part"
    ranks = [d["evidence"]["condition"] for d in docs]
    assert "warning" in ranks or "critical" in ranks
    acked_doc = next(d for d in docs if d["state"] == "acknowledged")
    assert acked_doc["schema"] == "monitor.condition/1" and acked_doc["evidence"]["advice"]["action"]
    # the actions, newest first on the dashboard
    assert [(a["kind"], a["user"], a["comment"]) for a in listed] == [
        ("offset_applied", "erin", "as advised"),
        ("acknowledge", "otto", "T12 checked, will correct"),
    ]
    # the command line sees the same: the condition is ok, the actions are recorded with who did them
    cli = await asyncio.to_thread(_monitor, "alerts", "-c", str(site_file), "--json")
    rows = [json.loads(line) for line in cli.stdout.splitlines()]
    mine = next(r for r in rows if r["id"] == cid)
    assert (mine["condition"], mine["state"]) == ("ok", "closed")
    assert [r["id"] for r in rows if r["feature"] == "hole1_dia"] == [cid]
    acts = await asyncio.to_thread(_monitor, "actions", "-c", str(site_file), "--condition", cid, "--json")
    assert [json.loads(line)["kind"] for line in acts.stdout.splitlines()] == ["acknowledge", "offset_applied"]
    await wait_until(lambda: True)
