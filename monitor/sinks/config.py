"""The ``sinks:`` section of the site file: optional outputs besides the always-on SQLite store."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["InfluxConfig", "MqttConfig", "SinksConfig", "WebhookConfig"]


class InfluxConfig(BaseModel):
    """InfluxDB v2 write API target (InfluxDB 2.x/3.x, or anything speaking ``/api/v2/write``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://")
    org: str = "monitor"
    bucket: str = "cnc"
    token: str = ""
    batch_size: int = Field(default=1000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)


class MqttConfig(BaseModel):
    """MQTT broker that receives alert state changes and per-machine status."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    prefix: str = "monitor"
    username: str | None = None
    password: str | None = None
    queue_size: int = Field(default=10_000, ge=1)


class WebhookConfig(BaseModel):
    """One HTTP endpoint that receives alert state changes as signed JSON."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://")
    secret: str | None = None
    timeout_s: float = Field(default=5.0, gt=0)


class SinksConfig(BaseModel):
    """All optional outputs; absent means not used."""

    model_config = ConfigDict(extra="forbid")

    influx: InfluxConfig | None = None
    mqtt: MqttConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)
