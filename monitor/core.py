"""The daemon's core: the store, the pipeline, the event hub and the alert state of one site.

:meth:`MonitorCore.open` builds all of it before anything runs (it takes the store's lock, opens
the store, applies what people changed while no daemon ran, and builds the trackers and the drift
engine), so nothing that uses a core ever meets a half-built one. Everything that reads or changes
what the monitor knows runs on the core's one worker thread, in submission order: the event loop
only waits, and there is exactly one writer of alert state.

Who uses it, and through what:

- the daemon feeds it: :meth:`~MonitorCore.ingest` (observations), :meth:`~MonitorCore.advance`
  (grace windows in controller time), :meth:`~MonitorCore.finish` (shutdown), and wires its tasks;
- everything else goes through :class:`MonitorApi`, a small typed Protocol: the dashboard, the
  local control API that the CLI's ``ack`` and ``status`` use (:mod:`monitor.control`), and
  whatever comes next (metrics, actions). People's changes enter as commands
  (:class:`Acknowledge`, :class:`CloseAlert`) through :meth:`MonitorApi.execute`; every alert change,
  from a person or a detector, leaves as an event to the hub and to every output, in the order it
  was stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from monitor import libpages
from monitor.codec import action_to_dict, alert_to_dict, part_to_dict
from monitor.commands import Acknowledge, AlertCommand, CloseAlert, Command, Outcome, RecordAction
from monitor.config import Site
from monitor.errors import StoreError
from monitor.events import EventHub, Subscription
from monitor.inspection.importer import ImportOptions, ImportSummary, ResultsOutcome, import_files, rematch
from monitor.model import ActionKind, Alert, Observation, PartRecord, out_of_tolerance
from monitor.runtime import StoreLock
from monitor.store import Store, StoreReader, open_store
from monitor.store.lease import MachineLease, take_lease
from monitor.users import authorize

if TYPE_CHECKING:  # the pipeline (detection, scipy) loads when a core opens: a CLI client of the core does not pay for it
    from monitor.pipeline import Changes, Pipeline

__all__ = [
    "Acknowledge",
    "AlertCommand",
    "CloseAlert",
    "Command",
    "CoreCounts",
    "MonitorApi",
    "MonitorCore",
    "Outcome",
    "Output",
    "RecordAction",
    "StatusPart",
    "machine_lease",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Output = Callable[[PartRecord | Alert | Observation], None]
"""Where the core hands every stored part and alert change (a sink's ``offer``: never blocks)."""

StatusPart = Callable[[dict[str, Any]], None]
"""Adds what the core does not know to its status document (sources, outputs, queue)."""


@dataclass(frozen=True)
class CoreCounts:
    """What the core counted since it was opened, for metrics."""

    parts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Parts stored, by (machine, status)."""
    open_alerts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Alerts open or acknowledged now (feature conditions and machine alerts), by (machine, severity)."""
    open_conditions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Feature conditions not ok now, by (machine, condition, state): open or acknowledged."""


class MonitorApi(Protocol):
    """What the dashboard, the control API and other services may use of a running monitor."""

    @property
    def site(self) -> Site:
        """The site the monitor watches (machines, programs, dashboard settings)."""
        ...

    def subscribe(self, size: int = 1000) -> Subscription:
        """Live events (``part``, ``alert``, ``machine``) on a bounded queue of its own."""
        ...

    async def status(self) -> dict[str, Any]:
        """Health of every part of the monitor: machines, sources, outputs, counters."""
        ...

    async def read(self, query: Callable[[StoreReader], _T]) -> _T:
        """Run a read-only ``query`` against the store on the core's thread."""
        ...

    async def feature_view(self, machine: str, program: str, feature: str) -> dict[str, Any]:
        """The drift engine's live view of one feature (limits, control limits, forecast, capability)."""
        ...

    async def execute(self, command: Command) -> Outcome:
        """Apply a person's change. An acknowledgement or close of no such open alert changes nothing
        (``Outcome(None, None)``); a role that may not do it, or an action naming what does not
        exist, raises :class:`~monitor.errors.ActionError`."""
        ...

    async def counts(self) -> CoreCounts:
        """Parts stored and alerts open, counted (for metrics)."""
        ...

    def unstored_alerts(self) -> list[Alert]:
        """Alerts in force that the store does not hold yet (``store_unwritable`` while it cannot write)."""
        ...


def _release_compiler_pages() -> None:
    """Once the compiled kernels are loaded, the compiler's library pages go back to the kernel
    (:mod:`monitor.libpages`): about 69 MB of a daemon's resident memory that nothing uses again."""
    before = libpages.resident(libpages.COMPILER)
    if libpages.release(libpages.COMPILER):
        after = libpages.resident(libpages.COMPILER)
        log.info("compiler library pages released: %.1f -> %.1f MB resident", before / 2**20, after / 2**20)


def machine_lease(site: Site) -> MachineLease:
    """The lease of every machine of ``site`` in its shared store (not taken yet)."""
    url = site.config.store.url
    if url is None:
        raise ValueError("a SQLite store has a lock file, not leases")
    return MachineLease(url, site.machine_ids(), cell=site.config.site, ttl_s=site.config.store.lease_s)


class MonitorCore:
    """One site's store, pipeline, event hub and alert state; a :class:`MonitorApi`. Build with :meth:`open`."""

    def __init__(
        self,
        site: Site,
        store: Store,
        pipeline: Pipeline,
        lock: StoreLock | MachineLease,
        worker: ThreadPoolExecutor,
        hub: EventHub,
    ) -> None:
        self._site = site
        self._store = store
        self._pipeline = pipeline
        self._lock = lock
        self.lease = lock if isinstance(lock, MachineLease) else None
        """The machines' leases in a shared store (the daemon renews them), None for a SQLite store."""
        self._worker = worker
        self.hub = hub
        self._outputs: list[Output] = []
        self._status_parts: list[StatusPart] = []
        self._closed = False

    # ------------------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(
        cls, site: Site, *, hub: EventHub | None = None, lock_timeout_s: float = 10.0, lease: MachineLease | None = None
    ) -> MonitorCore:
        """Take the store's lock, open the store and build the pipeline (all off the event loop).

        A shared (PostgreSQL) store has no lock file: the site's machines' ``lease`` is taken
        instead (given already held by a standby that waited for it, else taken here within
        ``lock_timeout_s``), and every write is fenced by it."""
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        loop = asyncio.get_running_loop()
        url = site.config.store.url
        lock: StoreLock | MachineLease = StoreLock(site.store_path) if url is None else lease or machine_lease(site)
        opened: list[Store] = []

        from monitor.pipeline import Pipeline

        def build() -> tuple[Store, Pipeline]:
            if isinstance(lock, StoreLock):
                lock.acquire(lock_timeout_s)
            elif lock.valid_for_s <= 0:
                take_lease(lock, lock_timeout_s)
            store = open_store(site.store_location, fence=lock.fence if isinstance(lock, MachineLease) else None)
            opened.append(store)
            return store, Pipeline(site, store)

        try:
            store, pipeline = await loop.run_in_executor(worker, build)
        except BaseException:
            for store in opened:
                await loop.run_in_executor(worker, store.close)
            lock.release()
            worker.shutdown(wait=True)
            raise
        return cls(site, store, pipeline, lock, worker, hub or EventHub())

    async def aclose(self) -> None:
        """Close the store and release the lock; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._call(self._store.close)
        finally:
            self._lock.release()
            self._worker.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --------------------------------------------------------------------------------- wiring
    def add_output(self, output: Output) -> None:
        """Hand every stored part and alert change to ``output`` too (the daemon adds each sink)."""
        self._outputs.append(output)

    def add_status(self, part: StatusPart) -> None:
        """Let ``part`` add to every status document (runs on the event loop)."""
        self._status_parts.append(part)

    def time_store_writes(self, hook: Callable[[str, float], None]) -> None:
        """Call ``hook(kind, seconds)`` after each store transaction (on the core's thread): metrics."""
        self._store.on_write = hook

    # -------------------------------------------------------------------------------- the API
    @property
    def site(self) -> Site:
        return self._site

    def subscribe(self, size: int = 1000) -> Subscription:
        return self.hub.subscribe(size)

    async def status(self) -> dict[str, Any]:
        body = await self._call(self._pipeline_status)
        for part in self._status_parts:
            part(body)
        return body

    async def read(self, query: Callable[[StoreReader], _T]) -> _T:
        return await self._call(query, self._store)

    async def feature_view(self, machine: str, program: str, feature: str) -> dict[str, Any]:
        return await self._call(self._feature_view, machine, program, feature)

    def _feature_view(self, machine: str, program: str, feature: str) -> dict[str, Any]:
        from monitor.feature_view import feature_view

        view = feature_view(self._pipeline.engine.snapshot(machine, program, feature))
        return {"machine": machine, "program": program, "feature": feature, **view}

    async def execute(self, command: Command) -> Outcome:
        if isinstance(command, RecordAction):
            authorize(command.user, command.kind)
            outcome = await self._call(self._pipeline.record_action, command)
        else:
            kind = ActionKind.ACKNOWLEDGE if isinstance(command, Acknowledge) else ActionKind.CLOSE
            authorize(command.user, kind)
            outcome = await self._call(self._pipeline.alert_command, command)
        if outcome.alert is not None:
            from monitor.pipeline import Changes

            self._publish(Changes(alerts=[outcome.alert]))
        if outcome.action is not None:
            self.hub.publish("action", action_to_dict(outcome.action))
        return outcome

    async def counts(self) -> CoreCounts:
        def take() -> CoreCounts:
            counts = CoreCounts(parts=Counter(self._pipeline.parts_by_status))
            for alert in self._pipeline.engine.open_alerts():
                counts.open_alerts[(alert.machine, str(alert.severity))] += 1
                if alert.condition is not None:
                    counts.open_conditions[(alert.machine, str(alert.condition), str(alert.state))] += 1
            return counts

        return await self._call(take)

    def unstored_alerts(self) -> list[Alert]:
        alert = self._pipeline.held.alert
        return [alert] if alert is not None else []

    async def warm_up(self) -> None:
        """Build the detectors' process-wide tables for the site's programs now
        (:func:`monitor.detect.warm_up`), on the core's thread: a daemon's memory then stays where
        its first minute put it instead of growing as its batches reach longer windows."""
        from monitor.detect import warm_up

        windows = {program.detection.forecast_window for program in self._site.programs.values()}
        await self._call(warm_up, windows)
        await self._call(_release_compiler_pages)

    # ---------------------------------------------------------------------------- reloading
    async def prepare(self, site: Site) -> Mapping[str, Any]:
        """Check that ``site``'s programs can run (solving their detection plans, the costly part)
        without changing anything; raises what is wrong. Returns the plans for :meth:`reconfigure`."""
        plans: Mapping[str, Any] = await self._call(self._pipeline.engine.prepare, site.programs)
        return plans

    async def reconfigure(self, site: Site, plans: Mapping[str, Any]) -> Changes:
        """Run ``site`` from the next observation on (a reload); publishes what that changed (the
        alerts of changed features close)."""
        changes = await self._call(self._pipeline.reconfigure, site, plans)
        self._site = site
        self._publish(changes)
        return changes

    # ------------------------------------------------------------------------------ feeding
    async def ingest(self, batch: Sequence[Observation]) -> Changes:
        """Track, detect on and store a batch of observations; publishes and returns what changed."""
        changes = await self._call(self._pipeline.observe, batch)
        self._publish(changes)
        return changes

    async def advance(self, now_by_machine: Mapping[str, datetime], quiet: frozenset[str] = frozenset()) -> Changes:
        """Release parts whose grace window ran out in controller time; for ``quiet`` machines (their
        sources delivered nothing for a while, by the wall clock) first what waits for re-ordering."""
        changes = await self._call(self._pipeline.advance, dict(now_by_machine), quiet)
        self._publish(changes)
        return changes

    async def finish(self) -> Changes:
        """Shutdown: store the parts still waiting in a grace window."""
        changes = await self._call(self._pipeline.close)
        self._publish(changes)
        return changes

    async def import_inspection(self, paths: Sequence[Path], options: ImportOptions) -> ImportSummary:
        """Import inspection result files into the store (on the store thread, between parts) and
        let the drift engine watch what they brought; publishes the alert changes."""

        def run() -> tuple[ImportSummary, Changes]:
            summary = import_files(self._site, self._store, list(paths), options)
            return summary, self._pipeline.inspection_changed()

        summary, changes = await self._call(run)
        if summary.rematched:
            self.hub.publish("inspection", {"rematched": [r.as_dict() for r in summary.rematched]})
        self._publish(changes)
        return summary

    async def rematch_inspection(self) -> list[ResultsOutcome]:
        """Try inspection results that wait for their part again, and let the drift engine watch
        results stored meanwhile (``monitor import`` writes the store while the daemon runs); the
        newly matched (published as an ``inspection`` event when there are any)."""

        def run() -> tuple[list[ResultsOutcome], Changes]:
            found = rematch(self._site, self._store)
            return found, self._pipeline.inspection_changed()

        found, changes = await self._call(run)
        if found:
            self.hub.publish("inspection", {"rematched": [r.as_dict() for r in found]})
        self._publish(changes)
        return found

    async def save_positions(self, positions: Mapping[tuple[str, str], dict[str, Any]]) -> set[tuple[str, str]]:
        """Remember where each (machine, source) can resume after a restart; returns those saved.

        A store that cannot write now (a full disk) saves none; the caller keeps them for the next try."""

        def save() -> set[tuple[str, str]]:
            saved: set[tuple[str, str]] = set()
            for (machine, key), position in positions.items():
                try:
                    self._store.save_position(machine, key, position)
                except StoreError as exc:
                    if not exc.retryable:
                        raise
                    log.debug("position of %s not saved yet: %s", machine, exc)
                    break
                saved.add((machine, key))
            return saved

        return await self._call(save)

    # ------------------------------------------------------------------- a store that waits
    @property
    def writes_waiting(self) -> bool:
        """True while the store cannot write and parts, alerts or acks wait in memory for it."""
        return bool(self._pipeline.held)

    @property
    def writes_full(self) -> bool:
        """True when the writes waiting for the store are at their bound: take no more observations."""
        return self._pipeline.held.full

    async def retry_writes(self, *, force: bool = False) -> Changes:
        """Store what waits for the store (when its backoff ran out, or now with ``force``)."""
        changes = await self._call(functools.partial(self._pipeline.retry_held, force=force))
        self._publish(changes)
        return changes

    # ---------------------------------------------------------------------------- internals
    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _pipeline_status(self) -> dict[str, Any]:
        pipeline = self._pipeline
        machines = {m: s.as_dict() for m, s in pipeline.status.items()}
        for m, tracker in pipeline.trackers.items():
            machines[m]["tracking"] = dict(tracker.counts)  # late, duplicate, orphan values...
        held = pipeline.held
        store: dict[str, Any] = {"writable": not held, "waiting_writes": len(held), "written_late": held.written_late}
        if held and held.last_error:
            store["error"] = held.last_error
        return {"site": self._site.config.site, "machines": machines, "counts": dict(pipeline.counts), "store": store}

    def _publish(self, changes: Changes) -> None:
        for machine in changes.machines.values():
            self.hub.publish("machine", machine)
        for part in changes.parts:
            program = self._site.programs.get(part.program)
            bad = out_of_tolerance(program.feature_models(), part.measurements) if program is not None else {}
            self.hub.publish("part", {**part_to_dict(part), "out_of_tolerance": bad})  # red in every table, live too
            for output in self._outputs:
                output(part)
        for alert in changes.alerts:
            self.hub.publish("alert", alert_to_dict(alert))
            for output in self._outputs:
                output(alert)
            log.warning("ALERT %s %s %s: %s", alert.severity, alert.state, alert.machine, alert.message)
