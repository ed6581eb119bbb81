"""The OPC UA adapter: one machine's server turned into a stream of canonical observations.

Per connection the adapter opens a *fresh* asyncua client (a session that survived a lost
socket is not trusted), resolves every mapped address again (a restarted server may renumber
its namespaces and nodes), creates one subscription with a monitored item per signal, and pumps
the notifications into the base's bounded queue. It owns the whole lifecycle:

* connect failures and lost connections are retried with exponential, jittered backoff; each
  error kind is logged once, each state change is one log line;
* after every reconnect a ``source.gap`` observation says changes may have been missed;
* a watchdog reconnects when the session looks alive but neither data nor keep-alive arrived
  for ``stale_after_s``;
* a value repeated after a reconnect (same value, same source timestamp) is not emitted twice;
* a bad status code becomes ``None`` (UNAVAILABLE), logged once per status and signal;
* refusals only a person can fix (untrusted server certificate, wrong password) end the
  adapter with a :class:`~monitor.errors.ConnectError` that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription

from adapters.base import Adapter, AdapterState, SourceSpec
from adapters.opcua.addressing import Address, format_nodeid, parse_address, resolve
from adapters.opcua.config import OpcUaAddress, OpcUaSignal, OpcUaSource
from adapters.opcua.session import TransientConnectError, close_quietly, open_client
from monitor.errors import ConfigError, ConfigIssue
from monitor.model import Observation, Value
from monitor.retry import Backoff

__all__ = ["OpcUaAdapter", "SignalPlan", "queue_size_warnings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignalPlan:
    """One canonical signal and how to monitor it, with the source's defaults filled in."""

    signal: str
    address: Address
    sampling_interval_ms: float
    queue_size: int
    deadband: float | None
    deadband_type: str


def _plans(machine: SourceSpec[OpcUaSource, OpcUaAddress]) -> list[SignalPlan]:
    src = machine.source
    plans: list[SignalPlan] = []
    issues: list[ConfigIssue] = []
    for signal, spec in machine.signals.items():
        s = spec if isinstance(spec, OpcUaSignal) else OpcUaSignal(node=spec)
        try:
            address = parse_address(s.node)
        except ValueError as exc:
            issues.append(ConfigIssue("<site>", None, f"machines[{machine.id}].signals.{signal}", str(exc)))
            continue
        plans.append(
            SignalPlan(
                signal,
                address,
                src.sampling_interval_ms if s.sampling_interval_ms is None else s.sampling_interval_ms,
                src.queue_size if s.queue_size is None else s.queue_size,
                s.deadband,
                s.deadband_type,
            )
        )
    if issues:
        raise ConfigError(issues)
    return plans


def queue_size_warnings(source: OpcUaSource, plans: list[SignalPlan]) -> list[str]:
    """Signals whose server queue cannot hold every sample taken between two publishes.

    A monitored item samples every ``sampling_interval_ms`` and the server sends its queue every
    ``publishing_interval_ms``; with a smaller queue the oldest changes are discarded on the
    server, where the client cannot count them.
    """
    out = []
    keepalive_s = source.publishing_interval_ms * source.keepalive_count / 1000
    if source.stale_after_s <= keepalive_s:
        out.append(
            f"stale_after_s {source.stale_after_s:g} <= publishing interval x keepalive_count = {keepalive_s:g} s; "
            "an idle but healthy server would look stale"
        )
    for p in plans:
        if p.sampling_interval_ms <= 0:
            continue
        needed = math.ceil(source.publishing_interval_ms / p.sampling_interval_ms)
        if p.queue_size < needed:
            out.append(
                f"{p.signal}: queue_size {p.queue_size} < publishing {source.publishing_interval_ms:g} ms / "
                f"sampling {p.sampling_interval_ms:g} ms = {needed}; changes between publishes can be lost"
            )
    return out


def _to_value(raw: Any) -> Value:
    if raw is None:
        return None
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        return raw
    if isinstance(raw, ua.LocalizedText):
        return raw.Text if raw.Text is not None else None
    if isinstance(raw, ua.QualifiedName):
        return str(raw.Name)
    return str(raw)


_BAD = 0x80000000
_UNCERTAIN = 0x40000000
"""Severity bits of a StatusCode: Bad (10) and Uncertain (01); Good is 00 (OPC 10000-4 §7.39)."""

_OVERFLOW_BITS = 0x0480
"""StatusCode InfoType=DataValue (0x400) with the Overflow bit (0x80), OPC 10000-4 §7.39."""


class _LostError(Exception):
    """Internal: the current session ended; the message says why."""


class OpcUaAdapter(Adapter):
    """Reads one machine over OPC UA; see the module docstring for the lifecycle."""

    type_name = "opcua"

    def __init__(
        self,
        machine: SourceSpec[OpcUaSource, OpcUaAddress],
        *,
        resume: Mapping[str, Any] | None = None,
        queue_size: int = 10_000,
        seed: int | None = None,
    ) -> None:
        # ``resume`` is ignored: a subscription delivers current values, there is no history to resume
        super().__init__(machine.id, queue_size=queue_size)
        self.source = machine.source
        self.plans = _plans(machine)
        self.warnings = queue_size_warnings(self.source, self.plans)
        for w in self.warnings:
            log.warning("%s: %s", machine.id, w)
        self.resolved: dict[str, str] = {}
        """Signal -> NodeId (with namespace URI) of the current connection, for diagnostics."""
        self.sessions = 0
        self._rng = random.Random(seed)
        self._client: Client | None = None
        self._last: dict[str, tuple[float | str, datetime]] = {}
        self._handles: dict[int, str] = {}
        self._last_rx = 0.0
        self._client_overflow = False
        self._lost_reason: str | None = None
        self._counts = self.stats.counts

    # ------------------------------------------------------------------------------ lifecycle
    def _backoff(self, attempt: int) -> float:
        """The wait before reconnect ``attempt`` (0-based): the one retry toolkit's jittered backoff."""
        return Backoff(self.source.reconnect_min_s, self.source.reconnect_max_s).delay(attempt, self._rng)

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                client = await open_client(self.source)
            except TransientConnectError as exc:
                self.stats.count(f"connect_failed:{type(exc.__cause__).__name__}", message=f"{self.machine}: {exc}")
                self.reason = str(exc)
                if self.state is AdapterState.CONNECTED:
                    await self._set_state(AdapterState.LOST, str(exc))
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            self._client = client
            try:
                reason = await self._serve(client)
                self.stats.count("reconnects")
                await self._set_state(AdapterState.LOST, reason)
            finally:
                self._client = None
                await close_quietly(client, min(2.0, self.source.request_timeout_s))
            attempt = 0
            await asyncio.sleep(self._backoff(0))

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await close_quietly(client)

    # ------------------------------------------------------------------------------ one session
    async def _serve(self, client: Client) -> str:
        """Subscribe and pump until the session is lost or goes stale; returns the reason."""
        self._lost_reason = None
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            self._lost_reason = f"connection lost: {exc!r}"
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            sub = await self._subscribe(client)
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            self.stats.count(f"subscribe_failed:{type(exc).__name__}", message=f"{self.machine}: subscribing failed: {exc!r}")
            return f"subscribing failed: {exc!r}"
        self.sessions += 1
        if self.sessions > 1:
            await self._emit_gap(f"reconnected to {self.source.endpoint}; changes while disconnected are lost")
        await self._set_state(AdapterState.CONNECTED, self.source.endpoint)
        self._last_rx = time.monotonic()
        pump = asyncio.create_task(self._pump(sub), name=f"opcua-pump:{self.machine}")
        watch = asyncio.create_task(self._watchdog(sub, lost), name=f"opcua-watchdog:{self.machine}")
        try:
            done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
        for task in done:
            failure = task.exception()
            if isinstance(failure, _LostError):
                return str(failure)
            if failure is not None:
                raise failure
        return self._lost_reason or "subscription ended"

    async def _subscribe(self, client: Client) -> Subscription:
        addresses = {p.signal: p.address for p in self.plans}
        resolution = await resolve(client, addresses, self.source.namespaces)
        self.stats.count("resolutions")
        for signal, why in resolution.missing.items():
            self.stats.count(f"unresolved:{signal}", message=f"{self.machine}: {signal} not found: {why}")
        self.resolved = {s: format_nodeid(n, resolution.namespaces) for s, n in resolution.nodes.items()}
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = self.source.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = self.source.keepalive_count
        # the server keeps the subscription this many intervals without a publish request:
        # at least three keep-alive periods (OPC 10000-4 §5.13.2) and at least a minute
        params.RequestedLifetimeCount = max(
            3 * self.source.keepalive_count, math.ceil(60_000 / self.source.publishing_interval_ms)
        )
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        sub = await client.create_subscription(
            params, None, queue_maxsize=self.source.notification_queue, overflow=OverflowPolicy.DISCONNECT
        )
        sub.set_overflow_disconnect_handler(self._on_client_overflow)
        requests = []
        self._handles = {}
        for handle, plan in enumerate(self.plans, start=1):
            node = resolution.nodes.get(plan.signal)
            if node is None:
                continue
            requests.append(self._request(handle, node, plan))
            self._handles[handle] = plan.signal
        if requests:
            results = await sub.create_monitored_items(requests)
            for req, result in zip(requests, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    signal = self._handles.pop(req.RequestedParameters.ClientHandle)
                    self.stats.count(
                        f"monitor_failed:{signal}",
                        message=f"{self.machine}: cannot monitor {signal} ({self.resolved.get(signal)}): {result.name}",
                    )
        return sub

    def _request(self, handle: int, node: ua.NodeId, plan: SignalPlan) -> ua.MonitoredItemCreateRequest:
        rv = ua.ReadValueId()
        rv.NodeId = node
        rv.AttributeId = ua.AttributeIds.Value
        mp = ua.MonitoringParameters()
        mp.ClientHandle = handle
        mp.SamplingInterval = plan.sampling_interval_ms
        mp.QueueSize = plan.queue_size
        mp.DiscardOldest = True
        if plan.deadband is not None:
            f = ua.DataChangeFilter()
            f.Trigger = ua.DataChangeTrigger.StatusValue
            f.DeadbandType = ua.DeadbandType.Absolute if plan.deadband_type == "absolute" else ua.DeadbandType.Percent
            f.DeadbandValue = plan.deadband
            mp.Filter = f
        elif plan.signal.startswith("probe."):
            # a probe that measures the same value twice made two measurements: report a new
            # source timestamp even when the value did not change
            f = ua.DataChangeFilter()
            f.Trigger = ua.DataChangeTrigger.StatusValueTimestamp
            mp.Filter = f
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = mp
        return req

    def _on_client_overflow(self) -> None:
        """asyncua's queue is full and it drops a notification: count it, one gap per episode."""
        if not self._client_overflow:
            self._client_overflow = True
            self.stats.count("gaps")
            self._put_gap("notifications dropped: client queue overflowed")
        self.stats.count(
            "client_queue_overflow",
            message=f"{self.machine}: asyncua notification queue full ({self.source.notification_queue}); notifications dropped",
        )

    async def _pump(self, sub: Subscription) -> None:
        async for event in sub:
            self._client_overflow = False
            if isinstance(event, DataChangeEvent):
                self._on_data(event)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if not status.is_good():
                    raise _LostError(f"subscription status {status.name}")
        raise _LostError("subscription closed")

    def _on_data(self, event: DataChangeEvent) -> None:
        # the hot path: thousands of calls per second, so plain attribute access and few calls
        item = event.data.monitored_item
        signal = self._handles.get(item.ClientHandle)
        if signal is None:
            return
        dv = item.Value
        when = dv.SourceTimestamp or dv.ServerTimestamp
        if when is None:
            when = datetime.now(UTC)
        elif when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        status = dv.StatusCode
        code = 0 if status is None else status.value
        value: Value
        if code & _BAD:
            self.stats.count(
                f"bad_status:{status.name}",
                message=f"{self.machine}: {signal} reported {status.name}; recorded as UNAVAILABLE",
            )
            value = None
        else:
            variant = dv.Value
            raw = None if variant is None else variant.Value
            value = raw if type(raw) is float or type(raw) is str else _to_value(raw)
            if code & _UNCERTAIN:
                self.stats.count(
                    f"uncertain_status:{status.name}",
                    message=f"{self.machine}: {signal} reported {status.name}; value kept",
                )
            if code & _OVERFLOW_BITS == _OVERFLOW_BITS:
                # The server's queue for this item overflowed: older changes were discarded there.
                self.stats.count("server_queue_overflow", message=f"{self.machine}: server dropped changes of {signal}")
                self._put_gap(f"server queue of {signal} overflowed; changes lost")
        if value is not None:
            # a sample the server sends again (same value, same source time; e.g. the initial
            # value after a reconnect, possibly after a placeholder status) is not passed on twice
            pair = (value, when)
            if self._last.get(signal) == pair:
                self.stats.count("duplicates_skipped")
                return
            self._last[signal] = pair
        self._counts["notifications"] += 1
        self._emit_nowait(Observation(self.machine, signal, when, value))

    async def _watchdog(self, sub: Subscription, lost: asyncio.Event) -> None:
        stale = self.source.stale_after_s
        tick = min(1.0, stale / 4)
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), tick)
            if lost.is_set():
                break
            last = max(self._last_rx, sub.last_publish_at or 0.0)
            quiet = time.monotonic() - last
            if quiet > stale:
                self.stats.count("stale", message=f"{self.machine}: no data or keep-alive for {quiet:.1f} s")
                raise _LostError(f"stale: nothing received for {quiet:.1f} s")
        raise _LostError(self._lost_reason or "connection lost")
