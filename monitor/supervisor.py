"""One configured source under supervision: whatever it does wrong ends at that source.

An adapter reconnects by itself after the failures its protocol expects (a refused connection, a
malformed document, a restarted agent). This is the boundary around it for everything else: an
exception nobody foresaw (a library error that escaped the adapter's translation, a bug, a file
that cannot be decoded) ends here, for this source only. It is logged (with its traceback the
first time a kind of error happens), counted, the machine's connection is reported lost and a gap
marked when the source cannot resume exactly, and a new adapter is started after a capped,
jittered, growing wait, resuming from the position the failed one had reached. Every other
machine of the cell goes on meanwhile.

A source that ends normally (a replay file read to its end) is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.base import Adapter, AdapterState
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL, Observation
from monitor.retry import Backoff, Retry

__all__ = ["RESTART_BACKOFF", "SOURCE_FAILED", "SourceSupervisor"]

log = logging.getLogger(__name__)

SOURCE_FAILED = "failed"
"""State shown for a source whose adapter ended with an error and has not connected since."""

RESTART_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
"""Waits between restarts of a source that failed unexpectedly; reset once a source ran this cap."""


class SourceSupervisor:
    """Runs one source's adapters, one at a time, until stopped; :meth:`run` never raises.

    ``make(resume)`` builds a new adapter resuming from a saved position (or None); ``deliver``
    takes each batch of observations in order (it may wait: back-pressure reaches the adapter).
    """

    def __init__(
        self,
        machine: str,
        key: str,
        make: Callable[[dict[str, Any] | None], Adapter],
        deliver: Callable[[Sequence[Observation]], Awaitable[None]],
        *,
        resume: dict[str, Any] | None = None,
        backoff: Backoff = RESTART_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self.machine = machine
        self.key = key
        self.adapter: Adapter | None = None
        self.counts: Counter[str] = Counter()
        self.last_error: str | None = None
        self.failure: str | None = None
        """The error that ended the source, until it connects again."""
        self._make = make
        self._deliver = deliver
        self._resume = resume
        self._retry = Retry(backoff, rng)
        self._stopping = asyncio.Event()
        self._logged: set[str] = set()

    @property
    def restarts(self) -> int:
        return self.counts["restarts"]

    def status(self) -> dict[str, Any]:
        """The source as the health line and the dashboard show it: state and the reason for it.

        ``failed`` means the source ended with an error (a refused certificate or password, a
        configuration the server does not take) and has not connected since; it is retried with a
        growing wait, and the reason says what to change."""
        adapter = self.adapter
        state = str(adapter.state) if adapter is not None else str(AdapterState.LOST)
        reason = adapter.reason if adapter is not None else ""
        if self.failure is not None:
            state, reason = SOURCE_FAILED, self.failure
        out: dict[str, Any] = {
            "type": adapter.type_name if adapter is not None else "",
            "source": self.key,
            "state": state,
            "reason": reason,
            "counts": adapter.stats.as_dict() if adapter is not None else {},
        }
        if self.counts:
            out["supervisor"] = dict(self.counts)
        if self.last_error is not None:
            out["last_error"] = self.last_error
        return out

    async def stop_reading(self) -> None:
        """Stop taking data from the source; :meth:`run` returns once what the adapter holds is delivered."""
        self._stopping.set()
        if self.adapter is not None:
            await self.adapter.stop_reading()

    async def run(self) -> None:
        """Read the source until stopped or until it ends normally, restarting it after any failure."""
        while not self._stopping.is_set():
            started = time.monotonic()
            adapter: Adapter | None = None
            try:
                adapter = self.adapter = self._make(self._resume)
                async with adapter:
                    async for batch in adapter.batches():
                        if self.failure is not None and any(
                            obs.signal == CONNECTION_SIGNAL and obs.value == str(AdapterState.CONNECTED) for obs in batch
                        ):
                            self.failure = None
                        await self._deliver(batch)
                return  # ended by itself (a replay read to its end) or stopped
            except Exception as exc:  # the per-source boundary: one source's failure must not end the cell
                if self._stopping.is_set():
                    return
                await self._failed(adapter, exc, time.monotonic() - started)
            wait = self._retry.failed()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()

    async def _failed(self, adapter: Adapter | None, exc: Exception, ran_s: float) -> None:
        kind = type(exc).__name__
        self.counts["restarts"] += 1
        self.counts[f"failed:{kind}"] += 1
        self.last_error = f"{kind}: {exc}" if str(exc) else kind
        self.failure = str(exc) or kind
        first = kind not in self._logged
        self._logged.add(kind)
        log.error(
            "%s: source %s failed (%s); restarting it with backoff%s",
            self.machine,
            self.key,
            self.last_error,
            "" if first else " (traceback logged the first time)",
            exc_info=exc if first else None,
        )
        if ran_s >= self._retry.backoff.max_s:
            self._retry.succeeded()  # it ran stably before failing: restart quickly
        now = datetime.now(UTC)
        position = adapter.position() if adapter is not None else None
        if position is not None:
            self._resume = position  # everything read up to here was delivered: continue exactly there
        else:
            reason = f"source restarted after an unexpected error ({self.last_error}); data in between may be lost"
            # in the source's own clock (the newest time it reported), so the gap sorts among its data
            start = adapter.source_time if adapter is not None and adapter.source_time is not None else now
            await self._deliver([Observation(self.machine, GAP_SIGNAL, start, reason)])
        await self._deliver([Observation(self.machine, CONNECTION_SIGNAL, now, str(AdapterState.LOST))])
