"""A clean stop processes everything a source handed over, also when the source was still waiting
for room in the full queue: cancelling it then would drop observations its adapter already counts
as read (a server without history, an OPC UA subscription, cannot send them again)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import yaml

from monitor.config import load_site
from monitor.daemon import Daemon, open_core
from monitor.store import SqliteStore
from tests.streams import PROGRAM_YAML, batch, write_jsonl


async def test_a_stop_while_a_source_waits_for_queue_room_processes_its_whole_batch(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "o1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    stream = write_jsonl(tmp_path / "m1.jsonl", batch(1000))  # far more than is read before the stop
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        yaml.safe_dump(
            {
                "site": "stop",
                "programs": "programs",
                "dashboard": {"enabled": False},
                "machines": [{"id": "m1", "source": {"type": "replay", "path": str(stream)}}],
            }
        ),
        encoding="utf-8",
    )
    site = load_site(site_file)
    gate = threading.Event()
    async with open_core(site) as core:
        # a tiny queue and no grace for a source that is busy at the stop: without the rule under
        # test, the source still moving its batch into the queue is cancelled with it
        daemon = Daemon(core, queue_size=5, batch_size=5, drain_timeout_s=0.0)
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.started.wait(), 30)
            # hold the store's thread: the processor waits behind it, the queue fills, the source waits
            held = asyncio.ensure_future(core.read(lambda _store: gate.wait(60)))
            await asyncio.wait_for(daemon._queue.wait_pressed(), 30)
            assert daemon._handing_over == {(source.machine, source.key) for source in daemon.sources}
            stop.set()
            gate.set()
            await asyncio.wait_for(runner, 30)
            await held
        finally:
            gate.set()
            stop.set()
            if not runner.done():
                runner.cancel()
    (source,) = daemon.sources
    delivered = daemon.metrics.source(source.machine, source.key).delivered
    assert delivered > 5  # the source had handed over more than the queue holds
    assert daemon.processed == delivered
    with SqliteStore(site.store_path, read_only=True) as store:
        parts = store.parts(machine="m1")
    assert [p.part_number for p in parts] == list(range(1, len(parts) + 1))
