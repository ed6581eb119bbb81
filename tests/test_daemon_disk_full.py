"""Disk full, on a real full filesystem (a small tmpfs filled with a ballast file), with the daemon
as a process reading a real MTConnect agent: the store says why once, parts wait in memory and are
stored when space comes back, a daemon killed meanwhile resumes its source from before the parts
that waited (nothing skipped, same numbers), and a restart on a full disk waits instead of
crashing, leaving no empty runtime file. Also: `monitor parts` on a read-only mount."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from monitor.config import Site, load_site
from monitor.errors import StoreError
from monitor.model import AlertKind, AlertState, Observation, PartStatus
from monitor.sim import SimCell, load_scenario
from monitor.sim.cell import SimEvent
from monitor.sim.mtconnect_agent import SimAgentBinding
from monitor.sim.process import PROGRAMS_DIR
from monitor.store import SqliteStore
from monitor.store.held import HeldWrites
from tests.daemons import running_daemon
from tests.requires import missing
from tests.streams import PROGRAM_YAML, batch, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
FS_BYTES = 8 << 20


class SmallDisk:
    """A tmpfs of FS_BYTES mounted for one test; ``fill()`` takes every free byte, ``free()`` gives them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ballast = path / "ballast"

    def fill(self) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (1 << 20, 1 << 12, 1):  # big pieces first, then the last pages and bytes
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        with pytest.raises(OSError) as info, open(self.path / "probe", "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        assert info.value.errno == errno.ENOSPC
        (self.path / "probe").unlink(missing_ok=True)

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def disk() -> Iterator[SmallDisk]:
    path = Path(tempfile.mkdtemp(prefix="monitor-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        path.rmdir()
        missing(f"cannot mount a small tmpfs to fill (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def _parts_of(events: list[SimEvent]) -> list[list[SimEvent]]:
    """The cell's events cut after each part counter change (one list per part, then the rest)."""
    out: list[list[SimEvent]] = [[]]
    for e in events:
        out[-1].append(e)
        if e.signal == "part.count" and e.value is not None:
            out.append([])
    return out


class Cell:
    """A simulated machine behind our MTConnect agent, and the daemon (a process) reading it."""

    def __init__(self, tmp: Path, disk: SmallDisk, binding: SimAgentBinding, machine: str) -> None:
        self.tmp, self.disk, self.binding, self.machine = tmp, disk, binding, machine
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self.site = tmp / "site.yaml"
        self.site.write_text(
            yaml.safe_dump(
                {
                    "site": "disk-full",
                    "programs": str(PROGRAMS_DIR),
                    "store": {"path": str(disk.path / "monitor.db")},
                    "dashboard": {"port": 0},
                    "machines": [
                        {
                            "id": machine,
                            "source": {"type": "mtconnect", "url": binding.url, "device": machine, "interval_ms": 20},
                            "signals": binding.signal_map(machine),
                            "tracking": {"grace_s": 0.5},
                        }
                    ],
                }
            ),
            encoding="utf-8",
        )

    @property
    def db(self) -> Path:
        return self.disk.path / "monitor.db"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "run", "-c", str(self.site), "--log-level", "info",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=self.tmp,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace"))

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def until(self, what: str, check: Any, limit_s: float = 60.0) -> Any:
        """Poll ``check()`` until it is truthy (the daemon is another process: nothing to await)."""
        try:
            return await asyncio.wait_for(self._poll(what, check), limit_s)
        except TimeoutError:
            raise AssertionError(f"no {what} within {limit_s} s; the daemon's log:\n{''.join(self.log)[-4000:]}") from None

    async def _poll(self, what: str, check: Any) -> Any:
        if True:
            while True:
                assert self.alive(), f"the daemon exited while waiting for {what}:\n{''.join(self.log)[-3000:]}"
                got = check()
                if asyncio.iscoroutine(got):
                    got = await got
                if got:
                    return got
                await asyncio.sleep(0.1)

    def stored(self) -> list[tuple[int, int | None, str]]:
        if not self.db.exists():
            return []
        with SqliteStore(self.db, read_only=True) as store:
            return [(p.part_number, p.counter, str(p.status)) for p in store.parts()]

    async def status(self) -> dict[str, Any]:
        body = json.loads((self.disk.path / "monitor.db.daemon.json").read_text(encoding="utf-8"))
        url = body["dashboard_url"].replace("0.0.0.0", "127.0.0.1")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.get(url + "api/status") as r:
            result: dict[str, Any] = await r.json()
            return result

    async def connected(self) -> bool:
        """The daemon reads the agent (what is published from now on is read as a stream, not
        collapsed into the agent's /current)."""
        runtime = self.disk.path / "monitor.db.daemon.json"
        if not runtime.exists():
            return False
        return bool((await self.status())["machines"][self.machine].get("connection") == "connected")

    async def api(self, path: str) -> Any:
        body = json.loads((self.disk.path / "monitor.db.daemon.json").read_text(encoding="utf-8"))
        url = body["dashboard_url"].replace("0.0.0.0", "127.0.0.1")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.get(url + path) as r:
            return await r.json()

    async def waiting_writes(self) -> int:
        return int((await self.status())["store"].get("waiting_writes", 0))

    def logged(self, text: str) -> int:
        return sum(text in line for line in self.log)


@contextlib.asynccontextmanager
async def cell(tmp: Path, disk: SmallDisk) -> AsyncIterator[tuple[Cell, list[list[SimEvent]]]]:
    sim = SimCell(load_scenario("tool_wear"), seed=3, parts=12)
    (machine,) = sim.machines
    parts = _parts_of(list(sim.events(include_spindle_samples=False)))
    async with SimAgentBinding([machine]) as binding:
        c = Cell(tmp, disk, binding, machine.id)
        try:
            yield c, parts
        finally:
            if c.alive():
                await c.stop(signal.SIGKILL)


def publish(c: Cell, parts: list[list[SimEvent]], numbers: range) -> None:
    """Make parts ``numbers`` (1-based) on the simulated machine, and what leads up to the next."""
    for n in numbers:
        for event in parts[n - 1]:
            c.binding.publish(event)


def numbers(stored: list[tuple[int, int | None, str]]) -> list[int]:
    return [n for n, _, _ in stored]


async def test_disk_full_parts_wait_are_stored_later_and_a_kill_meanwhile_skips_nothing(tmp_path: Path, disk: SmallDisk) -> None:
    async with cell(tmp_path, disk) as (c, parts):
        await c.start()
        await c.until("connected", c.connected)
        publish(c, parts, range(1, 4))
        await c.until("parts 1-3", lambda: len(c.stored()) >= 2)  # the 3rd waits for the 4th counter change

        # A: the disk fills; parts wait in memory; space comes back; they are stored, in order
        disk.fill()
        publish(c, parts, range(4, 6))
        assert await c.until("parts waiting", c.waiting_writes)
        status = await c.status()
        assert not status["store"]["writable"] and "database or disk is full" in status["store"]["error"]
        open_alerts = (await c.api("api/alerts?state=active"))["alerts"]
        assert open_alerts[0]["kind"] == "store_unwritable" and "database or disk is full" in open_alerts[0]["message"]
        await c.until("the cause logged", lambda: c.logged("ERROR monitor.store.held: store cannot write"))
        assert c.logged("ERROR monitor.store.held: store cannot write") == 1, "".join(c.log)  # said why, once
        assert c.logged("database or disk is full") >= 1 and c.logged("cannot rollback") == 0
        disk.free()
        await c.until("parts 1-4 stored", lambda: len(c.stored()) >= 4)
        assert numbers(c.stored())[:4] == [1, 2, 3, 4]
        assert (await c.status())["store"]["writable"]

        # B: full again; parts wait; the daemon is killed (nothing waits that long in a real crash)
        disk.fill()
        publish(c, parts, range(6, 8))
        await c.until("parts waiting again", c.waiting_writes)
        before_kill = numbers(c.stored())
        assert await c.stop(signal.SIGKILL) == -signal.SIGKILL
        # restarted on the still-full disk: the store opens (its log files exist), the source resumes
        # from the position saved with the last stored part, the parts are made again and wait again
        await c.start()
        await c.until("parts waiting after restart", lambda: c.logged("ERROR monitor.store.held: store cannot write"))
        disk.free()
        await c.until("parts 1-6 stored", lambda: len(c.stored()) >= 6)
        publish(c, parts, range(8, 9))
        await c.until("part 7 stored", lambda: len(c.stored()) >= 7)
        assert await c.stop() == 0
        log = "".join(c.log)
    assert "Traceback" not in log, log
    stored = c.stored()
    assert before_kill == [1, 2, 3, 4, 5][: len(before_kill)]
    assert numbers(stored) == list(range(1, len(stored) + 1)) and len(stored) >= 7, stored  # none skipped or twice
    assert [counter for _, counter, _ in stored] == list(range(1, len(stored) + 1))  # numbers follow the counter
    assert all(status == str(PartStatus.COMPLETE) for _, _, status in stored), stored
    with SqliteStore(c.db, read_only=True) as store:
        episodes = [a for a in store.alerts() if a.kind is AlertKind.STORE_UNWRITABLE]
    assert episodes and all(a.state is AlertState.CLOSED for a in episodes)  # raised, kept, closed


async def test_restart_on_a_full_disk_waits_for_space_without_crashing_or_an_empty_runtime_file(
    tmp_path: Path, disk: SmallDisk
) -> None:
    async with cell(tmp_path, disk) as (c, parts):
        await c.start()
        await c.until("connected", c.connected)
        publish(c, parts, range(1, 3))
        await c.until("part 1", lambda: len(c.stored()) >= 1)
        assert await c.stop() == 0  # a clean stop removes SQLite's log files: reopening needs space
        runtime = disk.path / "monitor.db.daemon.json"
        assert not runtime.exists()
        disk.fill()
        publish(c, parts, range(3, 5))  # made while the monitor is down; the agent keeps them
        await c.start()
        await c.until("the daemon says why it waits", lambda: c.logged("waiting for the store"))
        assert c.alive() and not runtime.exists()  # neither crashed nor left an empty runtime file
        disk.free()
        await c.until("parts made while down are stored", lambda: len(c.stored()) >= 3)
        assert runtime.exists() and json.loads(runtime.read_text(encoding="utf-8"))["pid"] == c.proc.pid  # type: ignore[union-attr]
        assert await c.stop() == 0
        log = "".join(c.log)
    assert "Traceback" not in log, log
    assert numbers(c.stored()) == list(range(1, len(c.stored()) + 1))


def test_parts_on_a_read_only_mount(tmp_path: Path, disk: SmallDisk) -> None:
    """`monitor parts` reads a store on a read-only mount (a copied-out USB stick, a backup share)."""
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(3))
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "o1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "site": "ro",
                "programs": "programs",
                "store": {"path": str(disk.path / "monitor.db")},
                "dashboard": {"enabled": False},
                "machines": [{"id": "m1", "source": {"type": "replay", "path": str(replay)}, "tracking": {"grace_s": 1.0}}],
            }
        ),
        encoding="utf-8",
    )
    asyncio.run(_run_until_parts(load_site(site), 3))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    disk.remount("ro")
    try:
        command = [sys.executable, "-m", "monitor", "parts", "-c", str(site), "--json"]
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    finally:
        disk.remount("rw")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [r["part"] for r in rows] == [1, 2, 3]


async def _run_until_parts(site: Site, parts: int) -> None:
    async with running_daemon(site) as running:
        await running.parts(parts)


def test_store_on_a_full_disk_names_the_cause_and_the_same_write_succeeds_later(disk: SmallDisk) -> None:
    with SqliteStore(disk.path / "monitor.db") as store:
        store.save_position("m1", "src", {"n": 0})
        disk.fill()
        with pytest.raises(StoreError) as info:
            store.save_position("m1", "src", {"n": "x" * 100_000})
        assert info.value.retryable
        message = str(info.value)
        assert "database or disk is full" in message and "cannot rollback" not in message
        assert f"free space on the disk that holds {disk.path}" in message
        assert store.load_position("m1", "src") == {"n": 0}  # reads still work, nothing half-written
        disk.free()
        store.save_position("m1", "src", {"n": "x" * 100_000})
        assert store.load_position("m1", "src") == {"n": "x" * 100_000}


def test_held_writes_keep_order_bound_memory_and_report_resume_points_once_stored(disk: SmallDisk) -> None:
    """HeldWrites over a real store on a real full disk: writes wait in order, `full` trips at the
    byte bound, and once space is back they land in order with the resume points of their parts."""
    with SqliteStore(disk.path / "monitor.db") as store:
        held = HeldWrites(store.record_alerts, limit_bytes=300_000)
        disk.fill()

        def write(i: int) -> None:
            store.save_position("m1", f"src{i}", {"i": i, "pad": "x" * 50_000})

        opened = held.write("write 0", lambda: write(0), size=100_000)
        assert [a.kind for a in opened] == [AlertKind.STORE_UNWRITABLE] and opened[0].state is AlertState.OPEN
        mark = Observation("m1", "part.count", datetime.now(UTC), 1.0)
        held.resume_after(mark)
        for i in (1, 2):
            assert held.write(f"write {i}", lambda i=i: write(i), size=100_000) == []  # type: ignore[misc]
        assert len(held) == 3 and held.full  # 300,000 bytes held: take nothing more
        assert held.retry(force=True) == [] and len(held) == 3  # still full: nothing lost, nothing reordered
        assert held.resume_points() == {}
        disk.free()
        closed = held.retry(force=True)
        assert not held and not held.full and held.written_late == 3
        assert [a.state for a in closed] == [AlertState.CLOSED]
        assert held.resume_points() == {"m1": mark}
        assert held.resume_points() == {}  # reported once
        assert [store.load_position("m1", f"src{i}")["i"] for i in range(3)] == [0, 1, 2]
        stored = [a for a in store.alerts() if a.kind is AlertKind.STORE_UNWRITABLE]
        assert [a.state for a in stored] == [AlertState.CLOSED]
