"""Retrying with capped, jittered, growing waits: one policy for sinks, sources and the store.

Every place that retries something that failed (a sink write, a reconnect to a controller, a store
write on a full disk, a source restarted after an unexpected error) waits with :class:`Backoff`, so
many monitors do not hammer a recovering server in step, and a failure that repeats waits longer
each time up to a cap. :class:`Retry` keeps the attempt count and the seeded random source for one
thing being retried. :func:`retry_after_s` reads a server's ``Retry-After`` (honoured as a minimum
wait by :meth:`Backoff.delay`), and :func:`check_backoff_bounds` is the one config check of a
first-wait/cap pair, whatever the keys are called.

Pure and synchronous: the caller sleeps (``await asyncio.sleep(retry.failed())``), so nothing here
owns a task and tests can ask for delays without waiting for them.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Backoff", "Retry", "check_backoff_bounds", "retry_after_s"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter ("equal jitter": half fixed, half random).

    >>> b = Backoff(initial_s=1.0, max_s=8.0)
    >>> [b.ceiling(n) for n in range(6)]
    [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    >>> 2.0 <= b.delay(2, random.Random(1)) <= 4.0
    True
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    max_retry_after_s: float = 300.0
    """A server's Retry-After is honoured up to this bound (a hostile or buggy header cannot park us)."""

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s):
            raise ValueError("backoff needs 0 < initial_s <= max_s")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt`` (0-based)."""
        return min(self.max_s, self.initial_s * 2.0 ** min(attempt, 60))

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The wait before retry number ``attempt``: between half the ceiling and the ceiling, and at
        least the server's ``retry_after`` (bounded)."""
        top = self.ceiling(attempt)
        wait = top / 2 + rng.uniform(0, top / 2)
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            wait = max(wait, min(retry_after, self.max_retry_after_s))
        return wait


class Retry:
    """The retry state of one thing that can fail repeatedly: failures in a row and the next wait.

    ``failed()`` counts a failure and returns how long to wait; ``succeeded()`` starts over. Only
    call ``succeeded()`` once the thing really worked (data flowed), not when it merely connected:
    an agent that connects and then sends garbage must wait longer every time.

    >>> r = Retry(Backoff(initial_s=1.0, max_s=4.0), random.Random(0))
    >>> [round(r.failed(), 2) <= top for top in (1.0, 2.0, 4.0, 4.0)]
    [True, True, True, True]
    >>> r.failures
    4
    >>> r.succeeded(); r.failures
    0
    """

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self.backoff = backoff
        self.failures = 0
        self._rng = rng if rng is not None else random.Random()

    def failed(self, retry_after: float | None = None) -> float:
        """Count one more failure in a row; the seconds to wait before trying again."""
        self.failures += 1
        return self.backoff.delay(self.failures - 1, self._rng, retry_after)

    def succeeded(self) -> None:
        """The thing worked: the next failure waits the shortest time again."""
        self.failures = 0


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (RFC 9110 10.2.3): delta-seconds or an
    HTTP date; None when absent or unreadable, never negative.

    >>> retry_after_s("7"), retry_after_s("soon"), retry_after_s(None)
    (7.0, None, None)
    >>> retry_after_s("Wed, 21 Oct 2026 07:28:30 GMT", datetime(2026, 10, 21, 7, 28, tzinfo=UTC))
    30.0
    """
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def check_backoff_bounds(first_s: float, cap_s: float, first_key: str, cap_key: str) -> None:
    """Raise ValueError (which the config loader reports with file, line and key) when the first
    wait exceeds the cap.

    >>> check_backoff_bounds(5.0, 1.0, "retry_initial_s", "retry_max_s")
    Traceback (most recent call last):
    ...
    ValueError: retry_initial_s 5.0 must not exceed retry_max_s 1.0
    """
    if first_s > cap_s:
        raise ValueError(f"{first_key} {first_s} must not exceed {cap_key} {cap_s}")
