"""The on-disk spool, and the wrapper's one invariant under any failure pattern: exactly once, in order."""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import SinkError
from monitor.model import Observation
from monitor.retry import Backoff
from monitor.sinks.base import RunningSink, SinkEvent
from monitor.sinks.spool import Spool

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def obs(i: int) -> Observation:
    return Observation("vmc-01", "spindle.load", T0 + timedelta(milliseconds=i), float(i))


def values(events: Sequence[SinkEvent]) -> list[float]:
    return [float(e.value) for e in events if isinstance(e, Observation) and e.value is not None]


def test_segments_keep_order_across_prepend_append_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_events=3)
    assert spool.append([obs(i) for i in range(2, 7)]) == 5
    spool.prepend([obs(0), obs(1)])
    assert spool.pending_events == 7 and spool.segments == 3
    reopened = Spool(tmp_path, segment_events=3)
    assert reopened.pending_events == 7
    seen: list[float] = []
    while (segment := reopened.take_head()) is not None:
        seen += values(segment.events)
        reopened.done(segment)
    assert seen == [float(i) for i in range(7)]
    assert reopened.pending_events == 0 and not list(tmp_path.glob("seg-*"))


def test_taken_tail_is_sealed_so_later_appends_are_not_deleted_with_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_events=10)
    spool.append([obs(0), obs(1)])
    head = spool.take_head()
    assert head is not None
    spool.append([obs(2)])  # arrives while the head is being written
    spool.done(head)
    rest = spool.take_head()
    assert rest is not None and values(rest.events) == [2.0]


def test_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_events=10)
    spool.append([obs(0), obs(1)])
    segment_file = next(tmp_path.glob("seg-*"))
    with segment_file.open("ab") as f:
        f.write(b'{"type":"observation","machine":"vmc-01","sig')  # power lost mid-write
    reopened = Spool(tmp_path, segment_events=10)
    head = reopened.take_head()
    assert head is not None and values(head.events) == [0.0, 1.0]
    assert reopened.corrupt_lines == 1


def test_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_events=5, max_bytes=1000)
    kept = spool.append([obs(i) for i in range(100)])
    assert 0 < kept < 100
    assert spool.pending_bytes < 1000 + 5 * 200


class ScriptedSink:
    """Fails or succeeds per attempt as scripted; succeeds once the script is used up."""

    name = "scripted"

    def __init__(self, script: list[bool]) -> None:
        self.script = list(script)
        self.written: list[float] = []

    async def write(self, batch: Sequence[SinkEvent]) -> None:
        await asyncio.sleep(0)
        if self.script and not self.script.pop(0):
            raise SinkError("scripted failure", retryable=True)
        self.written += values(batch)

    async def aclose(self) -> None:
        return None


async def _drive(script: list[bool], n: int, batch: int, buffer: int, restart_at: int | None, folder: Path) -> list[float]:
    sink = ScriptedSink(script)
    fast = Backoff(initial_s=0.001, max_s=0.004)

    def make() -> RunningSink:
        return RunningSink(
            sink,
            queue_size=buffer,
            batch_size=batch,
            flush_interval_s=0.002,
            spool_dir=folder,
            backoff=fast,
            close_timeout_s=0.05,
            rng=random.Random(0),
        )

    running = make()
    dropped = 0
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        for i in range(n):
            if i == restart_at:
                task.cancel()
                await running.aclose()
                dropped += running.dropped
                running = make()
                task = tg.create_task(running.run())
            while running.status()["backlog_memory"] >= buffer:  # noqa: ASYNC110 - the producer waits for room
                await asyncio.sleep(0.001)
            running.offer(obs(i))
            if i % 7 == 0:
                await asyncio.sleep(0)
        deadline = asyncio.get_running_loop().time() + 10
        while len(sink.written) + dropped < n and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        task.cancel()
    await running.aclose()
    assert dropped + running.dropped == 0
    return sink.written


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(st.booleans(), max_size=12),
    n=st.integers(min_value=1, max_value=40),
    batch=st.integers(min_value=1, max_value=8),
    restart=st.one_of(st.none(), st.integers(min_value=0, max_value=39)),
)
def test_any_failure_pattern_and_restart_writes_each_event_once_in_order(
    script: list[bool], n: int, batch: int, restart: int | None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        written = asyncio.run(_drive(script, n, batch, max(2 * batch, 16), restart, Path(folder)))
    assert written == [float(i) for i in range(n)]
