"""The ``sinks:`` section of the site file: optional outputs besides the always-on SQLite store.

Every output's section derives from :class:`OutputConfig`: the same names for what
:class:`~monitor.sinks.base.RunningSink` does for all of them (``queue_size``, ``spool_dir``,
``retry_initial_s``/``retry_max_s``), checked once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from monitor.retry import Backoff, check_backoff_bounds

__all__ = ["InfluxConfig", "MqttConfig", "OutputConfig", "RawSignalConfig", "SinksConfig", "WebhookConfig"]


class OutputConfig(BaseModel):
    """What every output has: a bounded queue in memory, an optional spool on disk, retry waits."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    kind: ClassVar[str] = ""
    """The output type the plugin registry builds for this section (influx, mqtt, webhook)."""

    queue_size: int = Field(default=10_000, ge=1, description="events held in memory at most; beyond it they drop")
    spool_dir: Path | None = Field(
        default=None, description="optional on-disk spool (relative to the site file) so a daemon restart keeps the queue"
    )
    retry_initial_s: float = Field(default=0.5, gt=0, description="first retry delay; doubles per failure, with jitter")
    retry_max_s: float = Field(default=30.0, gt=0, description="longest retry delay (Retry-After may ask more)")

    @model_validator(mode="after")
    def _retry_bounds(self) -> OutputConfig:
        check_backoff_bounds(self.retry_initial_s, self.retry_max_s, "retry_initial_s", "retry_max_s")
        return self

    def backoff(self) -> Backoff:
        """The waits between retries of this output."""
        return Backoff(initial_s=self.retry_initial_s, max_s=self.retry_max_s)

    def spool_path(self, base_dir: Path) -> Path | None:
        """The spool folder, a relative ``spool_dir`` taken from the site file's folder."""
        if self.spool_dir is None or self.spool_dir.is_absolute():
            return self.spool_dir
        return base_dir / self.spool_dir

    def batch_events(self) -> int:
        """Events per write (and per spool segment); one unless the output batches."""
        return 1

    def flush_after_s(self) -> float:
        """Longest an event waits in memory for its batch to fill."""
        return 0.05

    def spool_bytes(self) -> int:
        """Bound of the spool folder."""
        return 1 << 30


class RawSignalConfig(BaseModel):
    """How one raw signal is written to InfluxDB (measurement ``signal``).

    ``off`` writes nothing; ``change`` writes every update whose value differs from the previous
    one of that machine and signal; ``downsample`` writes at most one point per ``interval_s``
    per machine and signal: the first update in each interval (aligned to the epoch), so a
    spindle load sampled at 100 Hz can be kept at 1 Hz.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

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


class InfluxConfig(OutputConfig):
    """InfluxDB v2 write API target (InfluxDB 2.x/3.x, or anything speaking ``/api/v2/write``).

    The point schema written is documented in ``docs/influx.md``.
    """

    kind: ClassVar[str] = "influx"

    url: str = Field(pattern=r"^https?://", description="base URL of the server, e.g. http://influx:8086")
    org: str = Field(default="monitor", description="organisation that owns the bucket")
    bucket: str = Field(default="cnc", description="bucket the points go to")
    token: SecretStr = Field(
        default=SecretStr(""), description="API token with write access; write ${INFLUX_TOKEN}, never the token itself"
    )
    batch_size: int = Field(default=1000, ge=1, description="points per write request, and per spool segment")
    flush_interval_s: float = Field(default=1.0, gt=0, description="longest a point waits for its batch to fill")
    queue_size: int = Field(
        default=10_000,
        ge=1,
        validation_alias=AliasChoices("queue_size", "buffer_size"),
        description="points held in memory at most (buffer_size, its former name, is still read)",
    )
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

    def batch_events(self) -> int:
        return self.batch_size

    def flush_after_s(self) -> float:
        return self.flush_interval_s

    def spool_bytes(self) -> int:
        return int(self.spool_max_mb * 1024 * 1024)


class MqttConfig(OutputConfig):
    """MQTT broker that receives alert state changes and a retained status per machine.

    Topics and payload are documented in ``docs/notifications.md``. Messages wait in a bounded
    queue (``queue_size``) while the broker is away and are published, oldest first, when it
    returns; overflow is counted as dropped in the sink's status.
    """

    kind: ClassVar[str] = "mqtt"

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
    retry_initial_s: float = Field(default=0.5, gt=0, description="first reconnect delay; doubles per failure, with jitter")
    retry_max_s: float = Field(default=30.0, gt=0, description="longest reconnect delay")

    @model_validator(mode="after")
    def _transport_fields(self) -> MqttConfig:
        if self.transport == "unix" and self.socket_path is None:
            raise ValueError("transport unix needs socket_path, e.g. socket_path: /run/mosquitto/mqtt.sock")
        if self.transport == "tcp" and self.socket_path is not None:
            raise ValueError("socket_path only applies to transport unix")
        return self

    def batch_events(self) -> int:
        return self.batch_size


class WebhookConfig(OutputConfig):
    """One HTTP endpoint that receives every alert state change as signed JSON (one POST per change).

    Payload, headers and how to verify the signature: ``docs/notifications.md``.
    """

    kind: ClassVar[str] = "webhook"

    url: str = Field(pattern=r"^https?://", description="where the JSON is POSTed")
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for the X-Monitor-Signature header; write ${WEBHOOK_SECRET}"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (e.g. an API key name)")
    timeout_s: float = Field(default=5.0, gt=0, description="limit for one POST, connect to response")
    verify_ssl: bool = Field(default=True, description="check the server's TLS certificate (https URLs)")
    queue_size: int = Field(default=1000, ge=1, description="alert changes held while the endpoint fails; beyond it they drop")
    retry_initial_s: float = Field(default=1.0, gt=0, description="first retry delay; doubles per failure, with jitter")
    retry_max_s: float = Field(default=60.0, gt=0, description="longest retry delay (Retry-After may ask more)")


class SinksConfig(BaseModel):
    """All optional outputs; absent means not used."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    influx: InfluxConfig | None = None
    mqtt: MqttConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)

    def outputs(self) -> Iterator[tuple[str, OutputConfig]]:
        """Every configured output with its name, in a fixed order: influx, mqtt, webhook-1, webhook-2..."""
        if self.influx is not None:
            yield "influx", self.influx
        if self.mqtt is not None:
            yield "mqtt", self.mqtt
        for i, hook in enumerate(self.webhooks, start=1):
            yield f"webhook-{i}", hook
