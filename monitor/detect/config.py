"""The ``detection:`` section of a part-program file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DetectionConfig"]


class DetectionConfig(BaseModel):
    """Detection settings of one part program; every key has a default suited to small batches."""

    model_config = ConfigDict(extra="forbid")

    arl0: float = Field(default=500.0, gt=1, description="target in-control average run length, in parts")
