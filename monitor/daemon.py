"""The daemon: wires adapters, the pipeline, the store, sinks and the dashboard; owns no logic.

Task tree (one ``asyncio.TaskGroup``; stopping is cancelling it)::

    Daemon.run
    ├── source:<machine>    one per configured source: a SourceSupervisor runs its adapter (restarted
    │                       after any failure, which ends there) and moves observations -> bounded queue
    ├── process             queue -> Pipeline (in the store's worker thread) -> sinks, hub
    ├── tick                releases parts whose grace window ran out; health line
    ├── watchdog            systemd watchdog pings and status line, from this loop (Type=notify)
    ├── loop-lag            how late the event loop runs timers (metrics)
    ├── reload              SIGHUP / POST /api/reload: re-read the configuration, apply the difference
    ├── sink:<name>         one RunningSink per configured output
    └── dashboard           the web server, when enabled

SIGINT/SIGTERM set the stop event: adapters stop, the queue drains, parts waiting in a grace
window are stored, sinks flush (bounded), the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from adapters.base import Adapter
from monitor.codec import alert_to_dict, part_to_dict
from monitor.config import Site, load_site
from monitor.dashboard.server import serve_dashboard
from monitor.errors import ConfigError, MonitorError, StoreError
from monitor.events import EventHub
from monitor.metrics import DaemonMetrics
from monitor.model import Alert, Observation, PartRecord
from monitor.pipeline import Outcome, Pipeline
from monitor.plugins import adapter_factory, build_sinks
from monitor.reload import ConfigVersion, plan_reload, source_key
from monitor.retry import Backoff, Retry
from monitor.service.notify import Notifier
from monitor.store import Store
from monitor.supervisor import SourceSupervisor

__all__ = [
    "STORE_BACKOFF",
    "Daemon",
    "OutputSink",
    "daemon_api_url",
    "install_signal_handlers",
    "run_daemon",
    "runtime_file",
    "source_key",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

STORE_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
"""Waits between attempts to open a store that cannot be opened yet (a full disk)."""


class OutputSink(Protocol):
    """What the daemon needs of a sink wrapper (see monitor.sinks.base.RunningSink)."""

    name: str

    def offer(self, event: PartRecord | Alert | Observation) -> None: ...

    async def run(self) -> None: ...

    async def aclose(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Daemon:
    """One site's monitor. Build it, then ``await daemon.run(stop)``."""

    def __init__(
        self,
        site: Site,
        *,
        hub: EventHub | None = None,
        queue_size: int = 10_000,
        batch_size: int = 500,
        health_every_s: float = 60.0,
        notifier: Notifier | None = None,
    ) -> None:
        self.site = site
        self.notifier = notifier or Notifier(None)
        self.hub = hub or EventHub()
        self._queue: asyncio.Queue[Observation] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._health_every_s = health_every_s
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store: Store | None = None
        self.pipeline: Pipeline | None = None
        self.sources: list[SourceSupervisor] = []
        self.sinks: list[OutputSink] = []
        self.dashboard_url: str | None = None
        self._last_obs: dict[str, tuple[datetime, float]] = {}
        self._owner: dict[tuple[str, str], SourceSupervisor] = {}
        self._processed_positions: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_activity = time.monotonic()
        self._drain_timeout_s = 3.0
        self._started_at: str | None = None
        self._runtime_file_failing = False
        self._runtime_file_written = False
        self._stopping = False
        self._draining = False
        self._room = asyncio.Event()  # cleared while the store cannot write and held writes are at their bound
        self._room.set()
        self.started = asyncio.Event()
        self.config_version = ConfigVersion.of(site)
        self.last_reload: dict[str, Any] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._source_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._reload_lock = asyncio.Lock()
        self._reload_requests: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self.metrics = DaemonMetrics(self)

    # ------------------------------------------------------------------ helpers
    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run store/pipeline work on the single worker thread (never on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    @property
    def adapters(self) -> list[Adapter]:
        """The adapter each source runs now (a source restarted after a failure runs a new one)."""
        return [s.adapter for s in self.sources if s.adapter is not None]

    @property
    def queued(self) -> int:
        """Observations waiting for the pipeline."""
        return self._queue.qsize()

    def idle_for(self) -> float:
        """Seconds since any source last delivered an observation."""
        return time.monotonic() - self._last_activity

    def status(self) -> dict[str, Any]:
        """Health of every part of the daemon, for the health line and the dashboard."""
        machines = {}
        if self.pipeline is not None:
            machines = {m: s.as_dict() for m, s in self.pipeline.status.items()}
            for m, tracker in self.pipeline.trackers.items():
                machines[m]["tracking"] = dict(tracker.counts)  # late, duplicate, orphan values...
        for source in self.sources:
            entry = machines.setdefault(source.machine, {"machine": source.machine})
            entry.setdefault("sources", []).append(source.status())
        return {
            "site": self.site.config.site,
            "machines": machines,
            "sinks": {s.name: s.status() for s in self.sinks},
            "queue": self._queue.qsize(),
            "counts": dict(self.pipeline.counts) if self.pipeline else {},
            "config": {**self.config_version.as_dict(), "last_reload": self.last_reload},
            "store": self._store_status(),
        }

    def _store_status(self) -> dict[str, Any]:
        held = self.pipeline.held if self.pipeline is not None else None
        if held is None:
            return {"writable": self.store is not None}
        out: dict[str, Any] = {"writable": not held, "waiting_writes": len(held), "written_late": held.written_late}
        if held and held.last_error:
            out["error"] = held.last_error
        return out

    def status_line(self) -> str:
        """One line for ``systemctl status``: machines connected, parts stored, outputs failing."""
        body = self.status()
        machines = body["machines"].values()
        connected = sum(1 for m in machines if m.get("connection") == "connected")
        parts = sum(int(m.get("parts") or 0) for m in machines)
        failing = [name for name, s in body["sinks"].items() if s.get("state") in ("retrying", "down")]
        line = f"{connected}/{len(machines)} machines connected, {parts} parts stored"
        if not body["store"]["writable"]:
            line += f"; STORE CANNOT WRITE ({body['store'].get('waiting_writes', 0)} writes wait)"
        return line + (f"; output(s) failing: {', '.join(failing)}" if failing else "")

    async def acknowledge(self, alert_id: str) -> Alert | None:
        assert self.pipeline is not None
        alert = await self.call(self.pipeline.acknowledge, alert_id)
        if alert is not None:
            self._publish(Outcome(alerts=[alert]))
        return alert

    async def close_alert(self, alert_id: str) -> Alert | None:
        assert self.pipeline is not None
        alert = await self.call(self.pipeline.close_alert, alert_id)
        if alert is not None:
            self._publish(Outcome(alerts=[alert]))
        return alert

    # --------------------------------------------------------------------- run
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then shut down cleanly, flushing everything."""
        self.store = await self._open_store(stop)
        if self.store is None:  # stopped while waiting for the store
            self._worker.shutdown(wait=True)
            return
        self.store.on_write = self.metrics.on_store_write
        try:
            self.pipeline = await self.call(Pipeline, self.site, self.store)
            store = self.store
            open_alerts = await self.call(lambda: store.alerts(open_only=True))  # for outputs that count them
            self.sinks = [*build_sinks(self.site, open_alerts=open_alerts)]
            async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
                self._tasks = tg
                for machine in self.site.config.machines:
                    await self._start_source(machine)
                sink_tasks = [tg.create_task(s.run(), name=f"sink:{s.name}") for s in self.sinks]
                processor = tg.create_task(self._process(), name="process")
                ticker = tg.create_task(self._tick(), name="tick")
                reloader = tg.create_task(self._reloader(), name="reload")
                lag = tg.create_task(self.metrics.measure_loop_lag(), name="loop-lag")
                await self._start_dashboard(stack)
                await self.call(self._write_runtime_file)
                stack.callback(self._remove_runtime_file)
                watchdog = tg.create_task(self.notifier.keep_alive(self.status_line), name="watchdog")
                self.started.set()
                self.notifier.ready(self.status_line())
                await stop.wait()
                self.notifier.stopping("stopping: draining sources, storing parts, flushing outputs")
                ticker.cancel()
                async with self._reload_lock:  # a reload in progress finishes first
                    reloader.cancel()
                # stop reading, then let the pumps drain what the adapters already hold: every
                # observation taken from a controller is processed and stored before we stop
                self._stopping = True  # the processor no longer waits for a store that cannot write
                self._room.set()
                await self._stop_sources(list(self._source_tasks), forget=False)
                processor.cancel()
                await self.call(self._save_positions)
                outcome = await self.call(self.pipeline.close)
                self._publish(outcome)
                flushed = await self.call(functools.partial(self.pipeline.retry_held, force=True))
                self._note_processed(flushed)
                self._publish(flushed)
                if not self.pipeline.held:
                    # everything read is processed and stored, the trackers' contexts too: each source
                    # resumes exactly where it stopped reading
                    self._note_read_positions()
                await self.call(self._save_positions)
                if self.pipeline.held:
                    log.error(
                        "stopping with %d store writes not done (%s); the sources' saved positions are from before "
                        "them, so an agent that still holds the data replays it at the next start",
                        len(self.pipeline.held),
                        self.pipeline.held.last_error,
                    )
                for sink in self.sinks:
                    await sink.aclose()
                for task in sink_tasks:
                    task.cancel()
                watchdog.cancel()
                lag.cancel()
        finally:
            self.notifier.close()
            if self.store is not None:
                await self.call(self.store.close)
            self._worker.shutdown(wait=True)
            log.info("daemon stopped")

    # ------------------------------------------------------------------ sources
    async def _start_source(self, machine: Any) -> None:
        """Start one configured source under supervision, in the daemon's task group."""
        assert self._tasks is not None
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
        tasks = [self._source_tasks.pop((s.machine, s.key)) for s in sources]
        if tasks:
            await asyncio.wait(tasks, timeout=self._drain_timeout_s)
        for task in tasks:
            task.cancel()
        self._draining = True  # what the stopped sources handed over is processed even past the held-writes bound
        self._room.set()
        try:
            await self._queue.join()
        finally:
            self._draining = False
        if not forget:
            return
        self.sources = [s for s in self.sources if s not in sources]
        for owner_key, owner in list(self._owner.items()):
            if owner in sources:
                del self._owner[owner_key]

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
        assert self.pipeline is not None
        started, at = time.monotonic(), datetime.now(UTC)
        self.notifier.reloading("reloading the configuration")
        try:
            new = await asyncio.to_thread(load_site, self.site.path)
            plans = await self.call(self.pipeline.engine.prepare, new.programs)
        except ConfigError as exc:
            return self._reload_refused(at, [str(issue) for issue in exc.issues])
        except MonitorError as exc:
            return self._reload_refused(at, [f"{self.site.path}: {exc}"])
        self.metrics.reloads["applied"] += 1
        plan = plan_reload(self.site, new)
        await self._stop_sources([*plan.removed, *plan.changed])
        await self.call(self._save_positions)  # a restarted source resumes exactly where the stopped one was
        outcome = await self.call(self.pipeline.reconfigure, new, plans)
        self._publish(outcome)
        for sink in self.sinks:  # the InfluxDB points carry each feature's nominal and limits
            reprogram = getattr(getattr(sink, "sink", None), "reprogram", None)
            if reprogram is not None:
                reprogram(new.programs)
        self.site = new
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
            log.warning("changed in %s but applied only at the next start: %s", self.site.path, ", ".join(plan.needs_restart))
        self.hub.publish("config", self.status()["config"])
        return self.last_reload

    def _reload_refused(self, at: datetime, problems: list[str]) -> dict[str, Any]:
        self.metrics.reloads["refused"] += 1
        log.error("reload refused, still running the configuration loaded at %s:", self.config_version.loaded_at.isoformat())
        for problem in problems:
            log.error("  %s", problem)
        self.last_reload = {"ok": False, "at": at.isoformat(), "errors": problems}
        self.notifier.ready(self.status_line() + f"; reload refused ({len(problems)} problem(s), see the log)")
        self.hub.publish("config", self.status()["config"])
        return self.last_reload

    async def _supervise(self, machine: Any) -> SourceSupervisor:
        """A supervised source for one configured machine entry, resuming where the last run stopped."""
        assert self.store is not None
        key = source_key(machine)
        factory = adapter_factory(machine.source.type)
        saved = await self.call(self.store.load_position, machine.id, key)

        def make(resume: dict[str, Any] | None) -> Adapter:
            return factory(machine, resume=resume)

        counts = self.metrics.source(machine.id, key)

        async def deliver(obs: Observation) -> None:
            counts.saw(obs)
            await self._deliver(obs)

        source = SourceSupervisor(machine.id, key, make, deliver, resume=saved)
        for name in machine.signals:
            self._owner[(machine.id, name)] = source
        return source

    async def _open_store(self, stop: asyncio.Event) -> Store | None:
        """Open the store; while it cannot be opened for a reason that waiting can cure (a full disk:
        SQLite needs a few KiB to open), say why once and retry with backoff. None if stopped first."""
        retry = Retry(STORE_BACKOFF)
        while True:
            try:
                return await self.call(Store, self.site.store_path)
            except StoreError as exc:
                if not exc.retryable:
                    raise
                if retry.failures == 0:
                    log.error("%s; waiting for the store before reading any source (retrying with backoff)", exc)
                wait = retry.failed()
                # tell systemd why the start takes long, and that it does not hang
                self.notifier.notify(f"EXTEND_TIMEOUT_USEC={int((wait + 30) * 1e6)}", f"STATUS=waiting for the store: {exc}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await stop.wait()
                if stop.is_set():
                    return None

    def _save_positions(self) -> None:
        """Save, per source, the position just after the last observation that is processed and stored.

        A store that cannot write keeps them for the next try (and the pipeline reports no new ones
        while parts wait to be stored), so a position never runs ahead of what is stored."""
        assert self.store is not None
        for (machine, key), position in list(self._processed_positions.items()):
            try:
                self.store.save_position(machine, key, position)
            except StoreError as exc:
                if not exc.retryable:
                    raise
                log.debug("position of %s not saved yet: %s", machine, exc)
                return
            if self._processed_positions.get((machine, key)) is position:
                del self._processed_positions[(machine, key)]

    def _note_processed(self, outcome: Outcome) -> None:
        """Remember where each source can resume: just after the observation that completed the
        last stored part, whose tracker context is stored with it, so a crash replays the rest."""
        for obs in outcome.resume_points.values():
            source = self._owner.get((obs.machine, obs.signal))
            if source is None or source.adapter is None:
                continue
            position = source.adapter.position_after(obs)
            if position is not None:
                self._processed_positions[(source.machine, source.key)] = position

    def _note_read_positions(self) -> None:
        """At a clean stop: every source's position where its adapter stopped reading."""
        for source in self.sources:
            position = source.adapter.position() if source.adapter is not None else None
            if position is not None:
                self._processed_positions[(source.machine, source.key)] = position

    def _write_runtime_file(self) -> None:
        """Tell the CLI (status, ack) where this daemon's API is, even when the port was chosen at bind,
        and how the daemon is doing (refreshed every second: `monitor status` reads it when the
        dashboard is disabled).

        Written whole or not at all (a temporary file renamed over it): a reader never sees half, and
        a full disk leaves no empty or torn file, only a warning once (the CLI then falls back to
        the site's dashboard settings)."""
        if self._started_at is None:
            self._started_at = datetime.now(UTC).isoformat()
        body = {
            "pid": os.getpid(),
            "dashboard_url": self.dashboard_url,
            "started": self._started_at,
            "updated": datetime.now(UTC).isoformat(),
            "status": self.status(),
        }
        path = runtime_file(self.site)
        temporary = path.with_name(path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(body, default=str), encoding="utf-8")
            temporary.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
                if not self._runtime_file_written:
                    path.unlink(missing_ok=True)  # a previous daemon's: the CLI must not follow it to a dead process
            if not self._runtime_file_failing:
                log.warning("cannot write %s (%s); `monitor status` and `ack` use the site's dashboard settings", path, exc)
            self._runtime_file_failing = True
            return
        self._runtime_file_written = True
        if self._runtime_file_failing:
            self._runtime_file_failing = False
            log.warning("%s is written again", path)

    def _remove_runtime_file(self) -> None:
        runtime_file(self.site).unlink(missing_ok=True)

    async def _start_dashboard(self, stack: contextlib.AsyncExitStack) -> None:
        """Serve the dashboard (when enabled) until the exit stack closes."""
        config = self.site.config.dashboard
        if not config.enabled:
            return
        runner = await serve_dashboard(self, config.bind, config.port)
        stack.push_async_callback(runner.cleanup)
        self.dashboard_url = f"http://{config.bind}:{runner.addresses[0][1]}/"
        log.warning("dashboard at %s", self.dashboard_url)

    async def _deliver(self, obs: Observation) -> None:
        """Move one source's observation into the shared bounded queue (waits when full) and the sinks."""
        self._last_activity = time.monotonic()
        if obs.value is not None and not obs.signal.startswith("source."):  # those carry other clocks
            self._last_obs[obs.machine] = (obs.time, time.monotonic())
        await self._queue.put(obs)
        for sink in self.sinks:
            sink.offer(obs)

    async def _process(self) -> None:
        assert self.pipeline is not None
        while True:
            if self.pipeline.held.full and not (self._stopping or self._draining):
                # the store cannot write and memory holds all it may: take nothing more until it
                # writes again (the queue fills and back-pressure reaches the sources)
                self._room.clear()
                await self._room.wait()
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcome = await self.call(self.pipeline.observe, batch)
                self._note_processed(outcome)
                self._publish(outcome)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _tick(self) -> None:
        """Once a second: release parts whose grace ran out (in controller time); health line."""
        assert self.pipeline is not None
        last_health = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            estimates = {m: t + timedelta(seconds=now - seen) for m, (t, seen) in self._last_obs.items()}
            outcome = await self.call(self.pipeline.advance, estimates)
            self._publish(outcome)
            if self.pipeline.held:
                flushed = await self.call(self.pipeline.retry_held)
                self._note_processed(flushed)
                self._publish(flushed)
            if not self.pipeline.held.full:
                self._room.set()
            if self._processed_positions:
                await self.call(self._save_positions)
            await self.call(self._write_runtime_file)
            if now - last_health >= self._health_every_s:
                last_health = now
                log.info("health %s", self.status())

    def _publish(self, outcome: Outcome) -> None:
        for machine in outcome.machines.values():
            self.hub.publish("machine", machine)
        for part in outcome.parts:
            self.hub.publish("part", part_to_dict(part))
            for sink in self.sinks:
                sink.offer(part)
        for alert in outcome.alerts:
            self.hub.publish("alert", alert_to_dict(alert))
            for sink in self.sinks:
                sink.offer(alert)
            log.warning("ALERT %s %s %s: %s", alert.severity, alert.state, alert.machine, alert.message)


def runtime_file(site: Site) -> Path:
    """Where a running daemon of ``site`` says who it is and where its API listens."""
    return site.store_path.with_name(site.store_path.name + ".daemon.json")


def daemon_api_url(site: Site) -> str | None:
    """Base URL of the running daemon's API: from its runtime file, else from the site's dashboard config."""
    try:
        body = json.loads(runtime_file(site).read_text(encoding="utf-8"))
        url = body.get("dashboard_url")
        if isinstance(url, str):
            return url.replace("://0.0.0.0:", "://127.0.0.1:")
    except (OSError, ValueError):
        pass
    dash = site.config.dashboard
    if not dash.enabled or dash.port == 0:
        return None
    host = "127.0.0.1" if dash.bind in ("0.0.0.0", "::") else dash.bind
    return f"http://{host}:{dash.port}/"


def install_signal_handlers(stop: asyncio.Event, reload: Callable[[], None] | None = None) -> None:
    """SIGINT and SIGTERM ask the daemon to stop cleanly; SIGHUP asks it to reload (systemd's
    ``ExecReload``), and without a ``reload`` is ignored rather than ending the process."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload or (lambda: log.warning("SIGHUP ignored: nothing to reload")))


async def run_daemon(
    site: Site, *, stop: asyncio.Event | None = None, on_start: Callable[[Daemon], Awaitable[None]] | None = None
) -> Daemon:
    """Run a daemon for ``site`` until SIGINT/SIGTERM (or ``stop``); returns it for its final status."""
    stop = stop or asyncio.Event()
    daemon = Daemon(site, notifier=Notifier.from_environ(consume=True))
    install_signal_handlers(stop, daemon.request_reload)
    runner = asyncio.create_task(daemon.run(stop))
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if on_start is not None and daemon.started.is_set():
        await on_start(daemon)
    await runner
    started.cancel()
    return daemon
