"""Two daemons, one cell, one PostgreSQL store: the owner is SIGKILLed mid-batch, the standby takes
the machines over and resumes from the stored positions. Every part is stored exactly once and the
alerts are those of a run nobody interrupted. Real processes, a real server, a real MTConnect agent.

The takeover time is printed (and measured by bench/takeover.py), never asserted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from monitor.config import load_site
from monitor.daemon import EXIT_LEASE_LOST
from monitor.model import Alert, PartStatus
from monitor.sim import SimCell, SimEvent, load_scenario
from monitor.sim.mtconnect_agent import SimAgentBinding
from monitor.sim.process import PROGRAMS_DIR
from monitor.store.lease import lease_holders
from monitor.store.postgres import PostgresStore
from tests.daemons import running_daemon
from tests.servers.postgres import USER, Cluster
from tests.servers.tcpproxy import running_proxy

ROOT = Path(__file__).resolve().parents[1]
PARTS = 12
LEASE_S = 8.0


def _site(folder: Path, url: str, binding: SimAgentBinding, machine: str, *, lease_s: float = LEASE_S) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    site = folder / "site.yaml"
    site.write_text(yaml.safe_dump({
        "site": "cell-1", "programs": str(PROGRAMS_DIR), "dashboard": {"port": 0},
        "store": {"url": url, "lease_s": lease_s},
        "machines": [{"id": machine, "signals": binding.signal_map(machine), "tracking": {"grace_s": 2},
                      "source": {"type": "mtconnect", "url": binding.url, "device": machine, "interval_ms": 20}}],
    }))  # fmt: skip
    return site


async def _start(site: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "run", "-c", str(site), "--log-level", "info",
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=site.parent,  # PGPASSWORD from the pg_url fixture
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


class Daemon:
    """A ``monitor run`` process whose log is read all along (a full pipe would stall it)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, site: Path) -> Daemon:
        return cls(await _start(site))

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode())
                self._changed.notify_all()
        async with self._changed:
            self.lines.append("")  # end of the log
            self._changed.notify_all()

    async def said(self, needle: str, *, after: int = 0, timeout_s: float = 60) -> int:
        """Wait until a log line (from line ``after`` on) holds ``needle``; its index."""

        def found() -> int | None:
            for i in range(after, len(self.lines)):
                if needle in self.lines[i]:
                    return i
            assert not self.lines or self.lines[-1] != "", f"the daemon ended before saying {needle!r}: {self.log()}"
            return None

        async with asyncio.timeout(timeout_s), self._changed:
            while (index := found()) is None:
                await self._changed.wait()
            return index

    def log(self) -> str:
        return "".join(self.lines[-30:])

    async def stop(self, sig: int) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await self._reader
        return code


async def _until(predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # polling a condition of other processes


def _count(url: str) -> int:
    with PostgresStore(url, read_only=True) as store:
        return store.part_count()


def _alerts(url: str) -> tuple[list[Alert], list[Alert]]:
    with PostgresStore(url, read_only=True) as store:
        return store.alerts(), [a for _, a in store.alert_events(limit=100_000)]


async def _uninterrupted(folder: Path, url: str, binding: SimAgentBinding, machine: str, events: list[SimEvent]) -> None:
    site = load_site(_site(folder, url, binding, machine))
    async with running_daemon(site, stop_timeout_s=20) as running:
        await running.until(lambda e: e.kind == "machine" and e.data["connection"] == "connected", timeout_s=60)
        for event in events:
            binding.publish(event)
        await running.parts(PARTS, timeout_s=90)


@dataclass
class KillDrill:
    """What one SIGKILL drill saw: takeover time, parts stored (numbers in order), lease generations."""

    takeover_s: float
    part_numbers: list[int]
    complete: bool
    generations: tuple[int, int]
    released: bool


async def kill_drill(
    folder: Path, url: str, *, lease_s: float = LEASE_S, parts: int = PARTS, seed: int = 5, sig: int = signal.SIGKILL
) -> KillDrill:
    """Two daemon processes on ``url`` with one simulated MTConnect machine; the owner is SIGKILLed in
    the middle of a part (probing started) once it stored half the parts; the machine goes on; the
    standby must take over and store the rest. Used by this test and by bench/takeover.py (which
    also stops the owner cleanly, ``sig`` SIGTERM, as its baseline)."""
    cell = SimCell(load_scenario("tool_wear"), seed=seed, parts=parts)
    (machine,) = cell.machines
    events = list(cell.events())
    half = parts // 2
    half_end = next(e.time for e in events if e.signal == "part.count" and e.value == float(half))
    cut = next(i for i, e in enumerate(events) if e.time > half_end and e.signal.startswith("probe.")) + 2
    async with SimAgentBinding([machine]) as binding:
        site = _site(folder, url, binding, machine.id, lease_s=lease_s)
        owner = await Daemon.start(site)
        standby: Daemon | None = None
        try:
            await owner.said("holding the leases")
            standby = await Daemon.start(site)
            await standby.said("standby:")
            await owner.said("connected")
            for event in events[:cut]:
                binding.publish(event)

            def parts_and_a_position() -> bool:
                with PostgresStore(url, read_only=True) as store:
                    return (
                        store.part_count() >= half - 1 and store.load_position(machine.id, f"mtconnect {binding.url}") is not None
                    )

            await _until(lambda: asyncio.to_thread(parts_and_a_position), "parts and a position from the owner")
            [held] = await asyncio.to_thread(lease_holders, url)
            killed = time.monotonic()
            assert await owner.stop(sig) == (-signal.SIGKILL if sig == signal.SIGKILL else 0), owner.log()
            for event in events[cut:]:  # the machine goes on making parts while the cell changes hands
                binding.publish(event)

            async def taken_over() -> bool:
                holders = await asyncio.to_thread(lease_holders, url)
                return holders[0].owner != held.owner and holders[0].live

            await _until(taken_over, "the standby to take the machine")
            takeover_s = time.monotonic() - killed
            await standby.said("holding the leases")

            async def all_parts() -> bool:
                return await asyncio.to_thread(_count, url) >= parts

            try:
                await _until(all_parts, f"all {parts} parts after the takeover")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the standby's log:\n{standby.log()}") from None
            assert await standby.stop(signal.SIGTERM) == 0, standby.log()
            [after] = await asyncio.to_thread(lease_holders, url)
        finally:
            for daemon in (owner, standby):
                if daemon is not None and daemon.proc.returncode is None:
                    await daemon.stop(signal.SIGKILL)
    with PostgresStore(url, read_only=True) as store:
        stored = store.parts()
    return KillDrill(
        takeover_s,
        [p.part_number for p in stored],
        all(p.status is PartStatus.COMPLETE for p in stored),
        (held.generation, after.generation),
        not after.live,
    )


async def test_sigkill_the_owner_and_the_standby_takes_over_without_losing_a_part(
    tmp_path: Path, pg_url: str, pg_cluster: Cluster
) -> None:
    drill = await kill_drill(tmp_path / "cell", pg_url)
    print(f"takeover {drill.takeover_s:.2f} s after SIGKILL (lease {LEASE_S} s)")
    assert drill.part_numbers == list(range(1, PARTS + 1))  # none lost, none twice
    assert drill.complete
    assert drill.generations[1] == drill.generations[0] + 1 and drill.released  # one takeover; released at the clean stop
    reference = pg_cluster.new_database("ref")
    events = list(SimCell(load_scenario("tool_wear"), seed=5, parts=PARTS).events())
    (machine,) = SimCell(load_scenario("tool_wear"), seed=5, parts=PARTS).machines
    async with SimAgentBinding([machine]) as binding:
        await _uninterrupted(tmp_path / "reference", reference, binding, machine.id, events)
    alerts, history = _alerts(pg_url)
    expected, expected_history = _alerts(reference)
    assert alerts, "the scenario raises alerts: the comparison below must compare something"
    assert _comparable(alerts) == _comparable(expected)
    assert _comparable(history) == _comparable(expected_history)


def _comparable(alerts: list[Alert]) -> list[tuple[Any, ...]]:
    return [(a.id, a.kind, a.severity, a.state, a.part_number, a.time, a.message) for a in alerts]


async def test_a_network_cut_stops_the_owner_and_the_standby_takes_over(tmp_path: Path, pg_url: str, pg_cluster: Cluster) -> None:
    """The owner reaches the database through a proxy that then stops forwarding (the standby has its
    own path): the owner cannot renew, stops writing and exits; the standby takes over once the lease
    expired by the server's clock; every part is stored once, no alert change twice."""
    cell = SimCell(load_scenario("tool_wear"), seed=5, parts=PARTS)
    (machine,) = cell.machines
    events = list(cell.events())
    fourth_end = next(e.time for e in events if e.signal == "part.count" and e.value == 4.0)
    cut = next(i for i, e in enumerate(events) if e.time > fourth_end and e.signal.startswith("probe.")) + 2
    database = urlsplit(pg_url).path.lstrip("/")
    async with SimAgentBinding([machine]) as binding, running_proxy(str(pg_cluster.socket_dir / ".s.PGSQL.5432")) as proxy:
        owner = await Daemon.start(
            _site(tmp_path / "owner", f"postgresql://{USER}@127.0.0.1:{proxy.port}/{database}", binding, machine.id)
        )
        standby: Daemon | None = None
        try:
            await owner.said("holding the leases")
            standby = await Daemon.start(_site(tmp_path / "standby", pg_url, binding, machine.id))
            await standby.said("standby:")
            await owner.said("connected")
            for event in events[:cut]:
                binding.publish(event)

            def three_parts_and_a_position() -> bool:
                with PostgresStore(pg_url, read_only=True) as store:
                    return store.part_count() >= 3 and store.load_position(machine.id, f"mtconnect {binding.url}") is not None

            await _until(lambda: asyncio.to_thread(three_parts_and_a_position), "three parts and a position from the owner")
            [held] = await asyncio.to_thread(lease_holders, pg_url)
            proxy.cut()
            for event in events[cut:]:
                binding.publish(event)
            await owner.said("lost the leases", timeout_s=60)
            code = await owner.stop(signal.SIGTERM)  # it is ending by itself: this only waits for it
            assert code in (1, EXIT_LEASE_LOST), owner.log()
            await standby.said("holding the leases", timeout_s=60)

            async def all_parts() -> bool:
                return await asyncio.to_thread(_count, pg_url) >= PARTS

            await _until(all_parts, f"all {PARTS} parts after the takeover")
            assert await standby.stop(signal.SIGTERM) == 0, standby.log()
            [after] = await asyncio.to_thread(lease_holders, pg_url)
        finally:
            for daemon in (owner, standby):
                if daemon is not None and daemon.proc.returncode is None:
                    await daemon.stop(signal.SIGKILL)
    assert after.generation == held.generation + 1  # one takeover, by the standby
    with PostgresStore(pg_url, read_only=True) as store:
        parts = store.parts()
        history = [(a.id, a.state, a.severity, a.time) for _, a in store.alert_events(limit=100_000)]
    assert [p.part_number for p in parts] == list(range(1, PARTS + 1))
    assert all(p.status is PartStatus.COMPLETE for p in parts), [(p.part_number, p.notes) for p in parts]
    assert len(history) == len(set(history))  # no alert change written twice
