"""Store writes that wait in memory while the store cannot write (disk full, read-only, I/O error).

The daemon must not lose a part, nor die, because the disk filled up. The pipeline therefore hands
every store write to :class:`HeldWrites`: it is done at once when the store is healthy; when the
store refuses it with a retryable :class:`~monitor.errors.StoreError`, it and every later write
wait here, in order, and are retried with a capped, growing backoff (:mod:`monitor.retry`). The
cause is logged once, with what to do, and an alert ``store_unwritable`` is raised (published
live; stored once the store writes again, then closed).

While anything waits, the daemon saves no source positions: a daemon killed meanwhile resumes its
sources from before the first waiting part, so nothing is skipped (the parts are made again from
the replayed data, with the same numbers). Memory is bounded: past ``limit_bytes`` (the size the
caller gives each write, e.g. its JSON) or ``limit`` waiting writes, the daemon stops taking
observations until the store writes again (back-pressure reaches the sources).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.errors import StoreError
from monitor.model import Alert, AlertKind, AlertState, Observation, Severity
from monitor.retry import Backoff, Retry

__all__ = ["STORE_ALERT_MACHINE", "HeldWrites"]

log = logging.getLogger(__name__)

STORE_ALERT_MACHINE = ""
"""The ``machine`` of the store alert: it concerns the whole cell, not one machine."""


@dataclass(slots=True)
class _Write:
    what: str
    run: Callable[[], object]
    part_key: str | None
    size: int = 0
    resume: Observation | None = None
    """Set on a part's write: the observation that completed it, where its source may resume once
    the part is stored (see Outcome.resume_points)."""


class HeldWrites:
    """An ordered queue of store writes that could not be done yet; see the module docstring."""

    def __init__(
        self,
        record_alerts: Callable[[list[Alert]], object],
        *,
        limit: int = 100_000,
        limit_bytes: int = 256 << 20,
        backoff: Backoff = Backoff(initial_s=1.0, max_s=60.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or limit_bytes < 1:
            raise ValueError("limit and limit_bytes must be at least 1")
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self._record_alerts = record_alerts
        self.written_late = 0
        self.last_error: str | None = None
        self.alert: Alert | None = None
        self._held: deque[_Write] = deque()
        self._resumed: dict[str, Observation] = {}
        self._keys: set[str] = set()
        self._retry = Retry(backoff)
        self._clock = clock
        self._next_try = 0.0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def full(self) -> bool:
        """So many writes wait that the daemon should stop taking observations until they are stored."""
        return len(self._held) >= self.limit or self.bytes >= self.limit_bytes

    def holds_part(self, key: str) -> bool:
        return key in self._keys

    def resume_after(self, obs: Observation) -> None:
        """The last write held completes a part at ``obs``: once it is stored, its machine's source
        may resume just after ``obs`` (reported by :meth:`resume_points`)."""
        if self._held:
            self._held[-1].resume = obs

    def resume_points(self) -> dict[str, Observation]:
        """Per machine, where its source may resume now that the parts held before are stored (once)."""
        out, self._resumed = self._resumed, {}
        return out

    def write(self, what: str, run: Callable[[], object], *, part_key: str | None = None, size: int = 0) -> list[Alert]:
        """Do ``run`` now, or keep it (in order behind what already waits) when the store cannot write.

        Returns alert changes to publish: the store alert when this write is the first to wait.
        A StoreError that waiting cannot cure (not ``retryable``) is raised."""
        if self._held:
            self._hold(_Write(what, run, part_key, size))
            return []
        try:
            run()
            return []
        except StoreError as exc:
            if not exc.retryable:
                raise
            self._hold(_Write(what, run, part_key, size))
            return self._failed(exc, what)

    def retry(self, *, force: bool = False) -> list[Alert]:
        """Write what waits, oldest first, when its backoff has run out (or ``force``); stops at the
        first refusal. Returns the closed store alert once everything is written (the alert's
        opening and closing are then stored too)."""
        if not self._held or (not force and self._clock() < self._next_try):
            return []
        written = 0
        while self._held:
            item = self._held[0]
            try:
                item.run()
            except StoreError as exc:
                if not exc.retryable:
                    raise
                self.last_error = str(exc)
                self._next_try = self._clock() + self._retry.failed()
                if written:
                    log.warning("store: %d waiting writes stored, then refused again; %d still wait", written, len(self._held))
                return []
            self._held.popleft()
            self.bytes -= item.size
            if item.part_key is not None:
                self._keys.discard(item.part_key)
            if item.resume is not None:
                self._resumed[item.resume.machine] = item.resume
            written += 1
            self.written_late += 1
        self._retry.succeeded()
        log.warning("store writes again: the %d writes that waited are stored, in order", written)
        return self._recovered()

    def _hold(self, item: _Write) -> None:
        self._held.append(item)
        self.bytes += item.size
        if item.part_key is not None:
            self._keys.add(item.part_key)

    def _failed(self, exc: StoreError, what: str) -> list[Alert]:
        self.last_error = str(exc)
        self._next_try = self._clock() + self._retry.failed()
        log.error(
            "store cannot write (%s): %s. Parts and alerts wait in memory (up to %d MiB) and are retried; "
            "sources keep their saved positions, so nothing is skipped",
            what,
            exc,
            self.limit_bytes >> 20,
        )
        now = datetime.now(UTC)
        self.alert = Alert(
            id=f"-/-/store/{AlertKind.STORE_UNWRITABLE}@{now.timestamp():.0f}",
            machine=STORE_ALERT_MACHINE,
            program="",
            feature="store",
            kind=AlertKind.STORE_UNWRITABLE,
            severity=Severity.CRITICAL,
            state=AlertState.OPEN,
            part_number=0,
            message=f"the store cannot write: {exc}",
            time=now,
            evidence={"error": str(exc), "since": now.isoformat(), "first_write": what},
        )
        return [self.alert]

    def _recovered(self) -> list[Alert]:
        alert, self.alert = self.alert, None
        if alert is None:
            return []
        now = datetime.now(UTC)
        evidence = {**alert.evidence, "until": now.isoformat(), "writes_that_waited": self.written_late}
        closed = Alert(
            id=alert.id,
            machine=alert.machine,
            program=alert.program,
            feature=alert.feature,
            kind=alert.kind,
            severity=alert.severity,
            state=AlertState.CLOSED,
            part_number=alert.part_number,
            message=f"the store writes again; {self.written_late} writes that waited are stored",
            time=now,
            evidence=evidence,
        )
        # the alert's whole life goes into the store now that it writes: opened, then closed
        return [closed, *self.write("store alert", lambda: self._record_alerts([alert, closed]))]
