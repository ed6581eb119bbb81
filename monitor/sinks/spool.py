"""The on-disk spool of a sink: events that could not be written yet, kept in order across restarts.

A spool is a folder of segment files ``seg-<number>.jsonl``, one JSON object per line in the
format of :mod:`monitor.codec`. Segments are numbered in write order; the lowest number is the
oldest. The newest segment (the *tail*) takes appends until it holds ``segment_events`` events,
then a new one starts, so one segment is at most one write batch: the writer takes a whole
segment, writes it and deletes the file only after the sink accepted it. A crash between the
write and the delete replays that one batch; sinks with explicit timestamps (InfluxDB) make that
replay an overwrite, not a duplicate.

Every method does blocking file I/O (an ``fsync`` per append) and is meant to run in a worker
thread (``asyncio.to_thread``); the caller serialises calls. Batches a sink refused for good are
appended to ``rejected.jsonl`` beside the segments, with the server's message, for a person to
look at; they are never retried.

>>> import tempfile
>>> from datetime import datetime, timezone
>>> from monitor.model import Observation
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> with tempfile.TemporaryDirectory() as d:
...     spool = Spool(Path(d), segment_events=2)
...     kept = spool.append([Observation("m1", "spindle.load", t, float(i)) for i in range(3)])
...     first = spool.take_head()
...     kept, [e.value for e in first.events], spool.pending_events
(3, [0.0, 1.0], 3)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.codec import event_from_dict, event_to_dict
from monitor.model import Alert, Observation, PartRecord

__all__ = ["REJECTED_FILE", "Segment", "Spool"]

log = logging.getLogger(__name__)

REJECTED_FILE = "rejected.jsonl"
"""Name of the file, inside the spool folder, that keeps batches a sink refused for good."""

_PREFIX = "seg-"
_SUFFIX = ".jsonl"
_FIRST_NUMBER = 10**12
"""Segment numbers start high so that a batch can be put back *before* the oldest segment."""

Event = PartRecord | Alert | Observation


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment taken for writing: its file and the events it holds, in order."""

    path: Path
    number: int
    events: tuple[Event, ...]


def _name(number: int) -> str:
    return f"{_PREFIX}{number:020d}{_SUFFIX}"


def _number(path: Path) -> int | None:
    stem = path.name
    if not (stem.startswith(_PREFIX) and stem.endswith(_SUFFIX)):
        return None
    digits = stem[len(_PREFIX) : -len(_SUFFIX)]
    return int(digits) if digits.isdigit() else None


class Spool:
    """Ordered, crash-safe queue of events on disk, in segment files of at most ``segment_events``.

    Parameters
    ----------
    directory:
        Folder of the segments; created if missing. One folder per sink.
    segment_events:
        Events per segment, normally the sink's batch size, so a segment is one write.
    max_bytes:
        Upper bound of the folder's segments; :meth:`append` refuses (returns how many it kept)
        beyond it, and the caller counts the rest as dropped.
    """

    def __init__(self, directory: Path, *, segment_events: int = 500, max_bytes: int = 1 << 30) -> None:
        if segment_events < 1:
            raise ValueError("segment_events must be at least 1")
        self.directory = directory
        self.segment_events = segment_events
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: dict[int, int] = {}  # number -> events in it, oldest first
        self._bytes = 0
        self._pending = 0  # events in all segments; an int so other threads can read it safely
        self._tail_open = False  # may the newest segment take more appends?
        self.corrupt_lines = 0
        for path in sorted(directory.iterdir()):
            number = _number(path)
            if number is None:
                continue
            count = self._count_lines(path)
            if count == 0:
                path.unlink()
                continue
            self._segments[number] = count
            self._pending += count
            self._bytes += path.stat().st_size

    @staticmethod
    def _count_lines(path: Path) -> int:
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())

    # ------------------------------------------------------------------------------ reading state
    @property
    def pending_events(self) -> int:
        """Events on disk waiting to be written."""
        return self._pending

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    @property
    def segments(self) -> int:
        return len(self._segments)

    def __bool__(self) -> bool:
        return bool(self._segments)

    # ----------------------------------------------------------------------------------- writing
    def append(self, events: Sequence[Event]) -> int:
        """Add events after everything already spooled; fsync before returning.

        Returns how many were kept: fewer than given when the spool reached ``max_bytes``.
        """
        kept = 0
        index = 0
        while index < len(events):
            if self._bytes >= self.max_bytes:
                break
            number, room = self._tail_for_append()
            chunk = events[index : index + room]
            data = "".join(json.dumps(event_to_dict(e), separators=(",", ":")) + "\n" for e in chunk).encode()
            path = self.directory / _name(number)
            with path.open("ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if number not in self._segments:
                self._sync_dir()
            self._segments[number] = self._segments.get(number, 0) + len(chunk)
            self._pending += len(chunk)
            self._bytes += len(data)
            self._tail_open = self._segments[number] < self.segment_events
            kept += len(chunk)
            index += len(chunk)
        return kept

    def prepend(self, events: Sequence[Event]) -> None:
        """Put events back *before* every spooled one (a batch in flight when the sink closed)."""
        if not events:
            return
        number = (min(self._segments) if self._segments else _FIRST_NUMBER) - 1
        if number < 0:
            raise OSError("spool segment numbers exhausted; empty the spool folder")
        data = "".join(json.dumps(event_to_dict(e), separators=(",", ":")) + "\n" for e in events).encode()
        path = self.directory / _name(number)
        with path.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._sync_dir()
        self._segments = {number: len(events), **self._segments}
        self._pending += len(events)
        self._bytes += len(data)
        if len(self._segments) == 1:
            self._tail_open = False

    def _tail_for_append(self) -> tuple[int, int]:
        if self._segments:
            tail = max(self._segments)
            if self._tail_open and self._segments[tail] < self.segment_events:
                return tail, self.segment_events - self._segments[tail]
            return tail + 1, self.segment_events
        return _FIRST_NUMBER, self.segment_events

    # ----------------------------------------------------------------------------------- reading
    def take_head(self) -> Segment | None:
        """The oldest segment with its events; it stays on disk until :meth:`done` is called.

        The segment is sealed: later appends go to a new segment, so what was read is what
        :meth:`done` deletes.
        """
        if not self._segments:
            return None
        number = min(self._segments)
        if number == max(self._segments):
            self._tail_open = False
        path = self.directory / _name(number)
        events: list[Event] = []
        with path.open("rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    events.append(event_from_dict(json.loads(raw)))
                except (ValueError, KeyError, TypeError) as exc:
                    # A torn last line after a power loss, or a hand-edited file: keep going.
                    self.corrupt_lines += 1
                    log.warning("spool %s: skipping an unreadable line (%s)", path, exc)
        return Segment(path, number, tuple(events))

    def done(self, segment: Segment) -> None:
        """Delete a segment once the sink accepted its events."""
        try:
            size = segment.path.stat().st_size
            segment.path.unlink()
        except FileNotFoundError:
            size = 0
        self._pending -= self._segments.pop(segment.number, 0)
        self._bytes = max(0, self._bytes - size)
        if not self._segments:
            self._bytes = 0
            self._pending = 0

    def set_aside(self, events: Sequence[Event], reason: str) -> None:
        """Append a refused batch to ``rejected.jsonl`` with the reason, for a person to inspect."""
        stamp = datetime.now(UTC).isoformat()
        lines = "".join(
            json.dumps({"rejected_at": stamp, "reason": reason, "event": event_to_dict(e)}, separators=(",", ":")) + "\n"
            for e in events
        )
        with (self.directory / REJECTED_FILE).open("a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def rejected(self) -> list[dict[str, Any]]:
        """The set-aside entries, oldest first (for ``monitor`` commands and tests)."""
        path = self.directory / REJECTED_FILE
        if not path.exists():
            return []
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def _sync_dir(self) -> None:
        """Make a new file's directory entry durable, so a crash cannot lose a whole segment."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
