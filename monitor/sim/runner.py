"""Replaying a cell's event stream in (compressed) wall-clock time.

Protocol servers and ``monitor demo`` call :func:`run_cell` with a ``publish`` hook that writes
each update into their address space. Pacing uses ``asyncio.sleep`` (or waits on ``stop``): it
spaces events out in time, it never synchronises anything.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from monitor.sim.cell import SimCell, SimEvent

__all__ = ["Publish", "run_cell"]

Publish = Callable[[SimEvent], Awaitable[None] | None]
"""A plain function or a coroutine function taking one :class:`SimEvent`."""

_YIELD_EVERY = 256
"""With ``speed=0`` the loop gets control back at least this often (events)."""


async def run_cell(
    cell: SimCell,
    publish: Publish,
    *,
    speed: float,
    stop: asyncio.Event | None = None,
    include_spindle_samples: bool = True,
) -> int:
    """Publish every event of ``cell`` in order, paced at ``speed`` times real time.

    ``speed=0`` publishes as fast as possible while still yielding to the loop regularly; with
    ``speed=60`` one simulated minute takes one second. Returns the number of events published;
    returns early (without error) once ``stop`` is set.
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    loop = asyncio.get_running_loop()
    wall0 = loop.time()
    sim0 = cell.start
    count = 0
    for event in cell.events(include_spindle_samples=include_spindle_samples):
        if stop is not None and stop.is_set():
            break
        if speed > 0:
            due = wall0 + (event.time - sim0).total_seconds() / speed
            delay = due - loop.time()
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                    except TimeoutError:
                        pass
                    else:
                        break
            elif count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        elif count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        result = publish(event)
        if inspect.isawaitable(result):
            await result
        count += 1
    return count
