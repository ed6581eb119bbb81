"""The small base every protocol adapter builds on.

An adapter is built from a :class:`SourceSpec` (one machine's id, its own source settings and its
signal map; a site file's ``machines[]`` entry is one) the same way for every protocol
(:class:`AdapterFactory`), opened with ``async with``, read with
``async for batch in adapter.batches()`` (or one by one with ``adapter.observations()``), and
owns everything about its connection: connecting, subscribing, reconnecting with backoff, sequence
tracking and resync. Library callbacks feed a bounded queue; when it overflows the adapter counts
the loss and emits a gap observation so the tracker never calls a part complete that may have
missed data. Gaps are stamped with the source's own clock (the newest time it
reported), so they sort among its data whatever the host's clock says.

Observations travel in batches: an adapter queues what one document or one publish carried in one
step, and its reader takes everything queued at once (:class:`ObservationQueue`), so the cost of
moving data between tasks is paid per batch, not per observation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from monitor.errors import AdapterError
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL, Observation

__all__ = [
    "Adapter",
    "AdapterFactory",
    "AdapterState",
    "AdapterStats",
    "DiscoveredSignal",
    "ObservationQueue",
    "SourceSpec",
]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 3.0

_S_co = TypeVar("_S_co", covariant=True)
_A_co = TypeVar("_A_co", covariant=True)


class SourceSpec(Protocol[_S_co, _A_co]):
    """What an adapter is built from: the machine's id, the adapter's own source settings (``_S_co``,
    e.g. :class:`~adapters.opcua.config.OpcUaSource`) and canonical signal -> address (``_A_co``).

    Structural: a site file's ``machines[]`` entry (:mod:`monitor.config`) is one, and so is any
    object with these three attributes, so an adapter never depends on the site's configuration.
    """

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> _S_co: ...

    @property
    def signals(self) -> Mapping[str, _A_co]: ...


class AdapterFactory(Protocol):
    """The one constructor signature of every adapter: ``factory(spec, resume=position)``.

    ``resume`` is what :meth:`Adapter.position` or :meth:`Adapter.position_after` returned in an
    earlier run (saved in the store); an adapter that cannot resume (a subscription only delivers
    current values) ignores it.
    """

    def __call__(self, spec: Any, *, resume: Mapping[str, Any] | None = None) -> Adapter: ...


class AdapterState(StrEnum):
    """Where an adapter is in its life; ``closed`` is final and reopening is refused."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"
    CLOSED = "closed"


class AdapterStats:
    """Counters an adapter keeps for the health line and the dashboard (never reset while running)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._logged: set[str] = set()

    def count(self, kind: str, n: int = 1, *, message: str | None = None) -> None:
        """Count an event; log ``message`` the first time this kind happens, never again."""
        self.counts[kind] += n
        if message is not None and kind not in self._logged:
            self._logged.add(kind)
            log.warning("%s (further '%s' events are counted, not logged)", message, kind)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


class ObservationQueue:
    """A bounded FIFO of observations that moves them in batches.

    ``asyncio.Queue`` costs a few microseconds per item on each side, and waiting on it together
    with another future (the adapter's task) costs a task per item; at thousands of observations
    per second that was most of the daemon's time. Here a writer puts a whole document's
    observations in one call (waiting for room when the reader is slow: back-pressure, no loss)
    and the reader takes everything queued in one call. ``maxsize`` bounds the observations held;
    :meth:`task_done` and :meth:`join` say when everything taken was also processed.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: deque[Observation] = deque()
        self._readable = asyncio.Event()
        self._woken = False
        self._writable = asyncio.Event()
        self._writable.set()
        self.writers_waiting = 0
        """Writers waiting for room now."""
        self._pressed = asyncio.Event()
        self._unfinished = 0
        self._finished = asyncio.Event()
        self._finished.set()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def room(self) -> int:
        """How many observations fit now."""
        return max(0, self.maxsize - len(self._items))

    def put_nowait(self, obs: Observation) -> None:
        """Queue one observation; :class:`asyncio.QueueFull` when there is no room."""
        if len(self._items) >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(obs)
        self._added(1)

    def put_some(self, observations: Sequence[Observation], start: int = 0) -> int:
        """Queue ``observations[start:]`` as far as they fit; returns the index of the first not queued."""
        n = min(len(observations) - start, self.maxsize - len(self._items))
        if n <= 0:
            return start
        end = start + n
        self._items.extend(observations[start:end] if start or end < len(observations) else observations)
        self._added(n)
        return end

    async def put(self, obs: Observation) -> None:
        """Queue one observation, waiting for room."""
        while len(self._items) >= self.maxsize:
            await self.wait_writable()
        self._items.append(obs)
        self._added(1)

    async def put_many(self, observations: Sequence[Observation]) -> None:
        """Queue every observation in order, waiting for room as often as needed."""
        done = self.put_some(observations)
        while done < len(observations):
            await self.wait_writable()
            done = self.put_some(observations, done)

    async def wait_writable(self) -> None:
        """Return once there is room for at least one observation."""
        while len(self._items) >= self.maxsize:
            self._writable.clear()
            self.writers_waiting += 1
            self._pressed.set()
            try:
                await self._writable.wait()
            finally:
                self.writers_waiting -= 1

    async def wait_pressed(self) -> None:
        """Return once a writer has waited for room (now or earlier): back-pressure has reached the
        sources at least once. :attr:`writers_waiting` says whether one waits now."""
        await self._pressed.wait()

    def take(self, limit: int | None = None) -> list[Observation]:
        """Everything queued (at most ``limit``), oldest first, without waiting; [] when empty."""
        items = self._items
        if limit is None or limit >= len(items):
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(limit)]
        if batch:
            if not items:
                self._readable.clear()
            self._writable.set()
        return batch

    def get_nowait(self) -> Observation:
        """The oldest observation; :class:`asyncio.QueueEmpty` when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        obs = self._items.popleft()
        if not self._items:
            self._readable.clear()
        self._writable.set()
        return obs

    async def get(self) -> Observation:
        while not self._items:
            await self.wait_readable()
        return self.get_nowait()

    async def wait_readable(self) -> None:
        """Return once something is queued, or once after each :meth:`wake`."""
        if self._items:
            return
        if not self._woken:
            self._readable.clear()
            await self._readable.wait()
        self._woken = False

    def wake(self) -> None:
        """Let a reader waiting in :meth:`wait_readable` look again (its writer has ended)."""
        self._woken = True
        self._readable.set()

    def task_done(self, n: int = 1) -> None:
        """``n`` observations taken earlier are processed."""
        self._unfinished -= n
        if self._unfinished <= 0:
            self._unfinished = 0
            self._finished.set()

    async def join(self) -> None:
        """Wait until every observation ever queued was taken and marked done."""
        await self._finished.wait()

    def _added(self, n: int) -> None:
        self._unfinished += n
        self._finished.clear()
        self._readable.set()


class Adapter:
    """Base of all adapters: state machine, bounded output queue, gap and connection events.

    Subclasses implement :meth:`_run`, a coroutine that connects, reads and reconnects forever,
    pushing observations with :meth:`_emit`. The base starts it on ``__aenter__`` and cancels it
    on ``__aexit__``, so the adapter owns its task.
    """

    type_name: str = ""

    def __init__(self, machine: str, *, queue_size: int = 10_000) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.machine = machine
        self.state = AdapterState.NEW
        self.reason = ""
        """Why the adapter is in its state: the endpoint it is connected to, or what the last connection
        attempt answered (shown by `monitor status` and the dashboard beside the state)."""
        self.stats = AdapterStats()
        self._queue = ObservationQueue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._overflowing = False
        self.source_time: datetime | None = None
        """The newest timestamp the source reported for a value (its own clock; never our gap and
        connection notes, which carry the host's): where a loss of data begins."""

    async def __aenter__(self) -> Self:
        if self.state is not AdapterState.NEW:
            raise AdapterError(f"adapter for {self.machine} is {self.state}; create a new one instead of reopening")
        self.state = AdapterState.CONNECTING
        self._task = asyncio.create_task(self._guarded_run(), name=f"adapter:{self.machine}")
        self._task.add_done_callback(lambda _: self._queue.wake())  # a reader waiting for data looks again
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def stop_reading(self) -> None:
        """Stop taking new data from the controller but keep what is queued, so a consumer can drain
        it; :meth:`observations` ends once the queue is empty. Used for a lossless shutdown."""
        if self._task is not None and not self._task.done():
            await self._cancel_task(self._task)

    async def aclose(self) -> None:
        """Stop the adapter's task and release its connection; safe to call twice."""
        if self._task is not None:
            await self._cancel_task(self._task)
            self._task = None
        await self._close()
        self.state = AdapterState.CLOSED
        self._queue.wake()

    async def batches(self, limit: int | None = None) -> AsyncIterator[list[Observation]]:
        """Yield everything queued (at most ``limit`` at a time) in the order the adapter produced it,
        until the adapter closes or its reading task ends (raising what ended it)."""
        queue = self._queue
        while True:
            batch = queue.take(limit)
            if batch:
                yield batch
                continue
            if self.state is AdapterState.CLOSED:
                return
            task = self._task
            if task is not None and task.done():
                exc = task.exception() if not task.cancelled() else None
                if exc is not None:
                    raise exc
                return
            await queue.wait_readable()

    async def observations(self) -> AsyncIterator[Observation]:
        """Yield observations one by one in the order the adapter produced them, until the adapter closes."""
        async for batch in self.batches():
            for obs in batch:
                yield obs

    async def _cancel_task(self, task: asyncio.Task[None]) -> None:
        """Cancel the reading task and wait for it, but never forever: a protocol library that
        swallows a cancellation must not hold up the daemon's shutdown."""
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_STOP_TIMEOUT_S)
        if not done:
            log.error("%s: the %s reader did not stop in %.0f s; abandoning it", self.machine, self.type_name, _STOP_TIMEOUT_S)
        elif not task.cancelled() and task.exception() is not None:
            log.debug("%s: reader ended with %r", self.machine, task.exception())

    @property
    def delivery_period_s(self) -> float:
        """How long the source may hold a change before delivering it (publishing or polling interval):
        once a machine's sources were quiet for a few of these, nothing is in flight."""
        return 1.0

    def position(self) -> dict[str, Any] | None:
        """Where to resume after a daemon restart (for example an MTConnect sequence); None if nothing to keep."""
        return None

    def position_after(self, obs: Observation) -> dict[str, Any] | None:
        """The position to resume from once ``obs`` (one of ours) is processed and stored; None if unknown.

        Lets the daemon save a position that never runs ahead of what it stored, so a crash loses
        nothing the source still holds."""
        return None

    def position_at(self, time: datetime) -> dict[str, Any] | None:
        """A position that re-reads everything the source stamped after ``time`` (its own clock), for
        sources that can only say where to resume by time (OPC UA); None where :meth:`position_after`
        serves. The daemon calls it with the end of the last part it stored."""
        return None

    async def _guarded_run(self) -> None:
        await self._run()

    async def _run(self) -> None:
        """Connect, read and reconnect until cancelled; implemented by each protocol."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Release protocol resources; called once on close."""

    async def _emit(self, obs: Observation) -> None:
        """Queue an observation, waiting when the consumer is slow (back-pressure, no loss)."""
        self._note_source_time(obs)
        await self._queue.put(obs)

    async def _emit_many(self, observations: Iterable[Observation]) -> None:
        """Queue observations in order in as few steps as room allows (back-pressure, no loss)."""
        batch = observations if isinstance(observations, Sequence) else list(observations)
        for obs in batch:
            self._note_source_time(obs)
        await self._queue.put_many(batch)

    def _note_source_time(self, obs: Observation) -> None:
        """Keep :attr:`source_time`: the newest time the source stamped on a value (not our notes)."""
        if obs.value is not None and (self.source_time is None or obs.time > self.source_time) and obs.signal[:7] != "source.":
            self.source_time = obs.time

    def _emit_nowait(self, obs: Observation) -> bool:
        """Queue from a callback that cannot wait; overflow is counted and reported as a gap."""
        self._note_source_time(obs)
        try:
            self._queue.put_nowait(obs)
        except asyncio.QueueFull:
            self._overflowing = True
            self.stats.count(
                "queue_overflow",
                message=f"{self.machine}: observation queue full ({self._queue.maxsize}); values dropped",
            )
            return False
        if self._overflowing:
            self._overflowing = False
            self._put_gap("observations dropped: adapter queue overflowed")
        return True

    def _gap(self, reason: str, start: datetime | None = None, end: datetime | None = None) -> Observation:
        """A gap from ``start`` (default: the newest time the source reported, else the host's clock)."""
        return Observation(self.machine, GAP_SIGNAL, start or self.source_time or datetime.now(UTC), reason, end=end)

    def _put_gap(self, reason: str) -> None:
        try:
            self._queue.put_nowait(self._gap(reason))
        except asyncio.QueueFull:
            self._overflowing = True

    async def _emit_gap(self, reason: str, start: datetime | None = None, end: datetime | None = None) -> None:
        """Tell the tracker data was lost from ``start`` (to ``end`` when known), in the source's clock."""
        self.stats.count("gaps")
        await self._queue.put(self._gap(reason, start, end))

    async def _set_state(self, state: AdapterState, detail: str = "") -> None:
        """Change state, log one line, and tell downstream through a connection observation."""
        self.reason = detail
        if state is self.state:
            return
        previous, self.state = self.state, state
        log.info("%s: %s -> %s%s", self.machine, previous, state, f" ({detail})" if detail else "")
        if state in (AdapterState.CONNECTED, AdapterState.LOST):
            await self._emit(Observation(self.machine, CONNECTION_SIGNAL, datetime.now(UTC), str(state)))


@dataclass(frozen=True, slots=True)
class DiscoveredSignal:
    """One readable value found by ``monitor discover``, with enough to write a ``signals:`` entry.

    ``address`` is what goes into the site file (a NodeId with namespace URI or browse path for
    OPC UA; a data item id for MTConnect); ``suggested`` is the canonical signal it looks like.
    """

    path: str
    address: str
    kind: str
    data_type: str = ""
    units: str = ""
    value: str = ""
    suggested: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
