"""The daemon: task wiring around one :class:`~monitor.core.MonitorCore`; it owns no logic.

The core (store, pipeline, event hub, alert state) is built before the daemon exists; the daemon
connects the site's sources to it, its outputs to it, and serves it (control API, dashboard,
metrics). A reload re-reads the configuration: the core applies it to the pipeline, the daemon
starts, stops or restarts the sources it changed.

Task tree (one ``asyncio.TaskGroup``; stopping is cancelling it)::

    Daemon.run
    ├── source:<machine>    one per configured source: a SourceSupervisor runs its adapter (restarted
    │                       after any failure, which ends there) and moves observations -> bounded queue
    ├── process             queue -> core.ingest (on the core's thread, one hand-off per batch) -> outputs, hub
    ├── tick                releases parts whose grace window ran out; status; health line
    ├── watchdog            systemd watchdog pings and status line, from this loop (Type=notify)
    ├── loop-lag            how late the event loop runs timers (metrics)
    ├── reload              SIGHUP / POST /reload of the control API: re-read the configuration
    ├── inspection          watched folders of CMM/gauge result files -> core.import_inspection;
    │                       unmatched inspection results tried again
    ├── sink:<name>         one RunningSink per configured output
    ├── control             the local control API the CLI uses (always)
    └── dashboard           the web server and /metrics, when enabled

SIGINT/SIGTERM set the stop event: adapters stop, the queue drains, parts waiting in a grace
window are stored, sinks flush (bounded); whoever opened the core closes it. While the store cannot
write (a full disk) the core holds parts, alerts and acknowledgements in memory, in order, up to a
bound; then the daemon takes no more observations (back-pressure reaches the sources) until it
writes again, and no source position moves past a part that is not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from adapters.base import Adapter, AdapterState, ObservationQueue
from monitor.commands import ApplyOffset
from monitor.config import Site, load_site
from monitor.control import new_token, serve_control
from monitor.core import CoreCounts, MonitorCore, machine_lease
from monitor.dashboard.server import serve_dashboard
from monitor.errors import ConfigError, MonitorError, StoreError
from monitor.inspection.watch import FolderWatcher
from monitor.metrics import DaemonMetrics
from monitor.model import Alert, Observation, PartRecord
from monitor.offsets import OffsetService
from monitor.pipeline import Changes
from monitor.plugins import adapter_factory, build_sinks
from monitor.reload import ConfigVersion, plan_reload, source_key
from monitor.retry import Backoff, Retry
from monitor.runtime import RuntimeInfo, remove_runtime, write_runtime
from monitor.service.notify import Notifier
from monitor.store.lease import LeaseLost, MachineLease
from monitor.supervisor import SourceSupervisor

__all__ = [
    "EXECUTOR_THREADS",
    "STORE_BACKOFF",
    "Daemon",
    "OutputSink",
    "event_loop_factory",
    "install_signal_handlers",
    "open_core",
    "run_daemon",
    "source_key",
]

log = logging.getLogger(__name__)

STORE_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
"""Waits between attempts to open a store that cannot be opened yet (a full disk)."""
EXIT_LEASE_LOST = 75
"""The exit status of a daemon that lost its machines' leases and whose clean stop hung (EX_TEMPFAIL:
systemd's Restart= brings it back, as a standby)."""
EXECUTOR_THREADS = min(4, max(2, os.cpu_count() or 2))
"""Threads the daemon's blocking calls run on (``asyncio.to_thread``: parsing large MTConnect pages
when a source catches up, lease renewals, file checks). Each thread that parsed a large page keeps a
few MB for its life (lxml's per-thread parser state: about 2.5 MB per thread after 30 pages of
0.1-0.9 MB, whatever malloc's arenas); Python's default (cores + 4) let a catch-up after a stall on
the loaded bench machine start five more threads and 25-30 MB that stayed for the rest of the run."""


class OutputSink(Protocol):
    """What the daemon needs of a sink wrapper (see monitor.sinks.base.RunningSink)."""

    name: str

    def offer(self, event: PartRecord | Alert | Observation) -> None: ...

    async def run(self) -> None: ...

    async def aclose(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Daemon:
    """One site's monitor around an open core. Build it, then ``await daemon.run(stop)``.

    Sources hand over batches into one bounded queue (``queue_size`` observations); the processor
    hands the core up to ``batch_size`` observations at a time, gathering for ``batch_wait_s``
    after the first one arrives (until ``batch_size`` wait, if that comes first), so a cell of many
    machines that each deliver a little at a time costs one hand-off to the core's thread and one
    wake of the processor per batch, not per delivery. Each hand-off costs the core's thread a wake
    and the two threads a turn at the interpreter lock: in a 50-machine cell, gathering 0.25 s
    instead of 0.05 s cost 5% less CPU per observation (a part's record waits at most that longer).
    """

    def __init__(
        self,
        core: MonitorCore,
        *,
        queue_size: int = 10_000,
        batch_size: int = 2_000,
        batch_wait_s: float = 0.25,
        health_every_s: float = 60.0,
        notifier: Notifier | None = None,
        track_reads: bool = False,
        drain_timeout_s: float = 3.0,
    ) -> None:
        self.core = core
        self._track_reads = track_reads
        """Keep what was read per (machine, signal) for :meth:`wait_read`/:meth:`unread`: a simulator
        that knows what it published asks; a daemon beside machines does not pay for it per observation."""
        self.hub = core.hub
        self.offsets = OffsetService(core)
        """Writes conditions' offset advice to the controllers (control API, dashboard, auto_apply)."""
        self.notifier = notifier or Notifier(None)
        self._queue = ObservationQueue(queue_size)
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._batch_full = asyncio.Event()
        """Set by a delivery that leaves a whole batch waiting: the processor stops gathering."""
        self._full_at = min(batch_size, queue_size)
        self._health_every_s = health_every_s
        self.sources: list[SourceSupervisor] = []
        self.sinks: list[OutputSink] = []
        self.dashboard_url: str | None = None
        self.control_url: str | None = None
        self._last_status: dict[str, Any] = {"machines": {}, "sinks": {}}
        self._last_obs: dict[str, tuple[datetime, float]] = {}
        """Per machine, the newest controller time a value carried and the wall (monotonic) time it was
        delivered: :meth:`_tick` estimates the controller's clock from it. Only ever forward: a value
        stamped long ago (a server's initial value of a signal unchanged since, sent after what a
        restart read back from history) says nothing about the clock now."""
        self._read_until: dict[tuple[str, str], datetime] = {}
        """Per (machine, signal), the newest source time of a value a source delivered: what the
        daemon has read (:meth:`wait_read`)."""
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        """:meth:`wait_read` / :meth:`wait_connected` callers: checked at every delivery while there are any."""
        self._unavailable_at: dict[tuple[str, str], datetime] = {}
        """Per (machine, signal), the newest time of an UNAVAILABLE a source delivered: it may carry
        the server's clock (an agent's or server's placeholder before the first value), not the
        controller's, so it counts as read only once the machine's clock has reached it."""
        self._machine_clock: dict[str, datetime] = {}
        """Per machine, the newest source time of any value its sources delivered (the controller's clock)."""
        self._heard: dict[str, float] = {}
        """Per machine, the wall-clock (monotonic) time any of its sources last delivered anything."""
        self._offsets: dict[tuple[str, str], timedelta] = {}
        """Per source, its clock offset (the tracker's clock minus the source's)."""
        self._owner: dict[tuple[str, str], SourceSupervisor] = {}
        self._processed_positions: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_activity = time.monotonic()
        self._drain_timeout_s = drain_timeout_s
        """At a stop, how long a source may take to hand over what its adapter holds before it is
        cancelled; not counted while it waits for room in the queue (:meth:`_stop_sources`)."""
        self._handing_over: set[tuple[str, str]] = set()
        """The sources (machine, key) inside a delivery: moving a batch into the queue, perhaps waiting for room."""
        self.processed = 0
        """Observations the core has tracked and stored since the start (beside each source's
        ``delivered`` count: at a clean stop they are equal)."""
        self._stopping = False
        self._draining = False
        self._room = asyncio.Event()  # cleared while the store cannot write and held writes are at their bound
        self._room.set()
        self.started = asyncio.Event()
        self.config_version = ConfigVersion.of(core.site)
        self.last_reload: dict[str, Any] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._source_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._reload_lock = asyncio.Lock()
        self._reload_requests: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self.watcher = FolderWatcher(
            lambda: self.core.site, self.core.import_inspection, self.core.rematch_inspection, self.hub.publish
        )
        self.metrics = DaemonMetrics(self)
        core.time_store_writes(self.metrics.on_store_write)
        core.add_status(self._add_status)

    # ------------------------------------------------------------------ helpers
    @property
    def site(self) -> Site:
        """The configuration running now (a reload replaces it)."""
        return self.core.site

    @property
    def adapters(self) -> list[Adapter]:
        """The adapter each source runs now (a source restarted after a failure runs a new one)."""
        return [s.adapter for s in self.sources if s.adapter is not None]

    @property
    def queued(self) -> int:
        """Observations waiting for the pipeline."""
        return self._queue.qsize()

    async def core_counts(self) -> CoreCounts:
        """The core's counts (parts stored, alerts open), for the metrics."""
        return await self.core.counts()

    def idle_for(self) -> float:
        """Seconds since any source last delivered an observation."""
        return time.monotonic() - self._last_activity

    async def wait_read(self, through: Mapping[tuple[str, str], datetime]) -> None:
        """Return once, for every ``(machine, signal)`` of ``through``, the sources have delivered an
        observation at or after that source time: the daemon has read what a server published up to
        then (a simulator that knows what it published waits with this; bound it with a timeout and
        ask :meth:`unread` what is missing). Needs ``track_reads``."""
        wanted = dict(through)
        await self._wait_until(lambda: not self.unread(wanted))

    async def wait_connected(self) -> None:
        """Return once every source is connected (an OPC UA source subscribed and caught up, an
        MTConnect one reading its agent): what a server publishes from then on is read. A simulator
        that starts its batch before this loses what it published while the daemon connected
        (the first part of a machine behind a SignAndEncrypt session). Bound it with a timeout and
        ask :meth:`not_connected` which are missing."""
        await self._wait_until(lambda: not self.not_connected())

    def not_connected(self) -> list[str]:
        """The sources (by machine) not connected now."""
        return [s.machine for s in self.sources if s.adapter is None or s.adapter.state is not AdapterState.CONNECTED]

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        """Wait, without polling, until ``ready()`` holds after a delivery (sources deliver their
        connection changes like any observation)."""
        if ready():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (ready, done)
        self._waiters.append(waiter)
        try:
            await done
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def unread(self, through: Mapping[tuple[str, str], datetime]) -> dict[tuple[str, str], datetime | None]:
        """Of ``through``, the signals not read up to their time: the newest source time read of each (None: nothing).

        An UNAVAILABLE read at or after the time counts once the machine's clock (its values) has
        reached that time too: the placeholder a server or agent shows before the first value is
        stamped with its own clock, which may be far ahead of the controller's (a simulated cell's
        clock is), and must not stand for updates not read yet."""
        if not self._track_reads:
            raise MonitorError("Daemon(track_reads=True) keeps what was read; this daemon was built without it")
        read, unavailable, clock = self._read_until, self._unavailable_at, self._machine_clock
        out: dict[tuple[str, str], datetime | None] = {}
        for key, at in through.items():
            seen = read.get(key)
            if seen is not None and seen >= at:
                continue
            gone, now = unavailable.get(key), clock.get(key[0])
            if gone is not None and gone >= at and now is not None and now >= at:
                continue
            out[key] = seen
        return out

    async def apply_offset(self, command: ApplyOffset) -> list[dict[str, Any]]:
        """Write a condition's offset advice to its controller (control API, dashboard): each register's outcome."""
        return [o.as_dict() for o in await self.offsets.apply(command)]

    async def status(self) -> dict[str, Any]:
        """Health of every part of the monitor (the core's status with sources, outputs, queue, config)."""
        body = await self.core.status()
        self._last_status = body
        return body

    def _add_status(self, body: dict[str, Any]) -> None:
        machines: dict[str, Any] = body.setdefault("machines", {})
        for source in self.sources:
            entry = machines.setdefault(source.machine, {"machine": source.machine})
            entry.setdefault("sources", []).append(source.status())
        body["sinks"] = {s.name: s.status() for s in self.sinks}
        body["queue"] = self._queue.qsize()
        body["processed"] = self.processed
        body["sources_waiting"] = self._queue.writers_waiting  # back-pressure: the processor is behind
        body["inspection"] = dataclasses.asdict(self.watcher.counts)
        body["config"] = self._config_status()

    def _config_status(self) -> dict[str, Any]:
        return {**self.config_version.as_dict(), "last_reload": self.last_reload}

    def status_line(self) -> str:
        """One line for ``systemctl status``: machines connected, parts stored, outputs failing
        (from the latest status, refreshed every second by the tick)."""
        body = self._last_status
        machines = body["machines"].values()
        connected = sum(1 for m in machines if m.get("connection") == "connected")
        parts = sum(int(m.get("parts") or 0) for m in machines)
        failing = [name for name, s in body["sinks"].items() if s.get("state") in ("retrying", "down")]
        line = f"{connected}/{len(machines)} machines connected, {parts} parts stored"
        store = body.get("store", {})
        if not store.get("writable", True):
            line += f"; STORE CANNOT WRITE ({store.get('waiting_writes', 0)} writes wait)"
        return line + (f"; output(s) failing: {', '.join(failing)}" if failing else "")

    # --------------------------------------------------------------------- run
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then shut down cleanly, flushing everything."""
        try:
            ours = set(self.site.machine_ids())  # a shared store holds other cells' alerts too
            stored = await self.core.read(lambda store: store.alerts(open_only=True))  # for outputs that count them
            open_alerts = [a for a in stored if a.machine in ours]
            self.sinks = [*build_sinks(self.site, open_alerts=open_alerts)]
            for sink in self.sinks:
                self.core.add_output(sink.offer)
            self.core.add_output(self.offsets.offer)
            await self.core.warm_up()  # memory flat from the first minute, not growing for an hour
            async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
                self._tasks = tg
                for machine in self.site.config.machines:
                    await self._start_source(machine)
                sink_tasks = [tg.create_task(s.run(), name=f"sink:{s.name}") for s in self.sinks]
                processor = tg.create_task(self._process(), name="process")
                ticker = tg.create_task(self._tick(), name="tick")
                reloader = tg.create_task(self._reloader(), name="reload")
                inspection = tg.create_task(self.watcher.run(), name="inspection")
                lag = tg.create_task(self.metrics.measure_loop_lag(), name="loop-lag")
                auto_apply = tg.create_task(self.offsets.run_auto(), name="offsets:auto_apply")
                if self.core.lease is not None:
                    leases = tg.create_task(self._hold_leases(self.core.lease), name="leases")
                await self._serve(stack)
                await self.status()
                watchdog = tg.create_task(self.notifier.keep_alive(self.status_line), name="watchdog")
                self.started.set()
                self.notifier.ready(self.status_line())
                await stop.wait()
                self.notifier.stopping("stopping: draining sources, storing parts, flushing outputs")
                ticker.cancel()
                inspection.cancel()
                auto_apply.cancel()
                async with self._reload_lock:  # a reload in progress finishes first
                    reloader.cancel()
                # stop reading, then let the sources hand over what their adapters hold: every
                # observation taken from a controller is processed and stored before we stop
                self._stopping = True  # the processor no longer waits for a store that cannot write
                self._room.set()
                await self._stop_sources(list(self._source_tasks), forget=False)
                processor.cancel()
                self._note_processed(await self.core.finish())
                await self._save_positions()
                self._note_processed(await self.core.retry_writes(force=True))
                if not self.core.writes_waiting:
                    # everything read is processed and stored, the trackers' contexts too: each source
                    # resumes exactly where it stopped reading
                    self._note_read_positions()
                await self._save_positions()
                if self.core.writes_waiting:
                    log.error(
                        "stopping with store writes not done; the sources' saved positions are from before "
                        "them, so an agent that still holds the data replays it at the next start"
                    )
                for sink in self.sinks:
                    await sink.aclose()
                for task in sink_tasks:
                    task.cancel()
                watchdog.cancel()
                lag.cancel()
                if self.core.lease is not None:
                    leases.cancel()
        finally:
            self.notifier.close()
            log.info("daemon stopped")

    async def _serve(self, stack: contextlib.AsyncExitStack) -> None:
        """The control API (always) and the dashboard with /metrics (when enabled), then the runtime
        file that tells the CLI where they are; all closed with ``stack``."""
        token = new_token()
        control, self.control_url = await serve_control(self.core, token, reload=self.reload, offsets=self.apply_offset)
        stack.push_async_callback(control.cleanup)
        config = self.site.config.dashboard
        if config.enabled:
            runner = await serve_dashboard(
                self.core, config.bind, config.port, metrics=self.metrics.scrape, offsets=self.apply_offset
            )
            stack.push_async_callback(runner.cleanup)
            self.dashboard_url = f"http://{config.bind}:{runner.addresses[0][1]}/"
            log.warning("dashboard at %s", self.dashboard_url)
        info = RuntimeInfo(
            pid=os.getpid(),
            started=datetime.now(UTC).isoformat(),
            control_url=self.control_url,
            control_token=token,
            dashboard_url=self.dashboard_url,
            lease_owner=self.core.lease.owner if self.core.lease is not None else None,
        )
        store_path = self.site.store_path
        try:
            await asyncio.to_thread(write_runtime, store_path, info)
        except OSError as exc:  # a full disk: the daemon runs on, the CLI cannot find it
            log.warning(
                "cannot write %s's runtime file (%s); `monitor status` and `ack` cannot reach this daemon", store_path, exc
            )
        stack.callback(remove_runtime, store_path)

    # ------------------------------------------------------------------ sources
    async def _start_source(self, machine: Any) -> None:
        """Start one configured source under supervision, in the daemon's task group."""
        assert self._tasks is not None, "sources start inside run()"
        source = await self._supervise(machine)
        self.sources.append(source)
        self._source_tasks[(source.machine, source.key)] = self._tasks.create_task(source.run(), name=f"source:{source.machine}")

    async def _stop_sources(self, keys: list[tuple[str, str]], *, forget: bool = True) -> None:
        """Stop sources losslessly: stop reading, let them hand over what their adapters hold,
        process and store all of it, and keep each one's position for a later start. ``forget``
        drops them from :attr:`sources` (a reload); at shutdown they stay for the final status."""
        sources = [s for s in self.sources if (s.machine, s.key) in keys]
        for source in sources:
            await source.stop_reading()
        tasks = {self._source_tasks.pop((s.machine, s.key)): (s.machine, s.key) for s in sources}
        self._draining = True  # what the stopped sources hand over is processed even past the held-writes bound
        self._room.set()
        self._batch_full.set()  # a processor gathering a batch takes what waits now
        try:
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=self._drain_timeout_s)
                # a source still moving a batch into a full queue only waits for the processor, which
                # keeps taking while draining: cancelling it would drop observations its adapter has
                # already counted as read (the position saved at a clean stop is past them). Any
                # other source still busy is stuck on its server and is cancelled.
                stuck = {task for task in pending if tasks[task] not in self._handing_over}
                for task in stuck:
                    task.cancel()
                pending -= stuck
            await self._queue.join()
        finally:
            self._draining = False
        if not forget:
            return
        self.sources = [s for s in self.sources if s not in sources]
        for owner_key, owner in list(self._owner.items()):
            if owner in sources:
                del self._owner[owner_key]

    async def _supervise(self, machine: Any) -> SourceSupervisor:
        """A supervised source for one configured machine entry, resuming where the last run stopped."""
        key = source_key(machine)
        factory = adapter_factory(machine.source.type)
        saved = await self.core.read(lambda store: store.load_position(machine.id, key))

        def make(resume: dict[str, Any] | None) -> Adapter:
            return factory(machine, resume=resume)

        counts = self.metrics.source(machine.id, key)
        handing_over, source_id = self._handing_over, (machine.id, key)

        async def deliver(batch: Sequence[Observation]) -> None:
            counts.saw_batch(batch)
            handing_over.add(source_id)
            try:
                await self._deliver(batch)
            finally:
                handing_over.discard(source_id)

        source = SourceSupervisor(machine.id, key, make, deliver, resume=saved)
        self._offsets[(machine.id, key)] = timedelta(seconds=machine.tracking.clock_offset_s)
        for name in machine.signals:
            self._owner[(machine.id, name)] = source
        return source

    async def _save_positions(self) -> None:
        """Save, per source, the position just after the last observation that is processed and stored.

        A store that cannot write keeps them for the next try (and the core reports no new ones while
        parts wait to be stored), so a position never runs ahead of what is stored."""
        positions = dict(self._processed_positions)
        if not positions:
            return
        for key in await self.core.save_positions(positions):
            if self._processed_positions.get(key) is positions[key]:
                del self._processed_positions[key]

    def _note_read_positions(self) -> None:
        """At a clean stop: every source's position where its adapter stopped reading. Not for a
        source that resumes by time (OPC UA): the part in progress is not stored, so it resumes
        from the end of the last stored part (:meth:`_note_processed`) and reads that part again."""
        for source in self.sources:
            if source.adapter is not None and source.adapter.position_at(datetime.now(UTC)) is not None:
                continue
            position = source.adapter.position() if source.adapter is not None else None
            if position is not None:
                self._processed_positions[(source.machine, source.key)] = position

    def _note_processed(self, changes: Changes) -> None:
        """Remember where each source can resume: just after the observation that completed the
        last stored part, whose tracker context is stored with it, so a crash replays the rest;
        for sources that resume by time, just after that part's end (in their own clock)."""
        for part in changes.parts:
            for running in self.sources:
                if running.machine == part.machine and running.adapter is not None:
                    offset = self._offsets.get((running.machine, running.key), timedelta(0))
                    at = running.adapter.position_at(part.end - offset)
                    if at is not None:
                        self._processed_positions[(running.machine, running.key)] = at
        for obs in changes.resume_points.values():
            source = self._owner.get((obs.machine, obs.signal))
            if source is None or source.adapter is None:
                continue
            position = source.adapter.position_after(obs)
            if position is not None:
                self._processed_positions[(source.machine, source.key)] = position

    async def _deliver(self, batch: Sequence[Observation]) -> None:
        """Move one source's batch into the shared bounded queue (waits when full) and the sinks."""
        now = self._last_activity = time.monotonic()
        if batch:
            self._heard[batch[0].machine] = now  # a source reads one machine
        newest: datetime | None = None
        for obs in batch:
            if obs.value is not None and (newest is None or obs.time > newest) and not obs.signal.startswith("source."):
                newest = obs.time  # (source notes carry other clocks)
        if newest is not None:
            machine = batch[0].machine
            last = self._last_obs.get(machine)
            if last is None or newest > last[0]:
                # an older stamp moved the estimate back by its age: a stopped machine's last part then
                # waited that long (31 minutes of controller time in the SIGKILL drill under load)
                self._last_obs[machine] = (newest, now)
        queue = self._queue
        await queue.put_many(batch)
        if queue.qsize() >= self._full_at:
            self._batch_full.set()
        for sink in self.sinks:
            for obs in batch:
                sink.offer(obs)
        if self._track_reads:
            self._note_read(batch)
        for ready, done in self._waiters:
            if not done.done() and ready():
                done.set_result(None)

    def _note_read(self, batch: Sequence[Observation]) -> None:
        """What :meth:`unread` answers from, once ``batch`` is in the queue (a stop from now on processes
        it; a batch still waiting for room in a full queue is not read yet)."""
        read, unavailable, clock = self._read_until, self._unavailable_at, self._machine_clock
        for obs in batch:
            key = (obs.machine, obs.signal)
            into = read if obs.value is not None else unavailable
            seen = into.get(key)
            if seen is None or obs.time > seen:
                into[key] = obs.time
            if obs.value is not None and not obs.signal.startswith("source."):  # those carry other clocks
                reached = clock.get(obs.machine)
                if reached is None or obs.time > reached:
                    clock[obs.machine] = obs.time

    async def _process(self) -> None:
        queue = self._queue
        while True:
            if self.core.writes_full and not (self._stopping or self._draining):
                # the store cannot write and memory holds all it may: take nothing more until it
                # writes again (the queue fills and back-pressure reaches the sources)
                self._room.clear()
                await self._room.wait()
            await queue.wait_readable()
            if queue.qsize() < self._full_at and not (self._stopping or self._draining):
                # gather what the other sources deliver meanwhile: one hand-off for all of it. One
                # wait, not a wake per delivery (a cell delivers a hundred documents a second),
                # ended early by the delivery that fills a batch; a source that finds the queue
                # full (queue_size below batch_size) waits for room until the gathering ends
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._batch_wait_s):
                        await self._batch_full.wait()
            batch = queue.take(self._batch_size)
            if not batch:
                continue
            try:
                self._note_processed(await self.core.ingest(batch))
                self.processed += len(batch)
            finally:
                queue.task_done(len(batch))

    def _quiet(self, now: float) -> frozenset[str]:
        """Machines none of whose sources delivered anything for a few delivery periods (wall clock):
        nothing of theirs is in flight, so nothing can still arrive to be re-ordered."""
        periods: dict[str, float] = {}
        for source in self.sources:
            period = source.adapter.delivery_period_s if source.adapter is not None else 1.0
            periods[source.machine] = max(periods.get(source.machine, 0.0), period)
        return frozenset(m for m, heard in self._heard.items() if now - heard >= 2 * periods.get(m, 1.0) + 1.0)

    async def _tick(self) -> None:
        """Once a second: release parts whose grace ran out (in controller time, estimated from the
        wall clock since the machine last spoke); process at once what waits for re-ordering on
        machines that went quiet (a stopped machine sends no newer data to move the window);
        status; health line."""
        last_health = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            estimates = {m: t + timedelta(seconds=now - seen) for m, (t, seen) in self._last_obs.items()}
            self._note_processed(await self.core.advance(estimates, self._quiet(now)))
            if self.core.writes_waiting:
                self._note_processed(await self.core.retry_writes())
            if not self.core.writes_full:
                self._room.set()
            await self._save_positions()
            body = await self.status()
            if now - last_health >= self._health_every_s:
                last_health = now
                log.info("health %s", body)

    # ------------------------------------------------------------------ leases
    async def _hold_leases(self, lease: MachineLease) -> None:
        """Renew the machines' leases (a shared store) every third of their time, with this daemon's
        health for the plant view. When they cannot be renewed before they run out by this daemon's
        own clock, or another daemon took them, stop writing at once (the store's fence refuses
        every write from now on without asking the server) and end the daemon with LeaseLost."""
        every = lease.ttl_s / 3
        wait = min(every, lease.valid_for_s / 2)
        with contextlib.suppress(TimeoutError):  # the first renewal says where the dashboard is, once it is up
            async with asyncio.timeout(wait):
                await self.started.wait()
                wait = 0.0
        while True:
            await asyncio.sleep(wait)
            info = {"dashboard": self.dashboard_url, "status": self.status_line()}
            try:
                async with asyncio.timeout(max(lease.valid_for_s, 0.01)):
                    await asyncio.to_thread(lease.renew, info)
                wait = every
            except LeaseLost:
                self._lease_lost(lease)
                raise
            except (StoreError, TimeoutError) as exc:
                if lease.valid_for_s <= 0:
                    self._lease_lost(lease)
                    raise LeaseLost(
                        f"could not renew the leases of {', '.join(lease.machines)} in time ({exc or 'no answer'}); "
                        "this daemon stopped writing for them (a standby takes over)"
                    ) from exc
                log.warning("lease renewal failed (%s); %.1f s left, retrying", exc, lease.valid_for_s)
                wait = min(1.0, lease.valid_for_s / 3)

    def _lease_lost(self, lease: MachineLease) -> None:
        lease.lose()
        log.critical("lost the leases of %s: no more writes for them; stopping", ", ".join(lease.machines))
        # the clean stop may hang on a store connection the network cut: end the process anyway
        timer = threading.Timer(max(lease.ttl_s, 5.0), os._exit, args=(EXIT_LEASE_LOST,))
        timer.daemon = True
        timer.start()

    # ------------------------------------------------------------------ reload
    def request_reload(self) -> None:
        """SIGHUP: reload the site and program files soon (requests while one waits are merged)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._reload_requests.put_nowait(None)

    async def _reloader(self) -> None:
        while True:
            await self._reload_requests.get()
            try:
                await self.reload()
            except (MonitorError, OSError, ValueError) as exc:  # a failed reload never ends the daemon
                log.exception("reload failed while it was applied")
                self.last_reload = {"ok": False, "at": datetime.now(UTC).isoformat(), "errors": [f"reload failed: {exc}"]}
                self.metrics.reloads["refused"] += 1

    async def reload(self) -> dict[str, Any]:
        """Re-read the site file and every program file and run them without a restart.

        A configuration with errors is refused (every problem with file and line is logged and
        returned) and the running one goes on. Otherwise: programs take effect for the parts that
        complete from now on (unchanged features keep their detector state); sources added,
        removed or changed are started, stopped or restarted (losslessly, from their positions);
        what only a restart can apply (store path, dashboard, outputs) is reported. Returns what
        happened, as ``last_reload`` in the status."""
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> dict[str, Any]:
        started, at = time.monotonic(), datetime.now(UTC)
        self.notifier.reloading("reloading the configuration")
        old = self.site
        try:
            new = await asyncio.to_thread(load_site, old.path)
            plans = await self.core.prepare(new)
        except ConfigError as exc:
            return self._reload_refused(at, [str(issue) for issue in exc.issues])
        except MonitorError as exc:
            return self._reload_refused(at, [f"{old.path}: {exc}"])
        self.metrics.reloads["applied"] += 1
        plan = plan_reload(old, new)
        await self._stop_sources([*plan.removed, *plan.changed])
        await self._save_positions()  # a restarted source resumes exactly where the stopped one was
        await self.core.reconfigure(new, plans)
        await self.core.warm_up()  # a program's new forecast window
        for sink in self.sinks:  # the InfluxDB points carry each feature's nominal and limits
            reprogram = getattr(getattr(sink, "sink", None), "reprogram", None)
            if reprogram is not None:
                reprogram(new.programs)
        for machine in new.config.machines:
            if (machine.id, source_key(machine)) in (*plan.added, *plan.changed):
                await self._start_source(machine)
        self.config_version = ConfigVersion.of(new, at)
        self.last_reload = {
            "ok": True,
            "at": at.isoformat(),
            "seconds": round(time.monotonic() - started, 3),
            **plan.as_dict(),
        }
        self.notifier.ready(self.status_line())
        log.warning("configuration reloaded in %.0f ms: %s", 1000 * (time.monotonic() - started), plan.summary())
        if plan.needs_restart:
            log.warning("changed in %s but applied only at the next start: %s", old.path, ", ".join(plan.needs_restart))
        self.hub.publish("config", self._config_status())
        return self.last_reload

    def _reload_refused(self, at: datetime, problems: list[str]) -> dict[str, Any]:
        self.metrics.reloads["refused"] += 1
        log.error("reload refused, still running the configuration loaded at %s:", self.config_version.loaded_at.isoformat())
        for problem in problems:
            log.error("  %s", problem)
        self.last_reload = {"ok": False, "at": at.isoformat(), "errors": problems}
        self.notifier.ready(self.status_line() + f"; reload refused ({len(problems)} problem(s), see the log)")
        self.hub.publish("config", self._config_status())
        return self.last_reload


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``monitor run`` runs the daemon on: uvloop's where it is installed (the loop's
    own work, polling, sockets, timers and callbacks, is libuv's C instead of Python: in a 50-machine
    cell 2.5% less CPU per observation, the same behaviour), else None for asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without it (Windows)
        return None
    return uvloop.new_event_loop


def install_signal_handlers(stop: asyncio.Event, reload: Callable[[], None] | None = None) -> None:
    """SIGINT and SIGTERM ask the daemon to stop cleanly; SIGHUP asks it to reload (systemd's
    ``ExecReload``), and without a ``reload`` is ignored rather than ending the process."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload or (lambda: log.warning("SIGHUP ignored: nothing to reload")))


@contextlib.asynccontextmanager
async def open_core(site: Site, *, lock_timeout_s: float = 10.0) -> AsyncIterator[MonitorCore]:
    """The site's core, open for the block: store lock held, store open, pipeline built.

    ``lock_timeout_s``: how long to wait for the store's lock (a command's short write) before
    refusing to start next to another daemon."""
    core = await MonitorCore.open(site, lock_timeout_s=lock_timeout_s)
    try:
        yield core
    finally:
        await core.aclose()


async def _wait_for_leases(site: Site, stop: asyncio.Event, notifier: Notifier) -> MachineLease | None:
    """A shared store: take the site's machines' leases, waiting as a standby while another daemon
    holds them (polling a few times per lease period); None if stopped first."""
    lease = machine_lease(site)
    retry = Retry(STORE_BACKOFF)
    said = ""
    poll = min(1.0, lease.ttl_s / 5)
    while not stop.is_set():
        try:
            if await asyncio.to_thread(lease.try_acquire):
                log.info(
                    "holding the leases of %s as %s (generations %s)",
                    ", ".join(lease.machines),
                    lease.owner,
                    lease.fence.generations,
                )
                return lease
            wait = poll
            retry.succeeded()
            who = lease.waiting_for()
            if who != said:
                said = who
                log.warning("standby: the machines are held by %s; taking over when they stop renewing", who)
                notifier.notify(f"STATUS=standby: waiting for {who}")
        except StoreError as exc:
            if not exc.retryable:
                lease.close()
                raise
            if retry.failures == 0:
                log.error("%s; waiting for the store before taking the machines (retrying with backoff)", exc)
            wait = retry.failed()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await stop.wait()
    lease.close()
    return None


async def _open_core_when_possible(site: Site, stop: asyncio.Event, notifier: Notifier) -> MonitorCore | None:
    """Open the site's core; while the store cannot be opened for a reason that waiting can cure (a
    full disk: SQLite needs a few KiB to open), say why once and retry with backoff. None if stopped first.
    A shared store's standby waits here for the machines' leases."""
    retry = Retry(STORE_BACKOFF)
    lease: MachineLease | None = None
    if site.config.store.url is not None:
        lease = await _wait_for_leases(site, stop, notifier)
        if lease is None:
            return None
    while True:
        try:
            return await MonitorCore.open(site, lease=lease)
        except StoreError as exc:
            if not exc.retryable:
                raise
            if retry.failures == 0:
                log.error("%s; waiting for the store before reading any source (retrying with backoff)", exc)
            wait = retry.failed()
            # tell systemd why the start takes long, and that it does not hang
            notifier.notify(f"EXTEND_TIMEOUT_USEC={int((wait + 30) * 1e6)}", f"STATUS=waiting for the store: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stop.wait()
            if stop.is_set():
                return None


async def run_daemon(
    site: Site, *, stop: asyncio.Event | None = None, on_start: Callable[[Daemon], Awaitable[None]] | None = None
) -> None:
    """Run a daemon for ``site`` until SIGINT/SIGTERM (or ``stop``)."""
    stop = stop or asyncio.Event()
    # its blocking calls (large MTConnect pages, lease renewals, file checks) on a few threads of its
    # own; the loop shuts the executor down when it closes
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="daemon"))
    notifier = Notifier.from_environ(consume=True)
    install_signal_handlers(stop)
    opened = await _open_core_when_possible(site, stop, notifier)
    if opened is None:  # stopped while waiting for the store
        notifier.close()
        return
    try:
        async with opened as core:
            daemon = Daemon(core, notifier=notifier)
            install_signal_handlers(stop, daemon.request_reload)
            runner = asyncio.create_task(daemon.run(stop))
            started = asyncio.create_task(daemon.started.wait())
            await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
            if on_start is not None and daemon.started.is_set():
                await on_start(daemon)
            await runner
            started.cancel()
    except BaseExceptionGroup as group:
        lost = group.subgroup(LeaseLost)
        if lost is None:
            raise
        raise _first_leaf(lost) from None


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
