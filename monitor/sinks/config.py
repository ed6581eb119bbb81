"""The ``sinks:`` section of the site file: optional outputs besides the always-on SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["InfluxConfig", "MqttConfig", "RawSignalConfig", "SinksConfig", "WebhookConfig"]


class RawSignalConfig(BaseModel):
    """How one raw signal is written to InfluxDB (measurement ``signal``).

    ``off`` writes nothing; ``change`` writes every update whose value differs from the previous
    one of that machine and signal; ``downsample`` writes at most one point per ``interval_s``
    per machine and signal: the first update in each interval (aligned to the epoch), so a
    spindle load sampled at 100 Hz can be kept at 1 Hz.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "change", "downsample"] = "change"
    interval_s: float | None = Field(default=None, gt=0, description="bucket width for mode downsample, seconds")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        # YAML 1.1 reads an unquoted ``off`` as False; accept it as the mode it was meant to be.
        return "off" if v is False else v

    @model_validator(mode="after")
    def _interval_matches_mode(self) -> RawSignalConfig:
        if self.mode == "downsample" and self.interval_s is None:
            raise ValueError("mode downsample needs interval_s (seconds), e.g. {mode: downsample, interval_s: 1.0}")
        if self.mode != "downsample" and self.interval_s is not None:
            raise ValueError(f"interval_s only applies to mode downsample (mode is {self.mode})")
        return self


class InfluxConfig(BaseModel):
    """InfluxDB v2 write API target (InfluxDB 2.x/3.x, or anything speaking ``/api/v2/write``).

    The point schema written is documented in ``docs/influx.md``.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="base URL of the server, e.g. http://influx:8086")
    org: str = Field(default="monitor", description="organisation that owns the bucket")
    bucket: str = Field(default="cnc", description="bucket the points go to")
    token: SecretStr = Field(
        default=SecretStr(""), description="API token with write access; write ${INFLUX_TOKEN}, never the token itself"
    )
    batch_size: int = Field(default=1000, ge=1, description="points per write request, and per spool segment")
    flush_interval_s: float = Field(default=1.0, gt=0, description="longest a point waits for its batch to fill")
    buffer_size: int = Field(default=10_000, ge=1, description="points held in memory at most")
    timeout_s: float = Field(default=10.0, gt=0, description="limit for one write request")
    verify_ssl: bool = Field(default=True, description="check the server's TLS certificate (https URLs)")
    write_parts: bool = Field(default=True, description="write one point per part record (measurement part)")
    write_alerts: bool = Field(default=True, description="write one point per alert state change (measurement alert)")
    signals: dict[str, RawSignalConfig] = Field(
        default_factory=dict,
        description="raw signals to write (measurement signal), by canonical name; unlisted signals are not written",
    )
    spool_dir: Path | None = Field(
        default=Path("spool/influx"),
        description="on-disk spool for outages and daemon restarts, relative to the site file; null disables it",
    )
    spool_max_mb: float = Field(default=1024.0, gt=0, description="spool folder bound; beyond it points drop")
    retry_initial_s: float = Field(default=0.5, gt=0, description="first retry delay; doubles per failure, with jitter")
    retry_max_s: float = Field(default=30.0, gt=0, description="longest retry delay (Retry-After may ask more)")

    @model_validator(mode="after")
    def _retry_bounds(self) -> InfluxConfig:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError(f"retry_initial_s {self.retry_initial_s} must not exceed retry_max_s {self.retry_max_s}")
        return self


class MqttConfig(BaseModel):
    """MQTT broker that receives alert state changes and a retained status per machine.

    Topics and payload are documented in ``docs/notifications.md``. Messages wait in a bounded
    queue (``queue_size``) while the broker is away and are published, oldest first, when it
    returns; overflow is counted as dropped in the sink's status.
    """

    model_config = ConfigDict(extra="forbid")

    transport: Literal["tcp", "unix"] = Field(
        default="tcp", description="tcp: host and port; unix: a broker on this machine at socket_path"
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="broker host name or address (transport tcp)")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port (transport tcp)")
    socket_path: Path | None = Field(default=None, description="Unix domain socket of the broker (transport unix)")
    prefix: str = Field(default="monitor", min_length=1, description="first topic level: <prefix>/<site>/<machine>/...")
    client_id: str | None = Field(default=None, description="MQTT client identifier; default: a random one per connection")
    username: str | None = Field(default=None, description="user name, if the broker wants one")
    password: SecretStr | None = Field(default=None, description="password; write ${MQTT_PASSWORD}, never the password")
    keepalive_s: int = Field(default=30, ge=5, description="MQTT keep-alive; a dead broker is noticed within ~1.5x this")
    timeout_s: float = Field(default=10.0, gt=0, description="limit for connecting and for one publish acknowledgement")
    queue_size: int = Field(default=10_000, ge=1, description="messages held while the broker is away; beyond it they drop")
    batch_size: int = Field(default=100, ge=1, description="events published per write")
    spool_dir: Path | None = Field(
        default=None, description="optional on-disk spool (relative to the site file) so a daemon restart keeps the queue"
    )
    retry_initial_s: float = Field(default=0.5, gt=0, description="first reconnect delay; doubles per failure, with jitter")
    retry_max_s: float = Field(default=30.0, gt=0, description="longest reconnect delay")

    @model_validator(mode="after")
    def _transport_fields(self) -> MqttConfig:
        if self.transport == "unix" and self.socket_path is None:
            raise ValueError("transport unix needs socket_path, e.g. socket_path: /run/mosquitto/mqtt.sock")
        if self.transport == "tcp" and self.socket_path is not None:
            raise ValueError("socket_path only applies to transport unix")
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError(f"retry_initial_s {self.retry_initial_s} must not exceed retry_max_s {self.retry_max_s}")
        return self


class WebhookConfig(BaseModel):
    """One HTTP endpoint that receives every alert state change as signed JSON (one POST per change).

    Payload, headers and how to verify the signature: ``docs/notifications.md``.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="where the JSON is POSTed")
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for the X-Monitor-Signature header; write ${WEBHOOK_SECRET}"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (e.g. an API key name)")
    timeout_s: float = Field(default=5.0, gt=0, description="limit for one POST, connect to response")
    verify_ssl: bool = Field(default=True, description="check the server's TLS certificate (https URLs)")
    queue_size: int = Field(default=1000, ge=1, description="alert changes held while the endpoint fails; beyond it they drop")
    spool_dir: Path | None = Field(
        default=None, description="optional on-disk spool (relative to the site file) so a daemon restart keeps the queue"
    )
    retry_initial_s: float = Field(default=1.0, gt=0, description="first retry delay; doubles per failure, with jitter")
    retry_max_s: float = Field(default=60.0, gt=0, description="longest retry delay (Retry-After may ask more)")

    @model_validator(mode="after")
    def _retry_bounds(self) -> WebhookConfig:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError(f"retry_initial_s {self.retry_initial_s} must not exceed retry_max_s {self.retry_max_s}")
        return self


class SinksConfig(BaseModel):
    """All optional outputs; absent means not used."""

    model_config = ConfigDict(extra="forbid")

    influx: InfluxConfig | None = None
    mqtt: MqttConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)
