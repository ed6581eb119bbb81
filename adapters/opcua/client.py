"""The OPC UA adapter: one machine's server turned into a stream of canonical observations.

Per connection the adapter opens a *fresh* asyncua client (a session that survived a lost
socket is not trusted), resolves every mapped address again (a restarted server may renumber
its namespaces and nodes), creates one subscription with a monitored item per signal, and pumps
the notifications into the base's bounded queue. It owns the whole lifecycle:

* connect failures and lost connections are retried with exponential, jittered backoff; each
  error kind is logged once, each state change is one log line (asyncua's own traceback on every
  disconnect becomes a counted event);
* each publish's changes are passed on in source-time order (a server groups them by monitored
  item), so one server's data needs no re-ordering window;
* after a reconnect (or a daemon restart, from the time it stored up to) the adapter reads where
  the source is now; what changed meanwhile is read back from the server's history when every
  mapped node keeps history, else one ``source.gap`` says which window of the source's clock was
  lost; when nothing changed, nothing is reported;
* a watchdog reconnects when the session looks alive but neither data nor keep-alive arrived
  for ``stale_after_s``, or when asyncua re-created the subscription behind our back; every
  ``verify_interval_s`` the mapped values are read and compared with what was delivered, and a
  change the subscription has not delivered by the next read means it went silent: reconnect;
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
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription
from asyncua.observer import Observer, SubscriptionEvent

from adapters.base import Adapter, AdapterState, AdapterStats, SourceSpec
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
        f = float(raw)
        # NaN as the one math.nan object: a value sent again (a reconnect's initial values) is then
        # recognised as a repeat by the tracker (a NaN equals nothing but itself)
        return f if f == f else math.nan
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

_WAITING = ua.StatusCodes.BadWaitingForInitialData

_OVERFLOW_BITS = 0x0480
"""StatusCode InfoType=DataValue (0x400) with the Overflow bit (0x80), OPC 10000-4 §7.39."""


class _LostError(Exception):
    """Internal: the current session ended; the message says why."""


_CURRENT: ContextVar[OpcUaAdapter | None] = ContextVar("opcua_adapter", default=None)
"""The adapter whose task (and the asyncua tasks it starts) is running: attributes asyncua's log lines."""


class _DisconnectNoise(logging.Filter):
    """asyncua logs a full traceback each time its publish loop or supervisor fails, which is every
    disconnect; the adapter already says the connection was lost, so each becomes a counted event
    (logged once per kind, with the adapter's machine)."""

    _NOISY = (
        "Publish iteration crashed",
        "Connection supervisor iteration crashed",
        "close_session raised during disconnect",
        "close_secure_channel raised during disconnect",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self._NOISY):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        adapter = _CURRENT.get()
        what = message.split(";")[0]
        stats, machine = (adapter.stats, adapter.machine) if adapter is not None else (_UNATTRIBUTED, "opcua")
        stats.count(f"asyncua:{what}:{type(exc).__name__}", message=f"{machine}: asyncua: {what} ({exc!r})")
        return False


_UNATTRIBUTED = AdapterStats()
_NOISE = _DisconnectNoise()
for _name in ("asyncua.client.ua_session", "asyncua.client.ua_session.UaSession", "asyncua.client.client"):
    logging.getLogger(_name).addFilter(_NOISE)


class _Publishes(Observer):  # type: ignore[misc]  # asyncua is untyped here
    """asyncua's observer hooks: where each publish's changes end, and subscriptions it re-created.

    asyncua puts all changes of one publish response into the subscription's queue and then calls
    ``on_notification`` in the same step, so when the first change of a publish is read, the count
    of that publish is known and its other changes are already queued."""

    def __init__(self) -> None:
        self.sizes: deque[int] = deque()
        self.recreated = 0

    def observe_request(self, request: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # no timing of every request

    def on_notification(self, subscription_id: int | None, event_count: int) -> None:
        if event_count > 0:
            self.sizes.append(event_count)

    def on_subscription_event(self, subscription_id: int | None, event: SubscriptionEvent) -> None:
        if event is SubscriptionEvent.RECREATED:
            self.recreated += 1


def _stamp(dv: ua.DataValue) -> datetime | None:
    when: datetime | None = dv.SourceTimestamp or dv.ServerTimestamp
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


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
        self._publishes = _Publishes()
        self._nodes: dict[str, ua.NodeId] = {}
        self._since: datetime | None = None
        """Where data stopped reaching us (source clock): a restart's stored position, then each loss."""
        self._loss = "the monitor was not reading (restart)"
        self._history_refused: set[str] = set()
        self._replayed: dict[str, datetime] = {}
        """Per signal, the newest value read back from history: the new subscription's first values
        may be older than that (a value changed between subscribing and reading), and are repeats."""
        when = (resume or {}).get("time")
        if isinstance(when, str):
            with contextlib.suppress(ValueError):
                self._since = datetime.fromisoformat(when)

    # ------------------------------------------------------------------------------ lifecycle
    def _backoff(self, attempt: int) -> float:
        """The wait before reconnect ``attempt`` (0-based): the one retry toolkit's jittered backoff."""
        return Backoff(self.source.reconnect_min_s, self.source.reconnect_max_s).delay(attempt, self._rng)

    @property
    def delivery_period_s(self) -> float:
        return self.source.publishing_interval_ms / 1000

    def position(self) -> dict[str, Any] | None:
        """Where reading stands: the newest source time passed on. An adapter started from it (after a
        failure) reads what changed since from history, or reports it as one gap in the source's clock."""
        return self.position_at(self.source_time) if self.source_time is not None else None

    def position_at(self, time: datetime) -> dict[str, Any] | None:
        """OPC UA has no sequence to resume from: resume by source time (history, else a gap from there)."""
        return {"time": time.isoformat()}

    async def _run(self) -> None:
        _CURRENT.set(self)  # inherited by every asyncua task started from here
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
            self._publishes = _Publishes()
            client.uaclient.observer = self._publishes
            self._tame_asyncua_watchdog(client)
            try:
                reason = await self._serve(client)
                self.stats.count("reconnects")
                self._since = self.source_time or self._since
                self._loss = f"connection to {self.source.endpoint} lost ({reason})"
                await self._set_state(AdapterState.LOST, reason)
            finally:
                self._client = None
                await close_quietly(client, min(2.0, self.source.request_timeout_s))
            attempt = 0
            await asyncio.sleep(self._backoff(0))

    def _tame_asyncua_watchdog(self, client: Client) -> None:
        """asyncua re-creates a subscription that sent nothing for 1.5 keep-alive periods (1.5 s with
        a 100 ms publishing interval); the old one is deleted on the server with every change queued
        in it, and nothing tells the application. A daemon whose loop is busy for that long lost parts
        that way without a word. Our watchdog decides after stale_after_s and reconnects with a catch-up;
        asyncua's is pushed beyond it (a private knob of asyncua 2.x: without it, a re-creation is
        still noticed through the observer and handled like a lost connection)."""
        keepalive_s = self.source.publishing_interval_ms * self.source.keepalive_count / 1000
        if hasattr(client, "_stale_check_margin"):
            client._stale_check_margin = max(1.5, 2 * self.source.stale_after_s / keepalive_s)

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
        try:
            await self._catch_up(client)
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            self.stats.count(
                f"catch_up_failed:{type(exc).__name__}", message=f"{self.machine}: reading what was missed failed: {exc!r}"
            )
            return f"reading what was missed failed: {exc!r}"
        await self._set_state(AdapterState.CONNECTED, self.source.endpoint)
        self._last_rx = time.monotonic()
        tasks = [
            asyncio.create_task(self._pump(sub), name=f"opcua-pump:{self.machine}"),
            asyncio.create_task(self._watchdog(sub, lost), name=f"opcua-watchdog:{self.machine}"),
            asyncio.create_task(self._verify(client), name=f"opcua-verify:{self.machine}"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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
        self._nodes = dict(resolution.nodes)
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
        sizes = self._publishes.sizes
        events = aiter(sub)
        while True:
            try:
                batch = [await anext(events)]
                # the rest of this publish is already queued (see _Publishes)
                for _ in range((sizes.popleft() if sizes else 1) - 1):
                    batch.append(await anext(events))
            except StopAsyncIteration:
                raise _LostError("subscription closed") from None
            self._client_overflow = False
            observations = [o for o in map(self._observation, batch) if o is not None]
            if len(observations) > 1:
                observations.sort(key=attrgetter("time"))  # stable: equal times keep the server's order
            replayed = self._replayed
            for obs in observations:
                if replayed and obs.signal in replayed:
                    if obs.time <= replayed[obs.signal]:
                        self.stats.count("duplicates_skipped")
                        continue
                    del replayed[obs.signal]
                if self._fresh(obs):
                    self._emit_nowait(obs)
            for event in batch:
                if isinstance(event, StatusChangeEvent) and not event.notification.Status.is_good():
                    raise _LostError(f"subscription status {event.notification.Status.name}")

    def _observation(self, event: Any) -> Observation | None:
        # the hot path: thousands of calls per second, so plain attribute access and few calls
        if not isinstance(event, DataChangeEvent):
            return None
        item = event.data.monitored_item
        signal = self._handles.get(item.ClientHandle)
        if signal is None:
            return None
        dv = item.Value
        when = dv.SourceTimestamp or dv.ServerTimestamp
        if when is None:
            when = datetime.now(UTC)
        elif when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        status = dv.StatusCode
        code = 0 if status is None else status.value
        value: Value
        if code == _WAITING:
            # "no value yet" (OPC 10000-4 §7.39): not a reading, and stamped with the server's clock
            self.stats.count("waiting_for_initial_data")
            return None
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
        return Observation(self.machine, signal, when, value)

    def _fresh(self, obs: Observation) -> bool:
        if obs.value is not None:
            # a sample the server sends again (same value, same source time; e.g. the initial
            # value after a reconnect, possibly after a placeholder status) is not passed on twice
            pair = (obs.value, obs.time)
            if self._last.get(obs.signal) == pair:
                self.stats.count("duplicates_skipped")
                return False
            self._last[obs.signal] = pair
        self._counts["notifications"] += 1
        return True

    # ------------------------------------------------------------------------------ what was missed
    async def _catch_up(self, client: Client) -> None:
        """After a loss (or a restart), find where the source is now; pass on what changed meanwhile
        from the server's history, or report the window as a gap. Nothing changed: nothing to say."""
        self._replayed = {}
        since = self._since
        if since is None or not self._nodes:
            return
        signals = [s for s in self._handles.values() if s in self._nodes]
        now = await client.read_attributes([client.get_node(self._nodes[s]) for s in signals])
        newest = max((t for dv in now if not dv.StatusCode.is_bad() and (t := _stamp(dv)) is not None), default=None)
        if newest is None:  # no current value to tell what changed (a server just started): assume the worst
            await self._emit_gap(f"{self._loss}; the server shows no current values to tell what changed", since)
            return
        if newest <= since:
            self.stats.count("reconnects_without_loss")
            return
        if self.source.history == "auto" and await self._from_history(client, signals, since, newest):
            return
        await self._emit_gap(f"{self._loss}; the server keeps no history of it", since, newest)

    async def _from_history(self, client: Client, signals: list[str], since: datetime, until: datetime) -> bool:
        """Pass on every value stamped in [since, until] from the server's history, in time order.

        Only when every mapped node keeps history (a part needs all its signals), and nothing is
        passed on unless everything was read: a partial history is reported as the gap it is."""
        nodes = [client.get_node(self._nodes[s]) for s in signals]
        levels = await client.read_attributes(nodes, ua.AttributeIds.UserAccessLevel)
        bit = 1 << ua.AccessLevel.HistoryRead
        without = [s for s, dv in zip(signals, levels, strict=True) if not int(dv.Value.Value if dv.Value else 0) & bit]
        if without:
            new = set(without) - self._history_refused
            self._history_refused |= new
            if new:
                log.info(
                    "%s: the server keeps no history of %s; losses are recorded as gaps", self.machine, ", ".join(sorted(new))
                )
            return False
        found: list[Observation] = []
        cap = self.source.history_max_values
        for signal, node in zip(signals, nodes, strict=True):
            try:
                values = await node.read_raw_history(since, until, numvalues=0, return_bounds=False)
            except ua.UaStatusCodeError as exc:
                self.stats.count(
                    f"history_failed:{type(exc).__name__}", message=f"{self.machine}: HistoryRead of {signal} failed: {exc}"
                )
                return False
            for dv in values:
                when = _stamp(dv)
                if when is None or when < since or when > until:
                    continue
                bad = dv.StatusCode is not None and dv.StatusCode.is_bad()
                raw = None if bad or dv.Value is None else dv.Value.Value
                found.append(Observation(self.machine, signal, when, None if raw is None else _to_value(raw)))
            if len(found) > cap:
                self.stats.count("history_too_long", message=f"{self.machine}: more than {cap} values missed; recorded as a gap")
                return False
        found.sort(key=attrgetter("time"))
        self._replayed = {o.signal: o.time for o in found}
        for obs in found:
            if self._fresh(obs):
                await self._emit(obs)  # waits when the consumer is slow: history is never dropped
        self.stats.count("history_fills")
        self.stats.count("history_values", len(found))
        log.info(
            "%s: %d values missed between %s and %s read back from the server's history", self.machine, len(found), since, until
        )
        return True

    async def _verify(self, client: Client) -> None:
        """Every verify_interval_s, read the mapped values and compare with what was delivered.

        A change read once and still not delivered at the next read (while nothing received is
        waiting to be processed) means the subscription is alive but silent: end the session."""
        interval = self.source.verify_interval_s
        plans = {p.signal: p for p in self.plans}
        signals = [s for s in self._handles.values() if s in self._nodes and plans[s].deadband is None]
        if not interval or not signals:
            await asyncio.Event().wait()
        interval = max(interval, 4 * self.source.publishing_interval_ms / 1000)
        nodes = [client.get_node(self._nodes[s]) for s in signals]
        owed: dict[str, tuple[Value, datetime]] = {}
        while True:
            await asyncio.sleep(interval)
            now = await client.read_attributes(nodes)
            self.stats.count("verifications")
            behind = bool(self._publishes.sizes) or not self._queue.empty()
            for signal, dv in zip(signals, now, strict=True):
                when = _stamp(dv)
                if dv.StatusCode.is_bad() or when is None:
                    continue
                raw = dv.Value.Value if dv.Value is not None else None
                value = _to_value(raw)
                delivered = self._last.get(signal)
                before = owed.pop(signal, None)
                if before is not None and not behind and (delivered is None or delivered[1] < before[1]):
                    self.stats.count(
                        "silent_subscription",
                        message=f"{self.machine}: the subscription did not deliver {signal} = {before[0]!r} "
                        f"({before[1].isoformat()}) within {interval:g} s; reconnecting",
                    )
                    raise _LostError(f"subscription silent: {signal} changed on the server but was not delivered")
                if delivered is None or (value != delivered[0] and when > delivered[1]):
                    owed[signal] = (value, when)

    async def _watchdog(self, sub: Subscription, lost: asyncio.Event) -> None:
        stale = self.source.stale_after_s
        tick = min(1.0, stale / 4)
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), tick)
            if lost.is_set():
                break
            if self._publishes.recreated:
                self.stats.count(
                    "subscription_recreated",
                    message=f"{self.machine}: asyncua re-created a subscription it found stale; "
                    "changes queued on the server were dropped",
                )
                raise _LostError("asyncua re-created the subscription; changes queued on the server were dropped")
            last = max(self._last_rx, sub.last_publish_at or 0.0)
            quiet = time.monotonic() - last
            if quiet > stale:
                self.stats.count("stale", message=f"{self.machine}: no data or keep-alive for {quiet:.1f} s")
                raise _LostError(f"stale: nothing received for {quiet:.1f} s")
        raise _LostError(self._lost_reason or "connection lost")
