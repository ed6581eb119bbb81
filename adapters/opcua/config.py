"""Site-file settings of an OPC UA source and of one OPC UA signal (validated by pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OpcUaSignal", "OpcUaSource"]


class OpcUaSource(BaseModel):
    """How to reach one OPC UA server: ``source: {type: opcua, endpoint: ...}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port[/path]")
    publishing_interval_ms: float = Field(default=500.0, gt=0)
    sampling_interval_ms: float = Field(default=100.0, ge=0)
    queue_size: int = Field(default=50, ge=1)
    stale_after_s: float = Field(default=30.0, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)


class OpcUaSignal(BaseModel):
    """One signal mapped with options; a plain string is a NodeId or browse path with defaults."""

    model_config = ConfigDict(extra="forbid")

    node: str
    sampling_interval_ms: float | None = Field(default=None, ge=0)
    queue_size: int | None = Field(default=None, ge=1)
    deadband: float | None = Field(default=None, ge=0)
