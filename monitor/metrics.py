"""Prometheus metrics of the running daemon, served at ``/metrics`` (prometheus-client).

What a plant's monitoring asks of a service, named ``cnc_monitor_*`` (see docs/service.md):

- per source (``machine``, ``source``): observations, gaps, reconnects and supervisor restarts
  (counters), whether it is connected and how old its last data is (gauges);
- parts stored per ``machine`` and ``status`` (counter); open conditions per machine, condition
  (watch ... out_of_tolerance, recovering) and state (open, acknowledged); open alerts per machine and severity, which
  are the open conditions (gauge);
- per output (``sink``): backlog in memory and on disk (gauges), written, retries, dropped and set
  aside (counters);
- store write latency per kind of write and event-loop lag (histograms);
- the configuration: when it was loaded, reloads by result; the version and site (``info``).

Counters that the daemon already keeps (sinks, supervisors, the pipeline) are read when Prometheus
scrapes, by a custom collector, never counted twice; what nobody counted yet (per-source
observations and data age, store latency, loop lag) is counted here. Parts and open alerts are the
core's counts (:meth:`monitor.core.MonitorCore.counts`, taken on its thread at each scrape).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL, Observation

if TYPE_CHECKING:
    from monitor.config import Site
    from monitor.core import CoreCounts
    from monitor.reload import ConfigVersion
    from monitor.supervisor import SourceSupervisor

__all__ = ["CONTENT_TYPE", "DaemonMetrics", "Measured", "SourceCounts"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class SourceCounts:
    """What one source delivered since the daemon started (across adapter restarts)."""

    observations: int = 0
    delivered: int = 0
    """Everything handed to the daemon: values, gap and connection notes."""
    gaps: int = 0
    reconnects: int = 0
    connected_once: bool = False
    last_data: float | None = None
    """time.monotonic() of the last value (not a gap or connection note)."""

    def saw(self, obs: Observation) -> None:
        self.delivered += 1
        if obs.signal == GAP_SIGNAL:
            self.gaps += 1
        elif obs.signal == CONNECTION_SIGNAL:
            if obs.value == "connected":
                self.reconnects += self.connected_once
                self.connected_once = True
        else:
            self.observations += 1
            self.last_data = time.monotonic()

    def saw_batch(self, batch: Sequence[Observation]) -> None:
        """:meth:`saw` for a batch: values counted in one step, notes one by one."""
        values = 0
        for obs in batch:
            if obs.signal == GAP_SIGNAL or obs.signal == CONNECTION_SIGNAL:
                self.saw(obs)
            else:
                values += 1
        if values:
            self.delivered += values
            self.observations += values
            self.last_data = time.monotonic()


@dataclass
class _Snapshot:
    parts: Counter[tuple[str, str]] = field(default_factory=Counter)
    open_alerts: Counter[tuple[str, str]] = field(default_factory=Counter)
    open_conditions: Counter[tuple[str, str, str]] = field(default_factory=Counter)


class Measured(Protocol):
    """What the metrics read of the daemon (a :class:`monitor.daemon.Daemon` is one)."""

    @property
    def site(self) -> Site: ...

    @property
    def sources(self) -> Sequence[SourceSupervisor]: ...

    @property
    def sinks(self) -> Sequence[Any]: ...

    @property
    def queued(self) -> int: ...

    @property
    def config_version(self) -> ConfigVersion: ...

    async def core_counts(self) -> CoreCounts: ...


class DaemonMetrics(Collector):
    """The daemon's metrics registry: its own counts, histograms and a collector over its status."""

    def __init__(self, daemon: Measured) -> None:
        self._daemon = daemon
        self.sources: dict[tuple[str, str], SourceCounts] = {}
        self.reloads: Counter[str] = Counter()
        self._snapshot = _Snapshot()
        self.registry = CollectorRegistry(auto_describe=True)
        self.store_write = Histogram(
            "cnc_monitor_store_write_seconds",
            "Time of one store transaction, by what it writes (part, alerts, signals)",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "cnc_monitor_event_loop_lag_seconds",
            "How late the event loop ran a timer (a blocked loop shows here first)",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def source(self, machine: str, key: str) -> SourceCounts:
        return self.sources.setdefault((machine, key), SourceCounts())

    def on_store_write(self, kind: str, seconds: float) -> None:
        """The store's write hook (any thread)."""
        self.store_write.labels(kind).observe(seconds)

    async def measure_loop_lag(self, every_s: float = 0.5) -> None:
        """Until cancelled: how much later than asked the loop wakes this task."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(every_s)
            self.loop_lag.observe(max(0.0, loop.time() - asked - every_s))

    async def exposition(self) -> bytes:
        """The text Prometheus scrapes (the core's counts taken on its thread first)."""
        counts = await self._daemon.core_counts()
        self._snapshot = _Snapshot(
            parts=Counter(counts.parts), open_alerts=Counter(counts.open_alerts), open_conditions=Counter(counts.open_conditions)
        )
        body: bytes = generate_latest(self.registry)
        return body

    async def scrape(self) -> tuple[str, bytes]:
        """``/metrics``' answer: (content type, body)."""
        return CONTENT_TYPE, await self.exposition()

    # ------------------------------------------------------------------ the collector
    def collect(self) -> Iterator[Metric]:
        daemon = self._daemon
        info = InfoMetricFamily("cnc_monitor", "The monitor's version and the site it watches")
        info.add_metric([], {"version": __version__, "site": daemon.site.config.site})
        yield info
        yield from self._sources()
        parts = CounterMetricFamily("cnc_monitor_parts", "Parts stored since the daemon started", labels=["machine", "status"])
        for (machine, status), n in sorted(self._snapshot.parts.items()):
            parts.add_metric([machine, status], n)
        yield parts
        alerts = GaugeMetricFamily(
            "cnc_monitor_open_alerts", "Alerts open or acknowledged now (open conditions)", labels=["machine", "severity"]
        )
        for (machine, severity), n in sorted(self._snapshot.open_alerts.items()):
            alerts.add_metric([machine, severity], n)
        yield alerts
        conditions = GaugeMetricFamily(
            "cnc_monitor_open_conditions",
            "Feature conditions not ok now (one per machine, program and feature at most)",
            labels=["machine", "condition", "state"],
        )
        for (machine, condition, state), n in sorted(self._snapshot.open_conditions.items()):
            conditions.add_metric([machine, condition, state], n)
        yield conditions
        yield from self._sinks()
        queued = GaugeMetricFamily("cnc_monitor_observations_queued", "Observations waiting for the pipeline")
        queued.add_metric([], daemon.queued)
        yield queued
        loaded = GaugeMetricFamily("cnc_monitor_config_loaded_timestamp_seconds", "When the running configuration was loaded")
        loaded.add_metric([], daemon.config_version.loaded_at.timestamp())
        yield loaded
        reloads = CounterMetricFamily("cnc_monitor_reloads", "Reloads since the daemon started", labels=["result"])
        for result in ("applied", "refused"):
            reloads.add_metric([result], self.reloads[result])
        yield reloads

    def _sources(self) -> Iterator[Metric]:
        labels = ["machine", "source"]
        observations = CounterMetricFamily("cnc_monitor_source_observations", "Values a source delivered", labels=labels)
        gaps = CounterMetricFamily("cnc_monitor_source_gaps", "Data losses a source reported (restart, overrun)", labels=labels)
        reconnects = CounterMetricFamily("cnc_monitor_source_reconnects", "Connections after the first", labels=labels)
        restarts = CounterMetricFamily(
            "cnc_monitor_source_restarts", "Adapters restarted after an unexpected failure", labels=labels
        )
        up = GaugeMetricFamily("cnc_monitor_source_connected", "1 while the source is connected", labels=labels)
        age = GaugeMetricFamily(
            "cnc_monitor_source_last_data_age_seconds",
            "Seconds since the source's last value (absent before the first)",
            labels=labels,
        )
        now = time.monotonic()
        for source in self._daemon.sources:
            key = [source.machine, source.key]
            counts = self.source(source.machine, source.key)
            observations.add_metric(key, counts.observations)
            gaps.add_metric(key, counts.gaps)
            reconnects.add_metric(key, counts.reconnects)
            restarts.add_metric(key, source.restarts)
            adapter = source.adapter
            up.add_metric(key, 1.0 if adapter is not None and str(adapter.state) == "connected" else 0.0)
            if counts.last_data is not None:
                age.add_metric(key, now - counts.last_data)
        yield from (observations, gaps, reconnects, restarts, up, age)

    def _sinks(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily("cnc_monitor_sink_backlog", "Events waiting for an output", labels=["sink", "where"])
        totals = {
            name: CounterMetricFamily(f"cnc_monitor_sink_{name}", help_text, labels=["sink"])
            for name, help_text in (
                ("written", "Events an output accepted"),
                ("retries", "Failed writes that will be retried"),
                ("dropped", "Events lost because the buffer or spool was full"),
                ("set_aside", "Events an output refused for good (kept in rejected.jsonl)"),
            )
        }
        for sink in self._daemon.sinks:
            status: dict[str, Any] = sink.status()
            backlog.add_metric([sink.name, "memory"], float(status.get("backlog_memory") or 0))
            backlog.add_metric([sink.name, "disk"], float(status.get("backlog_disk") or 0))
            for name, family in totals.items():
                family.add_metric([sink.name], float(status.get(name) or 0))
        yield backlog
        yield from totals.values()
