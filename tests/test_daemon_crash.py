"""A daemon killed with SIGKILL in the middle of a batch loses nothing its MTConnect agent still
holds: restarted, it resumes from the position stored with the last part and records every part
exactly once."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import yaml

from monitor.model import PartStatus
from monitor.sim import SimCell, load_scenario
from monitor.sim.cell import SimEvent
from monitor.sim.mtconnect_agent import SimAgentBinding
from monitor.sim.process import PROGRAMS_DIR
from monitor.store import SqliteStore

ROOT = Path(__file__).resolve().parents[1]


async def _start(site: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "run", "-c", str(site),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=site.parent,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _until(predicate: Callable[[], Awaitable[bool] | bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _value(predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)  # polling a condition of another process


async def _value(result: Awaitable[bool] | bool) -> bool:
    return await result if inspect.isawaitable(result) else result


def _parts(db: Path) -> int:
    if not db.exists():
        return 0
    with SqliteStore(db) as store:
        return store.part_count()


def _api_url(runtime: Path) -> str | None:
    return str(json.loads(runtime.read_text())["dashboard_url"]) if runtime.exists() else None


async def _connected(runtime: Path) -> bool:
    url = await asyncio.to_thread(_api_url, runtime)
    if url is None:
        return False
    async with aiohttp.ClientSession() as session, session.get(url + "api/status") as resp:
        status = await resp.json()
    return all(m.get("connection") == "connected" for m in status["machines"].values())


def _cut_inside_part_7(events: list[SimEvent]) -> int:
    """Where the events stop mid part 7 (its probing has started): the daemon dies inside a part."""
    sixth_end = next(e.time for e in events if e.signal == "part.count" and e.value == 6.0)
    return next(i for i, e in enumerate(events) if e.time > sixth_end and e.signal.startswith("probe.")) + 2


def _write_site(tmp_path: Path, name: str, machine: str, binding: SimAgentBinding) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "site": name, "programs": str(PROGRAMS_DIR), "dashboard": {"port": 0},
        "machines": [{"id": machine, "signals": binding.signal_map(machine), "tracking": {"grace_s": 2},
                      "source": {"type": "mtconnect", "url": binding.url, "device": machine, "interval_ms": 20}}],
    }))  # fmt: skip
    return site


def _parts_and_a_position(db: Path, machine: str, source: str, parts: int) -> Callable[[], bool]:
    """True once ``parts`` parts are stored and the source's position is saved."""

    def ready() -> bool:
        if _parts(db) < parts:
            return False
        with SqliteStore(db) as store:
            return store.load_position(machine, source) is not None

    return ready


async def test_sigkill_mid_batch_then_restart_records_every_part_once(tmp_path: Path) -> None:
    cell = SimCell(load_scenario("tool_wear"), seed=5, parts=12)
    (machine,) = cell.machines
    events = list(cell.events())
    cut = _cut_inside_part_7(events)
    db, runtime = tmp_path / "monitor.db", tmp_path / "monitor.db.daemon.json"
    async with SimAgentBinding([machine]) as binding:
        site = _write_site(tmp_path, "crash", machine.id, binding)
        daemon = await _start(site)
        try:
            await _until(lambda: _connected(runtime), "the daemon to connect")
            for event in events[:cut]:
                binding.publish(event)
            await _until(_parts_and_a_position(db, machine.id, f"mtconnect {binding.url}", 5), "parts and a saved position")
            daemon.send_signal(signal.SIGKILL)
            await daemon.wait()
            before = _parts(db)
            for event in events[cut:]:  # the machine keeps making parts while the monitor is down
                binding.publish(event)
            runtime.unlink(missing_ok=True)  # a killed daemon cannot clean up after itself
            daemon = await _start(site)
            await _until(lambda: _parts(db) >= 12, "all 12 parts after the restart")
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
                await asyncio.wait_for(daemon.wait(), 15)
    with SqliteStore(db) as store:
        parts = store.parts()
    assert before < 12
    assert [p.part_number for p in parts] == list(range(1, 13))
    assert [p.counter for p in parts] == list(range(1, 13))
    odd = [(p.part_number, p.status, p.notes) for p in parts if p.status is not PartStatus.COMPLETE]
    assert odd == []
    # the part that was open at the kill is read again from its start, not from where the part
    # before it was made final: its tools, spindle load and results are all there
    probed = set(parts[0].measurements)
    lacking = [p.part_number for p in parts if not p.tools or p.spindle.mean_load is None or set(p.measurements) != probed]
    assert probed and lacking == []


async def test_a_source_replaying_parts_already_stored_numbers_none_twice(tmp_path: Path) -> None:
    """The daemon stores a part and saves its source's position a moment later (at its next tick):
    killed in between, it resumes the agent from before parts it already stored. Here the saved
    position is set back to the start of the agent's buffer, the widest such window: the six stored
    parts are read again and must be recognised as stored (the tracker context saved with each
    part says up to when), so the parts after them keep the numbers that follow the counter."""
    cell = SimCell(load_scenario("tool_wear"), seed=3, parts=10)
    (machine,) = cell.machines
    events = list(cell.events())
    cut = _cut_inside_part_7(events)
    db, runtime = tmp_path / "monitor.db", tmp_path / "monitor.db.daemon.json"
    async with SimAgentBinding([machine]) as binding:
        source = f"mtconnect {binding.url}"
        site = _write_site(tmp_path, "replay", machine.id, binding)
        daemon = await _start(site)
        try:
            await _until(lambda: _connected(runtime), "the daemon to connect")
            for event in events[:cut]:
                binding.publish(event)
            await _until(_parts_and_a_position(db, machine.id, source, 6), "six parts and a saved position")
            daemon.send_signal(signal.SIGKILL)
            await daemon.wait()
            with SqliteStore(db) as store:
                saved = store.load_position(machine.id, source)
                assert saved is not None and store.part_count() == 6
                store.save_position(machine.id, source, {**saved, "next_sequence": 1})
            for event in events[cut:]:
                binding.publish(event)
            runtime.unlink(missing_ok=True)
            daemon = await _start(site)
            await _until(lambda: _parts(db) >= 10, "all 10 parts after the restart")
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
                await asyncio.wait_for(daemon.wait(), 15)
    with SqliteStore(db) as store:
        parts = store.parts()
    assert [(p.part_number, p.counter) for p in parts] == [(n, n) for n in range(1, 11)]
    assert [p.status for p in parts] == [PartStatus.COMPLETE] * 10, [p.notes for p in parts]
