"""RunningSink, the wrapper every sink runs in: batching, retries, spool, set-aside, counters.

The subject is the wrapper, so the sink under it is a small in-test implementation that records
what it was given and fails on command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import monitor.sinks.base as base_module
import monitor.sinks.spool as spool_module
from monitor.errors import SinkError
from monitor.model import Observation
from monitor.retry import Backoff
from monitor.sinks.base import RetryAfterError, RunningSink, SinkEvent, SinkState
from monitor.sinks.spool import REJECTED_FILE, Spool

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
FAST = Backoff(initial_s=0.01, max_s=0.05)


def obs(i: int) -> Observation:
    return Observation("vmc-01", "spindle.load", T0 + timedelta(milliseconds=i), float(i))


class RecordingSink:
    """Writes into a list; ``up`` False makes writes fail retryably; ``refuse`` values fail for good."""

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.up = True
        self.batches: list[list[SinkEvent]] = []
        self.attempts: list[float] = []
        self.refuse: set[float] = set()
        self.error: Callable[[], SinkError] = lambda: SinkError("connection refused", retryable=True)
        self.stall: asyncio.Event | None = None
        self.closed = False

    async def write(self, batch: Sequence[SinkEvent]) -> None:
        self.attempts.append(time.monotonic())
        if self.stall is not None:
            await self.stall.wait()
        if not self.up:
            raise self.error()
        values = {e.value for e in batch if isinstance(e, Observation)}
        if values & self.refuse:
            raise SinkError("HTTP 400: unable to parse 'spindle.load value=x'", retryable=False)
        self.batches.append(list(batch))

    async def aclose(self) -> None:
        self.closed = True

    @property
    def values(self) -> list[float]:
        return [float(e.value) for b in self.batches for e in b if isinstance(e, Observation) and e.value is not None]


async def until(cond: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll a condition (not a sleep to synchronise: it returns as soon as the condition holds)."""
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def segment_files(folder: Path) -> list[Path]:
    return list(folder.glob("seg-*"))


def rejected_lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / REJECTED_FILE).read_text().splitlines()]


def test_public_names_are_exported() -> None:
    for module in (base_module, spool_module):
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        }
        assert public <= set(module.__all__), public - set(module.__all__)


async def test_batches_by_size_then_by_flush_interval() -> None:
    sink = RecordingSink()
    running = RunningSink(sink, batch_size=50, flush_interval_s=0.2, backoff=FAST)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        started = time.monotonic()
        for i in range(120):
            running.offer(obs(i))
        await until(lambda: len(sink.values) == 120)
        elapsed = time.monotonic() - started
        task.cancel()
    await running.aclose()
    assert [len(b) for b in sink.batches] == [50, 50, 20]
    assert sink.values == [float(i) for i in range(120)]
    assert elapsed >= 0.15, "the partial batch waited for the flush interval"
    assert running.status()["written"] == 120
    assert running.state is SinkState.CLOSED and sink.closed


async def test_retryable_failures_are_retried_in_order_without_loss(tmp_path: Path) -> None:
    sink = RecordingSink()
    sink.up = False
    running = RunningSink(sink, batch_size=10, flush_interval_s=0.02, backoff=FAST, spool_dir=tmp_path, rng=random.Random(7))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        for i in range(35):
            running.offer(obs(i))
        await until(lambda: running.retries >= 4)
        status = running.status()
        assert status["state"] == "down"
        assert status["last_error"] == "connection refused"
        assert status["backlog_disk"] > 0, "a failing sink's events go to disk"
        for i in range(35, 60):
            running.offer(obs(i))
        sink.up = True
        await until(lambda: len(sink.values) == 60)
        task.cancel()
    await running.aclose()
    assert sink.values == [float(i) for i in range(60)], "exactly once, in order"
    assert running.status()["backlog_disk"] == 0
    assert not segment_files(tmp_path), "segments are deleted once written"


async def test_retry_after_is_honoured() -> None:
    sink = RecordingSink()
    sink.up = False
    sink.error = lambda: RetryAfterError("HTTP 429: slow down", retry_after=0.3)
    running = RunningSink(sink, batch_size=1, flush_interval_s=0.01, backoff=FAST)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        running.offer(obs(0))
        await until(lambda: len(sink.attempts) >= 3)
        sink.up = True
        await until(lambda: len(sink.values) == 1)
        task.cancel()
    await running.aclose()
    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)]
    assert all(g >= 0.29 for g in gaps), gaps  # the backoff alone would have waited <= 0.05 s


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(initial_s=0.5, max_s=4.0)
    rng = random.Random(3)
    delays = [b.delay(n, rng) for n in range(10)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[5:]) <= 4.0 and min(delays[5:]) >= 2.0
    assert len(set(delays[5:])) > 1, "jitter spreads retries of many daemons"
    assert b.delay(0, rng, retry_after=10_000) == b.max_retry_after_s


async def test_refused_batch_is_set_aside_and_never_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = RecordingSink()
    sink.refuse = {13.0}
    running = RunningSink(sink, batch_size=5, flush_interval_s=0.01, backoff=FAST, spool_dir=tmp_path)
    with caplog.at_level(logging.ERROR, logger="monitor.sinks.base"):
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(running.run())
            for i in range(20):
                running.offer(obs(i))
            await until(lambda: running.written + running.set_aside == 20)
            task.cancel()
    await running.aclose()
    assert sink.values == [float(i) for i in range(20) if not 10 <= i < 15]
    assert len(sink.attempts) == 4, "the refused batch was tried once"
    rejected = rejected_lines(tmp_path)
    assert [r["event"]["value"] for r in rejected] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert "unable to parse" in rejected[0]["reason"]
    assert running.status()["set_aside"] == 5
    assert "unable to parse" in caplog.text, "the server's message is logged"


async def test_restart_during_outage_replays_spool_first(tmp_path: Path) -> None:
    down = RecordingSink()
    down.up = False
    first = RunningSink(down, batch_size=8, flush_interval_s=0.01, backoff=FAST, spool_dir=tmp_path)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(first.run())
        for i in range(30):
            first.offer(obs(i))
        await until(lambda: first.retries >= 2)
        for i in range(30, 45):
            first.offer(obs(i))  # some still in memory when the daemon stops
        task.cancel()
    await first.aclose()
    assert first.status()["dropped"] == 0
    assert Spool(tmp_path).pending_events == 45

    up = RecordingSink()
    second = RunningSink(up, batch_size=8, flush_interval_s=0.01, backoff=FAST, spool_dir=tmp_path)
    for i in range(45, 50):
        second.offer(obs(i))  # new events offered before run() starts still come after the spool
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(second.run())
        await until(lambda: len(up.values) == 50)
        task.cancel()
    await second.aclose()
    assert up.values == [float(i) for i in range(50)]
    assert Spool(tmp_path).pending_events == 0


async def test_memory_is_bounded_without_spool() -> None:
    sink = RecordingSink()
    sink.up = False
    running = RunningSink(sink, queue_size=20, batch_size=5, flush_interval_s=0.01, backoff=FAST, close_timeout_s=0.1)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        for i in range(100):
            running.offer(obs(i))
        status = running.status()
        task.cancel()
    await running.aclose()
    assert status["backlog_memory"] <= 20
    assert status["dropped"] == 80
    final = running.status()
    assert final["dropped"] == 100 and final["written"] == 0, "nothing silently vanished"


async def test_spool_takes_overflow_while_the_sink_is_slow(tmp_path: Path) -> None:
    sink = RecordingSink()
    sink.stall = asyncio.Event()
    running = RunningSink(sink, queue_size=40, batch_size=10, flush_interval_s=0.01, backoff=FAST, spool_dir=tmp_path)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        for chunk in range(20):
            for i in range(chunk * 15, chunk * 15 + 15):
                running.offer(obs(i))
            await until(lambda: len(running._memory) <= 25)  # room for 15 more
        assert running.status()["backlog_disk"] > 0
        sink.stall.set()
        await until(lambda: len(sink.values) == 300)
        task.cancel()
    await running.aclose()
    assert running.dropped == 0
    assert sink.values == [float(i) for i in range(300)]


async def test_close_writes_memory_within_bound_and_spools_a_stalled_rest(tmp_path: Path) -> None:
    sink = RecordingSink()
    running = RunningSink(sink, batch_size=10, flush_interval_s=10, backoff=FAST, spool_dir=tmp_path)
    for i in range(25):
        running.offer(obs(i))
    await running.aclose()  # never ran: close writes what it holds
    assert sink.values == [float(i) for i in range(25)]

    stalled = RecordingSink()
    stalled.stall = asyncio.Event()  # never set: the server accepts the connection and hangs
    running = RunningSink(stalled, batch_size=10, flush_interval_s=10, spool_dir=tmp_path, close_timeout_s=0.2)
    for i in range(25):
        running.offer(obs(i))
    started = time.monotonic()
    await running.aclose()
    assert time.monotonic() - started < 2.0
    assert Spool(tmp_path).pending_events == 25
    running.offer(obs(99))
    assert running.status()["dropped"] == 1, "offers after close are counted, not lost silently"


async def test_secrets_never_reach_status_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    token = "s3cr3t-T0KEN-value"
    sink = RecordingSink()
    sink.up = False
    sink.error = lambda: SinkError(f"auth failed with Token {token}", retryable=True)
    running = RunningSink(sink, batch_size=1, flush_interval_s=0.01, backoff=FAST, secrets=[token], close_timeout_s=0.1)
    with caplog.at_level(logging.DEBUG):
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(running.run())
            running.offer(obs(0))
            await until(lambda: running.retries >= 3)
            task.cancel()
        await running.aclose()
    assert running.status()["last_error"] == "auth failed with Token ***"
    assert token not in caplog.text
    assert token not in json.dumps(running.status())


async def test_admit_filter_counts_what_it_drops() -> None:
    sink = RecordingSink()
    running = RunningSink(
        sink, batch_size=100, flush_interval_s=0.01, admit=lambda e: isinstance(e, Observation) and e.value != 3.0
    )
    for i in range(5):
        running.offer(obs(i))
    await running.aclose()
    assert sink.values == [0.0, 1.0, 2.0, 4.0]
    assert running.status()["filtered"] == 1


async def test_run_after_close_is_refused() -> None:
    running = RunningSink(RecordingSink())
    await running.aclose()
    with pytest.raises(SinkError, match="closed"):
        await running.run()


async def test_close_while_a_write_is_in_flight_delivers_that_batch_once() -> None:
    """The server has the batch but its answer is still on the way when the daemon stops: close
    waits for the answer (bounded) instead of cancelling the write and sending the batch again."""
    answer = asyncio.Event()

    class ReceivedThenSlow(RecordingSink):
        async def write(self, batch: Sequence[SinkEvent]) -> None:
            self.batches.append(list(batch))  # the server has it...
            await answer.wait()  # ...and answers late

    sink = ReceivedThenSlow()
    running = RunningSink(sink, batch_size=5, flush_interval_s=0.01, backoff=FAST, close_timeout_s=10.0)
    task = asyncio.create_task(running.run())
    for i in range(8):
        running.offer(obs(i))
    await until(lambda: len(sink.batches) == 1)
    closing = asyncio.create_task(running.aclose())
    await until(lambda: running._closing)  # close has begun while the write is in flight
    answer.set()
    await asyncio.wait_for(closing, 10)
    assert task.done()
    assert sink.values == [float(i) for i in range(8)]  # each once, in order
    assert running.status()["written"] == 8
