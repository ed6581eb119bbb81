"""Replay source: observations recorded as JSON lines, fed to the daemon as if a machine sent them.

For tests of everything downstream of the adapters, for demos without a network, and for
re-running a recorded day through new detection settings. Lines are the codec's observation dicts
(``{"signal": ..., "time": ..., "value": ...}``); the machine id comes from the site config.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters.base import Adapter, AdapterState, SourceSpec
from adapters.replay_config import ReplaySource
from monitor.model import Observation

__all__ = ["ReplayAdapter", "ReplaySource"]

_CHUNK = 1 << 16


class ReplayAdapter(Adapter):
    """Reads a JSON-lines file of observations once; ``speed`` > 0 replays in compressed real time."""

    type_name = "replay"

    def __init__(self, machine: SourceSpec[ReplaySource, str], *, resume: Mapping[str, Any] | None = None) -> None:
        # ``resume`` is ignored: a replay is read from its first line each time
        super().__init__(machine.id)
        self.config = machine

    async def _run(self) -> None:
        """Read the file as it comes (a FIFO or a file still being written works too), one line at a time."""
        stream = await _open(self.config.source.path)
        try:
            await self._set_state(AdapterState.CONNECTED)
            number = 0
            pending = b""
            previous: datetime | None = None
            while True:
                chunk = await asyncio.to_thread(stream.read1, _CHUNK)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    number += 1
                    previous = await self._line(raw, number, previous)
            if pending.strip():
                await self._line(pending, number + 1, previous)
        except BaseException:
            # a read may still be in flight in its thread (a FIFO nobody writes): close after it, off the loop
            asyncio.get_running_loop().run_in_executor(None, stream.close)
            raise
        stream.close()
        self.stats.count("replay_finished")

    async def _line(self, raw: bytes, number: int, previous: datetime | None) -> datetime | None:
        """Emit one line's observation (paced when ``speed`` is set); a bad line is counted and skipped.
        Bytes that are not UTF-8 are not a bad line but a wrong file: that ends the source."""
        line = raw.decode("utf-8")
        if not line.strip():
            return previous
        try:
            d = json.loads(line)
            obs = Observation(self.machine, str(d["signal"]), datetime.fromisoformat(d["time"]), d.get("value"), d.get("seq"))
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.count("bad_lines", message=f"{self.config.source.path}:{number}: skipped bad line ({exc})")
            return previous
        speed = self.config.source.speed
        if speed and previous is not None:
            await asyncio.sleep(max(0.0, (obs.time - previous).total_seconds() / speed))
        await self._emit(obs)
        return obs.time


async def _open(path: Path) -> io.BufferedReader:
    """Open ``path`` off the loop. Opening a FIFO waits for its writer: if we are cancelled meanwhile,
    the file the thread opens later is closed then, not left to the garbage collector."""
    opening = asyncio.get_running_loop().run_in_executor(None, path.open, "rb")
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


def _close_opened(opening: asyncio.Future[io.BufferedReader]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()
