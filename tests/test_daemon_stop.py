"""A clean stop processes everything a source handed over, also when the source was still waiting
for room in the full queue: cancelling it then would drop observations its adapter already counts
as read (a server without history, an OPC UA subscription, cannot send them again). And what a
daemon keeps for a simulator's waits at a stop and start (what was read) only when built to."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.config import load_site
from monitor.daemon import Daemon, open_core
from monitor.errors import MonitorError
from monitor.store import SqliteStore
from tests.streams import batch, write_jsonl, write_site


async def test_a_stop_while_a_source_waits_for_queue_room_processes_its_whole_batch(tmp_path: Path) -> None:
    stream = write_jsonl(tmp_path / "m1.jsonl", batch(1000))  # far more than is read before the stop
    site = load_site(write_site(tmp_path, stream))
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
            status = await daemon.status()  # what an operator sees after the stop: nothing left waiting
        finally:
            gate.set()
            stop.set()
            if not runner.done():
                runner.cancel()
    (source,) = daemon.sources
    delivered = daemon.metrics.source(source.machine, source.key).delivered
    assert delivered > 5  # the source had handed over more than the queue holds
    assert daemon.processed == delivered
    assert (status["processed"], status["sources_waiting"], status["queue"]) == (delivered, 0, 0)
    with SqliteStore(site.store_path, read_only=True) as store:
        parts = store.parts(machine="m1")
    assert [p.part_number for p in parts] == list(range(1, len(parts) + 1))


async def test_what_was_read_is_kept_only_for_a_daemon_built_to_keep_it(tmp_path: Path) -> None:
    """A production daemon does not pay per observation for a simulator's wait: asking it what was
    read is an error that says how to build one that keeps it, not a silent 'nothing read'."""
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(1))))
    published = {("m1", "part.count"): datetime(2026, 3, 2, 6, 0, tzinfo=UTC)}
    async with open_core(site) as core:
        with pytest.raises(MonitorError, match="track_reads=True"):
            Daemon(core).unread(published)
        with pytest.raises(MonitorError, match="track_reads=True"):
            await Daemon(core).wait_read(published)
        assert Daemon(core, track_reads=True).unread(published) == {("m1", "part.count"): None}


async def test_the_daemons_blocking_calls_share_a_few_threads(tmp_path: Path) -> None:
    """A daemon runs its blocking calls (large MTConnect pages, lease renewals) on EXECUTOR_THREADS
    threads however many are asked for at once: each thread that parsed a large page keeps a few MB
    for its life, so a burst of them after a stall must not start more."""
    from monitor.daemon import EXECUTOR_THREADS, run_daemon

    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(1))))
    stop = asyncio.Event()
    threads: set[int] = set()
    lock = threading.Lock()
    busy = threading.Event()
    began = 0

    def blocking() -> None:
        nonlocal began
        with lock:
            threads.add(threading.get_ident())
            began += 1
            if began == EXECUTOR_THREADS:
                busy.set()  # every thread there may be is taken: the rest of the calls queue
        assert busy.wait(10)

    async def burst(daemon: Daemon) -> None:
        try:
            await asyncio.gather(*(asyncio.to_thread(blocking) for _ in range(4 * EXECUTOR_THREADS)))
        finally:
            stop.set()

    await asyncio.wait_for(run_daemon(site, stop=stop, on_start=burst), 60)
    assert began == 4 * EXECUTOR_THREADS and len(threads) == EXECUTOR_THREADS
