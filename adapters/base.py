"""The small base every protocol adapter builds on.

An adapter is built from a :class:`SourceSpec` (one machine's id, its own source settings and its
signal map; a site file's ``machines[]`` entry is one) the same way for every protocol
(:class:`AdapterFactory`), opened with ``async with``, read with
``async for obs in adapter.observations()``, and owns everything about its connection:
connecting, subscribing, reconnecting with backoff, sequence tracking and resync. Library
callbacks feed a bounded queue; when it overflows the adapter counts the loss and emits a gap
observation so the tracker never calls a part complete that may have missed data.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from monitor.errors import AdapterError
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL, Observation

__all__ = ["Adapter", "AdapterFactory", "AdapterState", "AdapterStats", "DiscoveredSignal", "SourceSpec"]

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
        self._queue: asyncio.Queue[Observation] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._overflowing = False

    async def __aenter__(self) -> Self:
        if self.state is not AdapterState.NEW:
            raise AdapterError(f"adapter for {self.machine} is {self.state}; create a new one instead of reopening")
        self.state = AdapterState.CONNECTING
        self._task = asyncio.create_task(self._guarded_run(), name=f"adapter:{self.machine}")
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

    async def observations(self) -> AsyncIterator[Observation]:
        """Yield observations in the order the adapter produced them, until the adapter closes."""
        while True:
            if self.state is AdapterState.CLOSED and self._queue.empty():
                return
            if self._task is not None and self._task.done() and self._queue.empty():
                exc = self._task.exception() if not self._task.cancelled() else None
                if exc is not None:
                    raise exc
                return
            getter = asyncio.ensure_future(self._queue.get())
            waiters: set[asyncio.Future[object]] = {getter}  # type: ignore[arg-type]
            if self._task is not None:
                waiters.add(self._task)  # type: ignore[arg-type]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()

    async def _cancel_task(self, task: asyncio.Task[None]) -> None:
        """Cancel the reading task and wait for it, but never forever: a protocol library that
        swallows a cancellation must not hold up the daemon's shutdown."""
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_STOP_TIMEOUT_S)
        if not done:
            log.error("%s: the %s reader did not stop in %.0f s; abandoning it", self.machine, self.type_name, _STOP_TIMEOUT_S)
        elif not task.cancelled() and task.exception() is not None:
            log.debug("%s: reader ended with %r", self.machine, task.exception())

    def position(self) -> dict[str, Any] | None:
        """Where to resume after a daemon restart (for example an MTConnect sequence); None if nothing to keep."""
        return None

    def position_after(self, obs: Observation) -> dict[str, Any] | None:
        """The position to resume from once ``obs`` (one of ours) is processed and stored; None if unknown.

        Lets the daemon save a position that never runs ahead of what it stored, so a crash loses
        nothing the source still holds."""
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
        await self._queue.put(obs)

    def _emit_nowait(self, obs: Observation) -> bool:
        """Queue from a callback that cannot wait; overflow is counted and reported as a gap."""
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

    def _put_gap(self, reason: str) -> None:
        gap = Observation(self.machine, GAP_SIGNAL, datetime.now(UTC), reason)
        try:
            self._queue.put_nowait(gap)
        except asyncio.QueueFull:
            self._overflowing = True

    async def _emit_gap(self, reason: str, time: datetime | None = None) -> None:
        """Tell the tracker data was lost; the part in progress becomes incomplete."""
        self.stats.count("gaps")
        await self._emit(Observation(self.machine, GAP_SIGNAL, time or datetime.now(UTC), reason))

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
