"""What every output sink is, and the one wrapper that makes any sink safe to feed from the daemon.

A :class:`Sink` only knows how to write one batch and how to close; it raises
:class:`~monitor.errors.SinkError` with ``retryable`` saying whether trying again can help. The
daemon never calls a sink directly: it wraps it in a :class:`RunningSink`, which owns everything
that is the same for InfluxDB, MQTT and webhooks (Telegraf's ``running_output`` idea):

- :meth:`RunningSink.offer` never blocks and never raises: the event goes to a bounded in-memory
  buffer, or is counted as dropped when that is full;
- :meth:`RunningSink.run` (a task in the daemon's TaskGroup) writes batches of ``batch_size`` or
  whatever arrived within ``flush_interval_s``; retryable failures are retried with capped,
  jittered exponential backoff, at least as long as the server's ``Retry-After``;
- with a ``spool_dir``, a batch that failed, and everything offered while the sink is failing or
  while the buffer is more than half full, goes to an on-disk :class:`~monitor.sinks.spool.Spool`;
  the spool is written before anything in memory, oldest first, so order holds across outages
  and daemon restarts (a new ``RunningSink`` on the same folder replays it first);
- a batch the sink refuses for good (``retryable=False``, e.g. HTTP 400) is logged with the
  server's message and set aside in ``rejected.jsonl``, never retried;
- :meth:`RunningSink.status` reports state, backlog in memory and on disk, counters and the last
  error, with any configured secret replaced by ``***``.

Ordering invariant: every event on disk is older than every event in memory, and the writer takes
from memory only when the disk is empty. All spool I/O runs on one dedicated worker thread, in
submission order, so the event loop only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from monitor.errors import SinkError
from monitor.model import Alert, Feature, Observation, PartRecord
from monitor.retry import Backoff
from monitor.sinks.config import OutputConfig
from monitor.sinks.spool import Segment, Spool

__all__ = [
    "ConfiguredSink",
    "ProgramFeatures",
    "RetryAfterError",
    "RunningSink",
    "Sink",
    "SinkContext",
    "SinkEvent",
    "SinkState",
]

log = logging.getLogger(__name__)

_DEFAULT_BACKOFF = Backoff()

SinkEvent = PartRecord | Alert | Observation
"""Everything a sink can be offered: part records, alert state changes and raw observations."""

_T = TypeVar("_T")


class Sink(Protocol):
    """An output that can write a batch of events; wrapped by :class:`RunningSink` for the daemon.

    ``write`` must translate every failure of its library into :class:`SinkError` (retryable or
    not) and must be safe to cancel. Error messages must never contain credentials.
    """

    name: str

    async def write(self, batch: Sequence[SinkEvent]) -> None: ...

    async def aclose(self) -> None: ...


class ConfiguredSink(Sink, Protocol):
    """A sink built from its site-file section (what the plugin registry builds): it also says which
    events it takes and which strings must never appear in a message."""

    @property
    def secrets(self) -> tuple[str, ...]: ...

    def admits(self, event: SinkEvent) -> bool: ...


class ProgramFeatures(Protocol):
    """A part program as a sink sees it: its features (a :class:`monitor.config.ProgramConfig` is one)."""

    def feature_models(self) -> list[Feature]: ...


@dataclass(frozen=True)
class SinkContext:
    """What a sink may know of the site besides its own section, given when it is built."""

    site: str
    """The site name (MQTT topics, payloads, InfluxDB tags)."""
    name: str
    """This output's name: influx, mqtt, webhook-1, ..."""
    programs: Mapping[str, ProgramFeatures] = field(default_factory=dict)
    """The site's programs by name, for outputs that write per-feature values."""
    open_alerts: Sequence[Alert] = ()
    """Alerts open when the daemon started (read from the store by the core), for status counts."""


class RetryAfterError(SinkError):
    """Raised by a sink when the server asked us to come back later (HTTP 429/503 with Retry-After)."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, retryable=True)
        self.retry_after = retry_after


class SinkState(StrEnum):
    """What :meth:`RunningSink.status` reports: is the output keeping up?"""

    STARTING = "starting"
    """Nothing written or failed yet."""
    CONNECTED = "connected"
    """The last write succeeded."""
    RETRYING = "retrying"
    """The last write failed; fewer than ``down_after`` failures in a row."""
    DOWN = "down"
    """``down_after`` or more writes failed in a row; events go to the spool."""
    CLOSED = "closed"


def _redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    words = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(text: str) -> str:
        for word in words:
            text = text.replace(word, "***")
        return text

    return redact


class RunningSink:
    """Buffering, retry with backoff, the on-disk spool and drop counters around one :class:`Sink`.

    Parameters
    ----------
    sink:
        The output; closed by :meth:`aclose`.
    queue_size:
        Events held in memory at most. With a spool, the queue is moved to disk once more than
        half full, so it overflows (counted in ``dropped``) only when the disk cannot keep up.
    batch_size:
        Events per write, and per spool segment.
    flush_interval_s:
        Longest time an event waits in memory for its batch to fill.
    spool_dir:
        Folder of the on-disk spool; ``None`` keeps everything in memory (and drops on overflow,
        or on close if the sink cannot take the rest).
    spool_max_bytes:
        Bound of the spool folder; beyond it new events are counted as dropped.
    backoff:
        Retry delays; a :class:`RetryAfterError` error's ``retry_after`` is honoured as a minimum.
    down_after:
        Failures in a row after which the state reads ``down`` instead of ``retrying``.
    close_timeout_s:
        How long :meth:`aclose` tries to write what is in memory before spooling it.
    admit:
        Optional filter called by :meth:`offer` (for example raw-signal modes); events it
        rejects are counted in ``filtered``, not written.
    secrets:
        Strings (tokens, passwords) replaced by ``***`` in every message this wrapper keeps or logs.
    rng:
        Source of the backoff jitter; pass a seeded one in tests.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        spool_dir: Path | None = None,
        spool_max_bytes: int = 1 << 30,
        backoff: Backoff = _DEFAULT_BACKOFF,
        down_after: int = 3,
        close_timeout_s: float = 5.0,
        admit: Callable[[SinkEvent], bool] | None = None,
        secrets: Iterable[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if flush_interval_s <= 0 or close_timeout_s < 0:
            raise ValueError("flush_interval_s must be positive and close_timeout_s not negative")
        self.sink = sink
        self.name = sink.name
        self.queue_size = queue_size
        self.batch_size = min(batch_size, queue_size)
        self.flush_interval_s = flush_interval_s
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self.backoff = backoff
        self.down_after = down_after
        self.close_timeout_s = close_timeout_s
        self._admit = admit
        self._redact = _redactor(secrets)
        self._rng = rng if rng is not None else random.Random()

        self._memory: deque[SinkEvent] = deque()
        self._held: list[SinkEvent] | None = None  # a batch taken from memory, being written
        self._closing = False  # aclose started: the writer starts no new write
        self._write_idle = asyncio.Event()  # set while no sink.write is in flight
        self._write_idle.set()
        self._held_segment: Segment | None = None  # a spool segment being written
        self._spool: Spool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._spool_wake = asyncio.Event()
        self._oldest_at: float | None = None  # monotonic time the oldest memory event arrived
        self._run_task: asyncio.Task[None] | None = None
        self._state = SinkState.STARTING
        self._failures = 0
        self._closed = False
        self._last_error: str | None = None
        self._last_success: datetime | None = None
        self._drop_logged = False
        self.written = 0
        self.dropped = 0
        self.set_aside = 0
        self.spooled = 0
        self.filtered = 0
        self.retries = 0

    @classmethod
    def for_output(cls, sink: ConfiguredSink, config: OutputConfig, *, base_dir: Path) -> RunningSink:
        """The one way the daemon wraps a configured output: queue, batches, spool and retry waits
        from its section (``base_dir``, the site file's folder, anchors a relative spool)."""
        return cls(
            sink,
            queue_size=config.queue_size,
            batch_size=config.batch_events(),
            flush_interval_s=config.flush_after_s(),
            spool_dir=config.spool_path(base_dir),
            spool_max_bytes=config.spool_bytes(),
            backoff=config.backoff(),
            admit=sink.admits,
            secrets=sink.secrets,
        )

    # -------------------------------------------------------------------------------- producing
    def offer(self, event: SinkEvent) -> None:
        """Queue one event for writing; never blocks, never raises (overflow is counted)."""
        if self._admit is not None and not self._admit(event):
            self.filtered += 1
            return
        if self._closed or len(self._memory) >= self.queue_size:
            self.dropped += 1
            if not self._drop_logged:
                self._drop_logged = True
                why = "closed" if self._closed else f"queue of {self.queue_size} events full"
                log.warning("sink %s: dropping events (%s); see status() for the count", self.name, why)
            return
        self._drop_logged = False
        self._memory.append(event)
        n = len(self._memory)
        if n == 1:
            self._oldest_at = time.monotonic()
            self._wake.set()
        elif n >= self.batch_size:
            self._wake.set()
        if self.spool_dir is not None and (n * 2 > self.queue_size or (self._failing and n >= self.batch_size)):
            self._spool_wake.set()

    @property
    def _failing(self) -> bool:
        return self._state in (SinkState.RETRYING, SinkState.DOWN)

    # ----------------------------------------------------------------------------------- status
    @property
    def state(self) -> SinkState:
        return self._state

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``monitor status`` and the daemon's health line."""
        spool = self._spool
        return {
            "name": self.name,
            "state": str(self._state),
            "backlog_memory": len(self._memory) + len(self._held or ()),
            "backlog_disk": spool.pending_events if spool is not None else 0,
            "backlog_disk_bytes": spool.pending_bytes if spool is not None else 0,
            "written": self.written,
            "dropped": self.dropped,
            "set_aside": self.set_aside,
            "spooled": self.spooled,
            "filtered": self.filtered,
            "retries": self.retries,
            "last_error": self._last_error,
            "last_success": self._last_success.isoformat() if self._last_success else None,
        }

    # -------------------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Write until cancelled; replays the on-disk spool (oldest first) before anything new."""
        if self._closed:
            raise SinkError(f"sink {self.name} is closed; create a new RunningSink", retryable=False)
        self._run_task = asyncio.current_task()
        await self._open_spool()
        async with asyncio.TaskGroup() as tg:
            if self._spool is not None:
                tg.create_task(self._spooler(), name=f"sink-{self.name}-spooler")
            await self._writer()

    async def aclose(self) -> None:
        """Stop, write what memory holds within ``close_timeout_s``, spool the rest, close the sink.

        Cancels :meth:`run` if it is still going. Whatever neither the sink nor the spool took is
        counted as dropped.
        """
        if self._closed:
            return
        self._closed = True
        self._closing = True
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            # A write in flight may already have reached the server: let it finish (bounded) rather
            # than cancel it and write the same batch again below (a duplicate at every shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.close_timeout_s):
                    await self._write_idle.wait()
            task.cancel()
            await asyncio.wait([task])
        try:
            await self._open_spool()
            if self._executor is not None:
                # A cancelled spooler may have left an append queued: let it land before looking at
                # the disk, or memory could be written ahead of older events on their way to disk.
                await self._io(lambda: None)
            disk_busy = bool(self._spool) or self._held_segment is not None
            if not disk_busy and (self._held or self._memory):
                with contextlib.suppress(TimeoutError, SinkError):
                    async with asyncio.timeout(self.close_timeout_s):
                        await self._flush_memory_directly()
            held, self._held = self._held or [], None
            rest = list(self._memory)
            self._memory.clear()
            if self._spool is not None:
                if held:  # older than anything the spooler moved to disk while it was in flight
                    await self._io(self._spool_prepend, held)
                if rest:
                    await self._io(self._spool_append, rest)
            elif held or rest:
                lost = len(held) + len(rest)
                self.dropped += lost
                log.warning("sink %s: %d events not written at close (no spool configured)", self.name, lost)
        finally:
            self._state = SinkState.CLOSED
            try:
                await self.sink.aclose()
            finally:
                if self._executor is not None:
                    await self._io(lambda: None)  # barrier: every queued spool write has landed
                    self._executor.shutdown(wait=False)

    async def _flush_memory_directly(self) -> None:
        while self._held or self._memory:
            if self._held is None:
                self._held = [self._memory.popleft() for _ in range(min(self.batch_size, len(self._memory)))]
            await self.sink.write(self._held)
            self._count_written(len(self._held))
            self._held = None

    # ------------------------------------------------------------------------------- internals
    async def _io(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run one spool operation on the spool's own thread (in order, off the event loop)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{self.name}")
        future = asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args))
        # Shielded: cancelling the caller must not cancel a queued spool write whose events
        # already left memory; the thread finishes it and later operations queue behind it.
        return await asyncio.shield(future)

    async def _open_spool(self) -> None:
        if self._spool is None and self.spool_dir is not None:
            directory = self.spool_dir
            self._spool = await self._io(lambda: Spool(directory, segment_events=self.batch_size, max_bytes=self.spool_max_bytes))
            if self._spool:
                log.info("sink %s: replaying %d spooled events", self.name, self._spool.pending_events)

    def _count_written(self, n: int) -> None:
        self.written += n
        self._failures = 0
        self._state = SinkState.CONNECTED
        self._last_success = datetime.now(UTC)

    async def _writer(self) -> None:
        while True:
            batch, segment = await self._next_batch()
            await self._deliver(batch, segment)

    async def _next_batch(self) -> tuple[list[SinkEvent], Segment | None]:
        while True:
            if self._closing:  # aclose writes what is left itself; wait here to be cancelled
                await asyncio.Event().wait()
            if self._held_segment is not None:
                return list(self._held_segment.events), self._held_segment
            if self._held is not None:
                return self._held, None
            self._wake.clear()
            async with self._lock:
                if self._spool:
                    assert self._spool is not None
                    segment = await self._io(self._spool.take_head)
                    if segment is not None:
                        self._held_segment = segment
                        continue
                if self._memory and (len(self._memory) >= self.batch_size or self._flush_due() <= 0):
                    self._held = [self._memory.popleft() for _ in range(min(self.batch_size, len(self._memory)))]
                    self._oldest_at = time.monotonic() if self._memory else None
                    continue
            timeout = self._flush_due() if self._memory else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _flush_due(self) -> float:
        """Seconds until the oldest event in memory has waited ``flush_interval_s``."""
        if self._oldest_at is None:
            return 0.0
        return self._oldest_at + self.flush_interval_s - time.monotonic()

    async def _deliver(self, batch: list[SinkEvent], segment: Segment | None) -> None:
        if not batch:  # an empty (all lines unreadable) segment
            if segment is not None:
                await self._finish(segment)
            return
        try:
            self._write_idle.clear()
            try:
                await self.sink.write(batch)
            finally:
                self._write_idle.set()
        except SinkError as exc:
            message = self._redact(str(exc))
            self._last_error = message
            if not exc.retryable:
                log.error("sink %s refused %d events for good: %s; set aside", self.name, len(batch), message)
                self.set_aside += len(batch)
                if segment is None:
                    self._held = None
                if self._spool is not None:
                    await self._io(self._spool.set_aside, batch, message)
                if segment is not None:
                    await self._finish(segment)
                return
            await self._retry_later(batch, segment, message, getattr(exc, "retry_after", None))
            return
        self._count_written(len(batch))
        await self._finish(segment)

    async def _finish(self, segment: Segment | None) -> None:
        if segment is not None:
            self._held_segment = None
            assert self._spool is not None
            await self._io(self._spool.done, segment)
        else:
            self._held = None

    async def _retry_later(
        self, batch: list[SinkEvent], segment: Segment | None, message: str, retry_after: float | None
    ) -> None:
        self._failures += 1
        self.retries += 1
        was = self._state
        self._state = SinkState.DOWN if self._failures >= self.down_after else SinkState.RETRYING
        if self._state != was:
            log.warning("sink %s %s: %s", self.name, self._state, message)
        if segment is None and self._spool is not None:
            # The failed batch is the oldest event anywhere: put it on disk before the rest. It stays
            # held until the prepend is queued, so a cancellation while waiting for the lock loses nothing.
            async with self._lock:
                self._held = None
                await self._io(self._spool_prepend, batch)
        if self._spool is not None:
            self._spool_wake.set()
        delay = self.backoff.delay(self._failures - 1, self._rng, retry_after)
        await asyncio.sleep(delay)

    async def _spooler(self) -> None:
        """Move memory to disk while the sink fails, or when the buffer is more than half full."""
        spool = self._spool
        assert spool is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._spool_wake.wait()
            self._spool_wake.clear()
            if not self._memory:
                continue
            if not (self._failing or len(self._memory) * 2 > self.queue_size):
                continue
            async with self._lock:
                chunk = list(self._memory)
                self._memory.clear()
                self._oldest_at = None
                await self._io(self._spool_append, chunk)

    def _spool_prepend(self, events: list[SinkEvent]) -> None:
        assert self._spool is not None
        self._spool.prepend(events)
        self.spooled += len(events)

    def _spool_append(self, events: list[SinkEvent]) -> int:
        """Append to the spool and count (on the spool thread, so a cancelled caller still counts)."""
        assert self._spool is not None
        kept = self._spool.append(events)
        self.spooled += kept
        if kept < len(events):
            self.dropped += len(events) - kept
            lost = len(events) - kept
            log.warning("sink %s: spool full (%d bytes); dropped %d events", self.name, self._spool.max_bytes, lost)
        return kept
