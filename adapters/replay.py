"""Replay source: observations recorded as JSON lines, fed to the daemon as if a machine sent them.

For tests of everything downstream of the adapters, for demos without a network, and for
re-running a recorded day through new detection settings. Lines are the codec's observation dicts
(``{"signal": ..., "time": ..., "value": ...}``); the machine id comes from the site config.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from adapters.base import Adapter, AdapterState, SourceSpec
from monitor.model import Observation

__all__ = ["ReplayAdapter", "ReplaySource"]


class ReplaySource(BaseModel):
    """Observations read from a JSON-lines file: for tests, demos and re-running a recorded day."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["replay"] = Field(description="replay: observations from a JSON-lines file")
    path: Path = Field(description="the file, relative to the site file; one {signal, time, value} object per line")
    speed: float = Field(default=0.0, ge=0, description="time compression of the replay; 0 = as fast as possible")

    @classmethod
    def for_url(cls, url: str, **options: Any) -> Self:
        """A replay of the file at ``file://...`` or a plain path."""
        return cls.model_validate({**options, "type": "replay", "path": url.removeprefix("file://")})


class ReplayAdapter(Adapter):
    """Reads a JSON-lines file of observations once; ``speed`` > 0 replays in compressed real time."""

    type_name = "replay"

    def __init__(self, machine: SourceSpec[ReplaySource, str], *, resume: Mapping[str, Any] | None = None) -> None:
        # ``resume`` is ignored: a replay is read from its first line each time
        super().__init__(machine.id)
        self.config = machine

    async def _run(self) -> None:
        lines = await asyncio.to_thread(self.config.source.path.read_text, encoding="utf-8")
        await self._set_state(AdapterState.CONNECTED)
        speed = self.config.source.speed
        previous: datetime | None = None
        for number, line in enumerate(lines.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                obs = Observation(self.machine, str(d["signal"]), datetime.fromisoformat(d["time"]), d.get("value"), d.get("seq"))
            except (ValueError, KeyError, TypeError) as exc:
                self.stats.count("bad_lines", message=f"{self.config.source.path}:{number}: skipped bad line ({exc})")
                continue
            if speed and previous is not None:
                await asyncio.sleep(max(0.0, (obs.time - previous).total_seconds() / speed))
            previous = obs.time
            await self._emit(obs)
        self.stats.count("replay_finished")
