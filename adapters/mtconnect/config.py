"""Site-file settings of an MTConnect source and of one MTConnect signal (validated by pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MtConnectSignal", "MtConnectSource"]


class MtConnectSource(BaseModel):
    """How to reach one MTConnect agent: ``source: {type: mtconnect, url: ..., device: ...}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mtconnect"]
    url: str = Field(pattern=r"^https?://", description="http://host:port of the agent")
    device: str | None = None
    interval_ms: int = Field(default=500, ge=0)
    heartbeat_ms: int = Field(default=10_000, gt=0)
    count: int = Field(default=1000, ge=1)
    reconnect_max_s: float = Field(default=30.0, gt=0)


class MtConnectSignal(BaseModel):
    """One data item chosen by id, by name, or by type (+ subType) within a component."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str | None = None
    type: str | None = None
    subType: str | None = None  # noqa: N815 - MTConnect's own spelling
    component: str | None = None
    key: str | None = Field(default=None, description="one key of a DATA_SET or TABLE item")

    @model_validator(mode="after")
    def _one_selector(self) -> MtConnectSignal:
        if not (self.id or self.name or self.type):
            raise ValueError("give one of id, name or type to choose the data item")
        return self
