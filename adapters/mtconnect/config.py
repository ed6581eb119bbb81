"""Site-file settings of an MTConnect source and of one MTConnect signal (validated by pydantic)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from monitor.retry import check_backoff_bounds

__all__ = ["MtConnectAddress", "MtConnectSignal", "MtConnectSource"]


class MtConnectSource(BaseModel):
    """How to reach one MTConnect agent: ``source: {type: mtconnect, url: ..., device: ...}``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: Literal["mtconnect"]
    url: str = Field(pattern=r"^https?://", description="http://host:port of the agent")
    device: str | None = Field(default=None, description="device name or uuid; needed when the agent serves several")
    interval_ms: int = Field(default=500, ge=0, description="streaming interval; also the polling period")
    heartbeat_ms: int = Field(default=10_000, gt=0, description="a stream silent for 2 heartbeats is dead")
    count: int = Field(default=1000, ge=1, description="observations per /sample document")
    streaming: bool = Field(default=True, description="false: poll /sample instead of streaming")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="first reconnect delay (doubles, jittered)")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="cap of the reconnect delay")
    parse_in_thread_bytes: int = Field(default=64 * 1024, ge=0, description="larger documents parse off the loop")
    max_document_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="larger answers are refused as soon as they pass this size"
    )
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="each request (probe, current, a polled sample, the start of a stream) must answer completely "
        "within this; stream parts within 2 heartbeats + 1 s",
    )

    @classmethod
    def for_url(cls, url: str, **options: Any) -> Self:
        """Settings for the agent at ``url`` (``monitor discover``; ``device`` among the options)."""
        return cls.model_validate({**options, "type": "mtconnect", "url": url})

    @model_validator(mode="after")
    def _reconnect_bounds(self) -> MtConnectSource:
        check_backoff_bounds(self.reconnect_min_s, self.reconnect_max_s, "reconnect_min_s", "reconnect_max_s")
        return self


class MtConnectSignal(BaseModel):
    """One data item chosen by id, by name, or by type (+ subType) within a component."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str | None = Field(default=None, description="data item id (exact)")
    name: str | None = Field(default=None, description="data item name")
    type: str | None = Field(default=None, description="data item type, e.g. LOAD, PART_COUNT")
    subType: str | None = Field(default=None, description="data item subType, e.g. ACTUAL")  # noqa: N815
    component: str | None = Field(default=None, description="component id, name, type or Type[name] label")
    key: str | None = Field(
        default=None,
        description="one key of a DATA_SET or TABLE item; for an ASSET_CHANGED item, the ToolLife type",
    )

    @model_validator(mode="after")
    def _one_selector(self) -> MtConnectSignal:
        if not (self.id or self.name or self.type):
            raise ValueError("give one of id, name or type to choose the data item")
        return self


def _address_kind(v: Any) -> str:
    return "str" if isinstance(v, str) else "spec"


MtConnectAddress = Annotated[Annotated[str, Tag("str")] | Annotated[MtConnectSignal, Tag("spec")], Discriminator(_address_kind)]
"""One ``signals:`` entry of an MTConnect machine: a data item id, or :class:`MtConnectSignal` with a selector."""
