"""A small publish/subscribe hub for live consumers (dashboard SSE, ``monitor demo`` output).

Every subscriber gets its own bounded queue. A subscriber that does not keep up loses the oldest
events, and the loss is counted on that subscription, so a browser tab left open for a shift can
never make the daemon grow without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

__all__ = ["EventHub", "HubEvent", "Subscription"]


@dataclass(frozen=True, slots=True)
class HubEvent:
    """``kind`` is ``part``, ``alert``, ``machine`` or ``inspection`` (a result file imported, or
    results matched later); ``data`` is the JSON-able body."""

    kind: str
    data: dict[str, Any]


class Subscription:
    """One consumer's bounded view of the hub; iterate it, close it when done."""

    def __init__(self, hub: EventHub, size: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[HubEvent] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, event: HubEvent) -> None:
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1

    async def __aiter__(self) -> AsyncIterator[HubEvent]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    """Fan-out of daemon events to any number of bounded subscriptions."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(self, size: int = 1000) -> Subscription:
        sub = Subscription(self, size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        event = HubEvent(kind, data)
        for sub in list(self._subs):
            sub.offer(event)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
