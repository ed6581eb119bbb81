"""The replay source's settings (:class:`ReplaySource`), apart from its adapter
(:mod:`adapters.replay`): the site file's validation reads them, and the adapter's asyncio machinery
is for the daemon (``monitor parts`` and the other commands that read the site start without it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ReplaySource"]


class ReplaySource(BaseModel):
    """Observations read from a JSON-lines file: for tests, demos and re-running a recorded day."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    type: Literal["replay"] = Field(description="replay: observations from a JSON-lines file")
    path: Path = Field(description="the file, relative to the site file; one {signal, time, value} object per line")
    speed: float = Field(default=0.0, ge=0, description="time compression of the replay; 0 = as fast as possible")

    @classmethod
    def for_url(cls, url: str, **options: Any) -> Self:
        """A replay of the file at ``file://...`` or a plain path."""
        return cls.model_validate({**options, "type": "replay", "path": url.removeprefix("file://")})
