"""The MQTT sink: alert state changes and a retained status per machine, published to a broker.

Topics (``docs/notifications.md``), every level after the prefix made safe by
:func:`~monitor.sinks.payload.topic_level`:

- ``<prefix>/<site>/<machine>/alerts/<feature>``: one message per alert change (QoS 1, not
  retained), the JSON of :func:`~monitor.sinks.payload.alert_payload`;
- ``<prefix>/<site>/<machine>/status``: retained, QoS 1; the machine's connection state, current
  program, last part and open alerts, republished whenever one of them changes;
- ``<prefix>/<site>/online``: retained ``true`` while the daemon is connected, ``false`` when it
  stops or (as the broker's last will) when it vanishes.

The sink itself only connects and publishes; the :class:`~monitor.sinks.base.RunningSink` that
:meth:`~monitor.sinks.base.RunningSink.for_output` wraps it in owns the bounded queue, the reconnect backoff and the drop
counter. A write that cannot reach the broker raises a retryable :class:`SinkError`, closes the
client, and the next attempt connects afresh, so the batch and everything queued behind it go out,
in order, once the broker is back. Delivery is at least once: a batch interrupted half-way is
published again in full (receivers de-duplicate on the alert's ``id``, ``state`` and ``time``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiomqtt

from monitor.errors import SinkError
from monitor.model import CONNECTION_SIGNAL, Alert, AlertState, Observation, PartRecord, Severity
from monitor.sinks.base import SinkContext, SinkEvent
from monitor.sinks.config import MqttConfig
from monitor.sinks.payload import alert_payload, encode_payload, topic_level

__all__ = ["STATUS_SCHEMA", "MqttFilter", "MqttSink", "RetainedStatus"]

log = logging.getLogger(__name__)

STATUS_SCHEMA = "monitor.status/1"
_PROGRAM_SIGNAL = "program.name"
_CLOSE_TIMEOUT_S = 2.0


class MqttFilter:
    """What the MQTT sink is offered but does not need stays out of its queue.

    Alerts and part records pass; of raw observations only connection changes and program-name
    changes pass (a 100 Hz spindle load would otherwise fill the queue meant for alerts).
    """

    def __init__(self) -> None:
        self._program: dict[str, object] = {}

    def __call__(self, event: SinkEvent) -> bool:
        if not isinstance(event, Observation):
            return True
        if event.signal == CONNECTION_SIGNAL:
            return True
        if event.signal == _PROGRAM_SIGNAL:
            changed = self._program.get(event.machine, object()) != event.value
            self._program[event.machine] = event.value
            return changed
        return False


@dataclass
class RetainedStatus:
    """What the retained status topic of one machine says, built from the events seen."""

    machine: str
    connection: str | None = None
    program: str | None = None
    last_part: dict[str, Any] | None = None
    open_alerts: dict[str, Severity] = field(default_factory=dict)
    updated: str | None = None

    def apply(self, event: SinkEvent) -> bool:
        """Take one event into account; True when the published status would change (O(1) per event)."""
        changed = False
        if isinstance(event, Alert):
            if event.state is AlertState.CLOSED:
                changed = self.open_alerts.pop(event.id, None) is not None
            elif self.open_alerts.get(event.id) is not event.severity:
                self.open_alerts[event.id] = event.severity
                changed = True
            if event.program and event.program != self.program:
                self.program = event.program
                changed = True
            when = event.time
        elif isinstance(event, PartRecord):
            last = {"part_number": event.part_number, "status": str(event.status), "end": event.end.isoformat(), "key": event.key}
            changed = last != self.last_part or event.program != self.program
            self.program, self.last_part = event.program, last
            when = event.end
        else:
            value = None if event.value is None else str(event.value)
            if event.signal == CONNECTION_SIGNAL and value != self.connection:
                self.connection, changed = value, True
            elif event.signal == _PROGRAM_SIGNAL and value != self.program:
                self.program, changed = value, True
            when = event.time
        if changed:
            self.updated = when.isoformat()
        return changed

    def document(self, site: str) -> dict[str, Any]:
        by_severity = {s.value: 0 for s in Severity}
        for severity in self.open_alerts.values():
            by_severity[severity.value] += 1
        return {
            "schema": STATUS_SCHEMA,
            "site": site,
            "machine": self.machine,
            "connection": self.connection,
            "program": self.program,
            "last_part": self.last_part,
            "open_alerts": len(self.open_alerts),
            "open_alerts_by_severity": by_severity,
            "updated": self.updated,
        }


class MqttSink:
    """Publishes alert changes and machine status to one broker (see the module docstring).

    Parameters
    ----------
    config:
        The site's ``sinks.mqtt`` section.
    site:
        The site name, second topic level and ``site`` field of every payload.
    open_alerts:
        The alerts open when the daemon started (the core reads them from the store before the
        sinks are built), so the status topic counts alerts opened before a restart.
    """

    def __init__(
        self,
        config: MqttConfig,
        site: str,
        *,
        open_alerts: Iterable[Alert] = (),
        name: str = "mqtt",
    ) -> None:
        self.name = name
        self.config = config
        self.site = site
        self._base = f"{config.prefix.rstrip('/')}/{topic_level(site)}"
        self._status: dict[str, RetainedStatus] = {}
        for alert in open_alerts:
            if alert.state is not AlertState.CLOSED:
                self._status.setdefault(alert.machine, RetainedStatus(alert.machine)).open_alerts[alert.id] = alert.severity
        self._filter = MqttFilter()
        self._client: aiomqtt.Client | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: MqttConfig, context: SinkContext) -> Self:
        """The sink the site's ``sinks.mqtt`` section describes."""
        return cls(config, context.site, open_alerts=context.open_alerts, name=context.name)

    def admits(self, event: SinkEvent) -> bool:
        """Alerts, parts, connection and program changes (see :class:`MqttFilter`)."""
        return self._filter(event)

    # --------------------------------------------------------------------------------- topics
    def alert_topic(self, machine: str, feature: str) -> str:
        return f"{self._base}/{topic_level(machine)}/alerts/{topic_level(feature)}"

    def status_topic(self, machine: str) -> str:
        return f"{self._base}/{topic_level(machine)}/status"

    @property
    def online_topic(self) -> str:
        return f"{self._base}/online"

    @property
    def secrets(self) -> tuple[str, ...]:
        password = self.config.password
        return (password.get_secret_value(),) if password is not None else ()

    @property
    def where(self) -> str:
        c = self.config
        return f"unix:{c.socket_path}" if c.transport == "unix" else f"{c.host}:{c.port}"

    def __repr__(self) -> str:
        return f"MqttSink({self.where!r}, prefix={self._base!r})"

    # ------------------------------------------------------------------------------- encoding
    def messages(self, batch: Sequence[SinkEvent]) -> list[tuple[str, bytes, bool]]:
        """(topic, payload, retain) for a batch: every alert change, then each changed status."""
        out: list[tuple[str, bytes, bool]] = []
        changed: dict[str, None] = {}
        for event in batch:
            status = self._status.setdefault(event.machine, RetainedStatus(event.machine))
            if status.apply(event):
                changed[event.machine] = None
            if isinstance(event, Alert):
                out.append(
                    (self.alert_topic(event.machine, event.feature), encode_payload(alert_payload(event, self.site)), False)
                )
        for machine in changed:
            doc = self._status[machine].document(self.site)
            out.append((self.status_topic(machine), encode_payload(doc), True))
        return out

    # ------------------------------------------------------------------------------ lifecycle
    async def write(self, batch: Sequence[SinkEvent]) -> None:
        if self._closed:
            raise SinkError("mqtt sink is closed", retryable=False)
        messages = self.messages(batch)
        if not messages:
            return
        client = await self._connect()
        try:
            for topic, payload, retain in messages:
                await client.publish(topic, payload, qos=1, retain=retain, timeout=self.config.timeout_s)
        except aiomqtt.MqttError as exc:
            await self._disconnect()
            raise SinkError(f"mqtt broker {self.where}: publish failed: {exc}", retryable=True) from exc

    async def aclose(self) -> None:
        """Say ``online false`` (retained) and disconnect; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is not None:
            # Bounded: a broker that died unnoticed must not hold up the daemon's shutdown.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.online_topic, b"false", qos=1, retain=True, timeout=_CLOSE_TIMEOUT_S)
            await self._disconnect(_CLOSE_TIMEOUT_S)

    async def _connect(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        c = self.config
        if c.transport == "unix":
            await _probe_unix_socket(c.socket_path, self.where)
        client = aiomqtt.Client(
            str(c.socket_path) if c.transport == "unix" else c.host,
            c.port,
            transport=c.transport,
            username=c.username,
            password=c.password.get_secret_value() if c.password is not None else None,
            identifier=c.client_id,
            keepalive=c.keepalive_s,
            timeout=c.timeout_s,
            clean_session=True,
            will=aiomqtt.Will(self.online_topic, b"false", qos=1, retain=True),
            logger=log,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise SinkError(f"mqtt broker {self.where} unreachable: {exc}", retryable=True) from exc
        self._client = client
        log.info("mqtt: connected to %s", self.where)
        try:
            await client.publish(self.online_topic, b"true", qos=1, retain=True, timeout=c.timeout_s)
        except aiomqtt.MqttError as exc:
            await self._disconnect()
            raise SinkError(f"mqtt broker {self.where}: publish failed: {exc}", retryable=True) from exc
        return client

    async def _disconnect(self, timeout_s: float | None = None) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(timeout_s or self.config.timeout_s):
                await client.__aexit__(None, None, None)


async def _probe_unix_socket(path: Path | None, where: str) -> None:
    """Fail fast, without leaking a socket, when no broker listens at ``path``.

    paho-mqtt 2.x opens a Unix socket and does not close it when ``connect`` fails (its TCP path
    uses ``socket.create_connection``, which does), so every attempt against a stopped broker would
    leave a socket to the garbage collector. Probing first with a socket we close ourselves keeps
    reconnect attempts clean; a broker vanishing between probe and connect is a rare leak, not an error.
    """
    assert path is not None

    def probe() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(path))

    try:
        await asyncio.to_thread(probe)
    except OSError as exc:
        raise SinkError(f"mqtt broker {where} unreachable: {exc.strerror or exc}", retryable=True) from exc
