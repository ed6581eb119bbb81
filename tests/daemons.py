"""Running a real daemon inside a test: start it, wait for what it publishes, stop it cleanly.

One helper for every test that needs "the daemon running until it stored N parts": the daemon's
hub subscription is taken *before* it starts, so no event is missed; waiting is on the events
themselves (never on a sleep); leaving the block stops the daemon and waits for its clean shutdown,
also when the test failed inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.config import Site
from monitor.daemon import Daemon, open_core
from monitor.events import HubEvent, Subscription

__all__ = ["RunningDaemon", "run_until_parts", "running_daemon"]


@dataclass
class RunningDaemon:
    """A started daemon and its event subscription; counts every event any wait has seen."""

    daemon: Daemon
    events: Subscription
    task: asyncio.Task[None]
    stop_event: asyncio.Event
    parts_seen: int = 0
    parts_by_machine: dict[str, int] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """Every alert change seen, in order."""

    async def next_event(self) -> HubEvent:
        """The next published event (raises what stopped the daemon, if it stopped)."""
        getter = asyncio.ensure_future(self.events.queue.get())
        await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            self.task.result()  # raises what ended the daemon
            raise AssertionError("the daemon stopped before the awaited event")
        event = getter.result()
        self.kinds.add(event.kind)
        if event.kind == "alert":
            self.alerts.append(event.data)
        if event.kind == "part":
            self.parts_seen += 1
            machine = str(event.data.get("machine"))
            self.parts_by_machine[machine] = self.parts_by_machine.get(machine, 0) + 1
        return event

    async def stop(self, *, timeout_s: float = 15.0) -> None:
        """Ask the daemon to stop and wait for its clean shutdown (raises what it raised)."""
        self.events.close()
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), timeout_s)

    async def until(self, predicate: Callable[[HubEvent], bool], *, timeout_s: float = 30.0) -> HubEvent:
        """Wait for the first event that satisfies ``predicate``."""
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.next_event()
                if predicate(event):
                    return event

    async def parts(self, n: int, *, machines: dict[str, int] | None = None, timeout_s: float = 30.0) -> None:
        """Wait until ``n`` parts in all (or, with ``machines``, that many of each machine) were stored."""

        def done() -> bool:
            if machines is not None:
                return all(self.parts_by_machine.get(m, 0) >= k for m, k in machines.items())
            return self.parts_seen >= n

        async with asyncio.timeout(timeout_s):
            while not done():
                await self.next_event()

    async def drain(self) -> None:
        """Take every event already published (they count as seen)."""
        while not self.events.queue.empty():
            await self.next_event()


@contextlib.asynccontextmanager
async def running_daemon(
    site: Site, *, queue: int = 10_000, start_timeout_s: float = 30.0, stop_timeout_s: float = 15.0, **options: Any
) -> AsyncIterator[RunningDaemon]:
    """Run a daemon for ``site`` (its core opened first; ``options`` go to :class:`Daemon`) until the
    block ends; yields once started. The core is closed after the daemon stopped."""
    async with open_core(site) as core, _running(Daemon(core, **options), queue, start_timeout_s, stop_timeout_s) as running:
        yield running


@contextlib.asynccontextmanager
async def _running(daemon: Daemon, queue: int, start_timeout_s: float, stop_timeout_s: float) -> AsyncIterator[RunningDaemon]:
    sub = daemon.hub.subscribe(queue)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop), name="test-daemon")
    started = asyncio.ensure_future(daemon.started.wait())
    try:
        async with asyncio.timeout(start_timeout_s):
            await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            task.result()  # raises what stopped the daemon before it started
        yield RunningDaemon(daemon, sub, task, stop)
    finally:
        started.cancel()
        sub.close()
        stop.set()
        await asyncio.wait_for(task, stop_timeout_s)


async def run_until_parts(site: Site, parts: int, *, timeout_s: float = 30.0) -> RunningDaemon:
    """Run a daemon until it stored ``parts`` parts, then stop it; returns what was seen."""
    async with running_daemon(site) as running:
        await running.parts(parts, timeout_s=timeout_s)
    return running
