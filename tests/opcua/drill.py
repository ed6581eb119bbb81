"""Fault drills with the daemon as a process against our simulated OPC UA CNC.

Shared by the drill tests (short) and ``bench/opcua_drills.py`` (the full drills): the simulated
cell is served by our asyncua simulator in the calling process, behind a :class:`FaultProxy`; the
daemon is ``python -m monitor run`` on a generated site file. :func:`account` classifies every
counter value the controller moved through from what the daemon stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from monitor.sim.process import PROGRAMS_DIR

__all__ = ["DaemonProcess", "account", "site_document", "stored"]

ROOT = Path(__file__).resolve().parents[2]

_DIAGNOSE = """
import logging, monitor.logs, monitor.cli.core
def setup(*args, **kw):
    monitor.logs.setup_logging(*args, **kw)
    for name in ("asyncua.client.client", "asyncua.common.subscription"):
        logging.getLogger(name).setLevel(logging.WARNING)
monitor.cli.core.setup_logging = setup
from monitor.cli import main
main()
"""
"""The daemon with asyncua's own warnings shown (its subscription watchdog, for instance)."""


def site_document(endpoint: str, store: Path, speed: float, signals: dict[str, str], **source: Any) -> dict[str, Any]:
    """What `monitor demo` gives the daemon for an OPC UA machine (re-ordering window of half a
    second of wall time at ``speed``), pointed at ``endpoint``."""
    return {
        "site": "drill",
        "store": {"path": str(store)},
        "programs": str(PROGRAMS_DIR),
        "log_level": "info",
        "dashboard": {"enabled": True, "port": 0},
        "machines": [
            {
                "id": "vmc-01",
                "source": {
                    "type": "opcua",
                    "endpoint": endpoint,
                    "publishing_interval_ms": 100,
                    "sampling_interval_ms": 0,
                    "queue_size": 1000,
                    **source,
                },
                "signals": signals,
                "tracking": {"grace_s": 10.0, "max_skew_s": max(5.0, 0.5 * speed)},
            }
        ],
    }


class DaemonProcess:
    """``python -m monitor run -c SITE``, its output appended to ``log``."""

    def __init__(self, site: Path, log: Path, *, diagnose: bool = False) -> None:
        self.site = site
        self.log = log
        self.diagnose = diagnose
        self.proc: asyncio.subprocess.Process | None = None
        self.runtime = site.parent / "monitor.db.daemon.json"

    async def start(self) -> None:
        self.runtime.unlink(missing_ok=True)  # a killed daemon leaves it behind
        entry = ["-c", _DIAGNOSE, "run"] if self.diagnose else ["-m", "monitor", "run"]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *entry, "-c", str(self.site),
                env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=self.site.parent, stdout=log, stderr=log,
            )  # fmt: skip

    async def connected(self, timeout_s: float = 60) -> None:
        """Wait until the daemon's API says every machine is connected (polling another process)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.returncode is None, self.log.read_text()[-2000:]
                if self.runtime.exists():
                    url = json.loads(self.runtime.read_text())["dashboard_url"]
                    with contextlib.suppress(aiohttp.ClientError, ValueError):
                        async with session.get(url + "api/status") as resp:
                            status = await resp.json()
                        if all(m.get("connection") == "connected" for m in status["machines"].values()):
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"the daemon did not connect in {timeout_s} s")

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            await asyncio.wait_for(self.proc.wait(), 60)


def stored(db: Path, machine: str = "vmc-01") -> list[dict[str, Any]]:
    """Every stored part record of ``machine``, in the order they ended, as the store keeps them."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT data FROM parts WHERE machine = ? ORDER BY end, rowid", (machine,)).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


def account(records: list[dict[str, Any]], counters: list[int]) -> dict[str, Any]:
    """Classify every counter value the controller moved through: how it is stored, or missing."""
    by_counter: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("counter") is not None and r["status"] != "aborted":  # an abandoned attempt holds no value
            by_counter.setdefault(int(r["counter"]), []).append(r)
    kinds: Counter[str] = Counter()
    missing: list[int] = []
    for c in counters:
        recs = by_counter.get(c, [])
        if not recs:
            kinds["missing"] += 1
            missing.append(c)
            continue
        if len(recs) > 1:
            kinds["duplicated"] += 1
        kinds[str(recs[0]["status"])] += 1
    made = [r for r in records if r.get("counter") is not None and r["status"] != "aborted"]
    offsets = sorted({int(r["part_number"]) - int(r["counter"]) for r in made})
    return {
        "counter_values": len(counters),
        "accounted": dict(kinds),
        "missing_counters": _ranges(missing),
        "numbers_follow_counter": len(offsets) <= 1,
        "number_minus_counter": offsets,
        "not_complete": [
            {"counter": r.get("counter"), "part": r["part_number"], "status": r["status"], "notes": r.get("notes", [])}
            for r in records
            if r["status"] != "complete"
        ],
    }


def _ranges(values: list[int]) -> list[str]:
    out: list[list[int]] = []
    for v in values:
        if out and out[-1][-1] == v - 1:
            out[-1].append(v)
        else:
            out.append([v])
    return [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in out]
