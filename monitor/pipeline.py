"""The synchronous core of the daemon: observation in, stored parts and alert changes out.

Everything here is plain code (no asyncio) so it can run in the daemon's worker thread, in tests
without an event loop, and in benchmarks. Per observation: the machine's tracker may finish parts;
each finished part goes through the drift engine and lands in the store in one transaction with
the alerts it raised and the engine state after it.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor import statelog
from monitor.codec import dumps
from monitor.commands import Acknowledge, AlertCommand, Outcome, RecordAction, make_action, store_part_lookup
from monitor.config import Site
from monitor.detect.watch import WatchPlan
from monitor.engine import DriftEngine, SeriesPoint
from monitor.errors import StoreError
from monitor.inspection.model import Actual, Characteristic, StoredResult
from monitor.model import (
    CONNECTION_SIGNAL,
    GAP_SIGNAL,
    Action,
    ActionKind,
    Alert,
    AlertState,
    Observation,
    PartRecord,
    PartStatus,
)
from monitor.registers import same_register
from monitor.sinks.signals import SignalFilter
from monitor.store import StateDelta, StateWrite, Store
from monitor.store.held import HeldWrites
from monitor.tracking import PartTracker

__all__ = ["ENGINE_STATE", "Changes", "MachineState", "Pipeline"]

log = logging.getLogger(__name__)

ENGINE_STATE = "drift-engine:"
"""Prefix of the names under which each machine's share of the engine state is kept in the store."""
_TRACKER_STATE = "tracker:"
_NOTES = frozenset({CONNECTION_SIGNAL, GAP_SIGNAL})
"""The adapters' notes (connection, gap): the status and the engine hear of them."""
_DEFERRED_STEPS = "deferred-steps:"
"""Prefix of each machine's deferred steps (offsets written between parts that no stored part carries
yet): stored with the action that made them and with the part that releases them, so a daemon
restarted between a write and the next part still hands the detectors the step."""
_INSPECTION_SEQ = "inspection-seq"
"""Where in the store's change sequence of inspection results the engine has read up to."""
_PART_BYTES = 8 << 10
"""What a held part record with its alerts costs in memory besides its states, roughly."""
_WHOLE_EVERY = 128
"""A named engine state is written whole after this many changes (the rest of the time, what changed),
so loading it applies at most that many; each name starts at its own point of the cycle, so the
whole writes of one machine's features do not all fall on the same part."""


class _StateChain:
    """What each named state was when last written, to write only what changed since.

    The first write of a name (in this run) is whole, then :class:`~monitor.store.StateDelta`
    changes, whole again every :data:`_WHOLE_EVERY`; a state that did not change is not written."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[dict[str, Any], int]] = {}

    def writes(self, states: Mapping[str, dict[str, Any]]) -> list[tuple[str, StateWrite]]:
        out: list[tuple[str, StateWrite]] = []
        for name, state in states.items():
            last = self._last.get(name)
            if last is None:
                out.append((name, state))
                self._last[name] = (state, zlib.crc32(name.encode()) % _WHOLE_EVERY)
                continue
            change = statelog.diff(last[0], state)
            if change is None:
                continue
            if last[1] + 1 >= _WHOLE_EVERY:
                out.append((name, state))
                self._last[name] = (state, 0)
            else:
                out.append((name, StateDelta(change)))
                self._last[name] = (state, last[1] + 1)
        return out

    def written(self, name: str) -> bool:
        return name in self._last

    def forget(self, name: str) -> None:
        """Write ``name`` and the names under ``name/`` whole next time."""
        for known in [n for n in self._last if n == name or n.startswith(name + "/")]:
            del self._last[known]


@dataclass
class MachineState:
    """What the cell page and the health line show of one machine."""

    machine: str
    connection: str = "unknown"
    program: str | None = None
    counter: int | None = None
    parts: int = 0
    not_observed: int = 0
    """Parts the controller counted whose data never reached us (placeholders, included in ``parts``)."""
    gaps: int = 0
    last_part_end: str | None = None
    last_seen: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Changes:
    """What a batch of observations (or a command) changed: new parts and alert changes, both
    stored, and the machines whose status changed."""

    parts: list[PartRecord] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    duplicates: int = 0
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Machines whose connection, program or counter changed, with their status after the batch."""
    resume_points: dict[str, Observation] = field(default_factory=dict)
    """Per machine, the observation that completed its last stored part, when nothing was still
    held for re-ordering: a source may resume just after it (the tracker context was saved there)."""


def _machines(site: Site) -> dict[str, Any]:
    """What the engine needs to know of the machines: their kinds and probe tools (for the advice)."""
    ids = site.machine_ids()
    return {"machine_kinds": {m: site.machine_kind(m) for m in ids}, "probe_tools": {m: site.probe_tools(m) for m in ids}}


_REST_MARGIN = timedelta(seconds=2)
"""A part whose end is this much after the machine came to rest for a write was cut after it: a
controller stamps a part's end (its counter) and the state change within moments of each other,
while a part takes far longer (a part's start is the previous part's end, so the end decides)."""
_MAX_DEFERRED = 64
"""Deferred steps kept per machine for programs it is not running now."""


DeferredStep = tuple[datetime, str, str, dict[str, float | None] | None]
"""A step waiting for its first part: (controller time the machine came to rest before the write,
program, feature, shift per axis or None for a step of unknown size)."""


def _steps_from(saved: Mapping[str, Any] | None) -> list[DeferredStep]:
    """Deferred steps as :meth:`Pipeline._deferred_state` stored them (none when nothing was stored)."""
    steps: list[DeferredStep] = []
    for step in (saved or {}).get("steps", []):
        shifts = step.get("shifts")
        steps.append(
            (
                datetime.fromisoformat(step["after"]),
                str(step["program"]),
                str(step["feature"]),
                {str(k): (None if v is None else float(v)) for k, v in shifts.items()} if shifts is not None else None,
            )
        )
    return steps


class Pipeline:
    """Trackers per machine, the drift engine and the store, wired in one direction."""

    def __init__(self, site: Site, store: Store) -> None:
        self.site = site
        self.store = store
        self.held = HeldWrites(store.record_alerts)
        """Store writes waiting while the store cannot write (disk full...); see monitor.store.held."""
        self.counts: Counter[str] = Counter()
        self.parts_by_status: Counter[tuple[str, str]] = Counter()
        """Parts stored since start, by (machine, status): for the metrics."""
        self._logged: set[str] = set()
        self._deferred_steps: dict[str, list[DeferredStep]] = {}
        """Steps of offsets written between parts, by machine: (controller time the machine came to rest
        before the write, program, feature, shifts); each reaches the detectors with the first part that
        started after that time, whatever parts were still on their way through the trackers."""
        # a shared store holds other cells' machines too: this site resumes its own machines only
        ours = {ENGINE_STATE + m for m in site.machine_ids()}
        shares = {
            name: state
            for name, state in store.load_detector_states(ENGINE_STATE).items()
            if name.split("/", 1)[0] in ours  # a machine's shares: drift-engine:<machine>[/<share>]
        }
        loaded: dict[str, Alert] = {}

        def stored_alert(alert_id: str) -> Alert | None:
            found = store.alert(alert_id)
            if found is not None:
                loaded[alert_id] = found
            return found

        self.engine = DriftEngine.from_states(site.programs, shares.values(), alerts=stored_alert, **_machines(site))
        self._told: dict[str, Alert] = {a.id: a for a in self.engine.open_alerts() if loaded.get(a.id) is a}
        """Open alerts as last handed to the store, by id: the engine's book keeps only the id of a
        condition whose alert is this very object (see ``stored`` in DriftEngine.shares)."""
        self._states = _StateChain()
        self._stored_shares = set(shares)
        """Names of engine shares in the store (a share the engine no longer has is emptied there)."""
        self._inspection_seq = int((store.load_detector_state(_INSPECTION_SEQ) or {}).get("seq", 0))
        if self.engine.migrated:  # alerts of an older engine (one per detector kind): closed once, kept as history
            migrated = self.engine.migrated
            self._write("alerts migrated to conditions", functools.partial(self._store_migrated, migrated))
            log.warning("%d open alert(s) closed: alerts became one condition per feature (see docs/actions.md)", len(migrated))
        self._reconcile_people_changes()
        self.trackers: dict[str, PartTracker] = {}
        self.status: dict[str, MachineState] = {}
        kept = site.config.store.signals
        self._history = SignalFilter(kept, parts=False, alerts=False) if kept else None
        self._retention = timedelta(days=site.config.store.signal_retention_days)
        self._next_prune = 0.0
        self._without_context: set[str] = set()
        """Machines with no tracker context stored yet: the first counter value seen is saved as one."""
        for machine_id in site.machine_ids():
            context = store.load_detector_state(_TRACKER_STATE + machine_id)
            self.trackers[machine_id] = self._tracker(site, machine_id, context)
            if context is None:
                self._without_context.add(machine_id)
            self.status[machine_id] = self._machine_state(machine_id)
            deferred = _steps_from(store.load_detector_state(_DEFERRED_STEPS + machine_id))
            if deferred:
                self._deferred_steps[machine_id] = deferred

    def _machine_state(self, machine_id: str) -> MachineState:
        return MachineState(
            machine_id,
            parts=self.store.part_count(machine=machine_id),
            not_observed=self.store.part_count(machine=machine_id, status=PartStatus.NOT_OBSERVED),
        )

    def _tracker(self, site: Site, machine_id: str, context: dict[str, Any] | None) -> PartTracker:
        """A machine's tracker for ``site``, continuing from a saved ``context`` (a restart or a reload)."""
        sources = [m for m in site.config.machines if m.id == machine_id]
        offsets = {signal: m.tracking.clock_offset_s for m in sources for signal in m.signals}
        tracking = sources[0].tracking
        if len(sources) > 1:  # tolerate the widest skew and jitter any source of the machine declares
            widest = {k: max(getattr(m.tracking, k) for m in sources) for k in ("max_skew_s", "jitter_s")}
            tracking = tracking.model_copy(update=widest)
        return PartTracker(
            machine_id,
            site.programs,
            tracking,
            signal_offsets=offsets,
            next_part_numbers=self.store.next_part_numbers(machine_id),
            context=context,
            part_id_mapped=any("part.id" in m.signals for m in sources),
        )

    def reconfigure(self, site: Site, plans: Mapping[str, list[WatchPlan]] | None = None) -> Changes:
        """Run ``site`` from the next observation on: a reload (on the worker thread, between batches).

        Programs: see :meth:`DriftEngine.reprogram` (unchanged features keep their detector state;
        alerts of changed or removed ones close and are stored). Machines: a new one gets a
        tracker; a removed one's tracker is closed (parts it held are stored); a machine whose
        sources changed gets a tracker built for the new entries that continues from the old
        one's context (the part in progress is not lost); every tracker judges the parts it
        completes from now on against the new program files. Signal history settings apply at once.
        """
        changes = Changes()
        now = datetime.now(UTC)
        closed = self.engine.reprogram(site.programs, now, plans, **_machines(site))
        old_entries = {m: [e for e in self.site.config.machines if e.id == m] for m in self.trackers}
        for machine_id in list(self.trackers):
            if machine_id not in site.machine_ids():
                gone = self.trackers.pop(machine_id)
                if not self._finish(gone.close(), changes, gone):
                    state = functools.partial(self.store.save_detector_state, _TRACKER_STATE + machine_id, gone.context())
                    changes.alerts += self._write("tracker state", state)
                del self.status[machine_id]
        for machine_id in site.machine_ids():
            entries = [e for e in site.config.machines if e.id == machine_id]
            tracker = self.trackers.get(machine_id)
            if tracker is None:
                context = self.store.load_detector_state(_TRACKER_STATE + machine_id)
                self.trackers[machine_id] = self._tracker(site, machine_id, context)
                self.status[machine_id] = self._machine_state(machine_id)
            elif entries != old_entries.get(machine_id):
                self.trackers[machine_id] = self._tracker(site, machine_id, tracker.context())
            else:
                tracker.programs = dict(site.programs)
        changes.alerts += closed
        self._tell(closed)
        # features watched afresh or no longer watched: every machine's shares are written again, and
        # those the engine no longer has are emptied, so a restart never brings old watches back
        states = [w for m in sorted(self.trackers) for w in self._engine_writes(m, everything=True)]
        if closed or states:

            def write_closed() -> None:
                self.store.record_alerts(closed)
                for name, state in states:
                    self.store.save_detector_state(name, state)

            changes.alerts += self._write("alerts closed by a reload", write_closed)
        kept = site.config.store.signals
        self._history = SignalFilter(kept, parts=False, alerts=False) if kept else None
        self._retention = timedelta(days=site.config.store.signal_retention_days)
        self.site = site
        return changes

    def _store_migrated(self, alerts: list[Alert]) -> None:
        self.store.record_alerts(alerts)
        for machine in sorted({a.machine for a in alerts}):
            for name, state in self._engine_writes(machine, everything=True):
                self.store.save_detector_state(name, state)

    def _reconcile_people_changes(self) -> None:
        """Acknowledgements and closes written to the store while the daemon was down win."""
        now = datetime.now(UTC)
        for alert in self.engine.open_alerts():
            stored = self.store.alert(alert.id)
            if stored is None or stored.state == alert.state:
                continue
            if stored.state is AlertState.ACKNOWLEDGED:
                self.engine.acknowledge(alert.id, now)
            elif stored.state is AlertState.CLOSED:
                self.engine.close(alert.id, now)

    # ------------------------------------------------------------------ feeding
    def observe(self, batch: Iterable[Observation]) -> Changes:
        """Process observations in order; a bad one is counted and skipped, never fatal."""
        changes = Changes()
        history: list[Observation] = []
        last_seen: dict[str, Observation] = {}
        """Per machine, its latest observation: ``last_seen`` is written as text once per batch."""
        keep, trackers, statuses, without_context = self._history, self.trackers, self.status, self._without_context
        try:
            for obs in batch:
                if keep is not None and keep(obs):
                    history.append(obs)
                tracker = trackers.get(obs.machine)
                if tracker is None:
                    self._count("unknown_machine", f"observation for unknown machine {obs.machine!r} ignored")
                    continue
                status = statuses[obs.machine]
                connection, program, counter, stored = status.connection, status.program, status.counter, status.parts
                last_seen[obs.machine] = obs
                try:
                    parts = tracker.update(obs)
                except (ValueError, TypeError, ArithmeticError, OverflowError) as exc:
                    kind = f"bad_observation:{type(exc).__name__}"
                    self._count(kind, f"{obs.machine}: bad observation {obs!r} skipped ({exc})")
                    continue
                if not parts and obs.signal not in _NOTES and obs.machine not in without_context:
                    # most observations (a load sample): no part, no note, so only the program and
                    # the counter can have changed what the machine's status shows
                    if tracker.program != program or tracker.counter != counter:
                        status.program, status.counter = tracker.program, tracker.counter
                        status.last_seen = obs.time.isoformat()
                        changes.machines[obs.machine] = status.as_dict()
                    continue
                if obs.signal == CONNECTION_SIGNAL:
                    status.connection = str(obs.value)
                    lost = self.engine.connection_changed(obs.machine, obs.value == "connected", obs.time)
                    if lost:
                        changes.alerts += lost
                        changes.alerts += self._write("connection alert", functools.partial(self.store.record_alerts, lost))
                elif obs.signal == GAP_SIGNAL:
                    status.gaps += 1
                    gap = self.engine.data_gap(obs.machine, obs.time, obs.end, str(obs.value))
                    changes.alerts += gap
                    changes.alerts += self._write("data gap alert", self._store_alerts(obs.machine, gap))
                status.program = tracker.program
                status.counter = tracker.counter
                if obs.machine in self._without_context:
                    baseline = tracker.baseline_context()
                    if baseline is not None:
                        state = functools.partial(self.store.save_detector_state, _TRACKER_STATE + obs.machine, baseline)
                        changes.alerts += self._write("tracker state", state)
                        self._without_context.discard(obs.machine)
                if parts and self._finish(parts, changes, tracker) and not tracker.holding:
                    # just after what ended the part: the next part's data read since is read again
                    after = tracker.resume_from or obs
                    if self.held:  # the part waits to be stored: its source may resume here once it is
                        self.held.resume_after(after)
                    else:
                        changes.resume_points[obs.machine] = after
                if (
                    status.program != program
                    or status.counter != counter
                    or status.connection != connection
                    or status.parts != stored
                ):
                    status.last_seen = obs.time.isoformat()
                    changes.machines[obs.machine] = status.as_dict()
        finally:
            for machine, seen in last_seen.items():
                self.status[machine].last_seen = seen.time.isoformat()
        if history:
            self._record_history(history)
        return changes

    def _store_alerts(self, machine: str, alerts: list[Alert]) -> Callable[[], None]:
        """The write of alert changes that came with no part (a data gap), with the engine state they
        leave: the machine's alert book share, taken now (writes are applied in order)."""
        self._tell(alerts)
        states = self._engine_writes(machine, program="")

        def write() -> None:
            self.store.record_alerts(alerts)
            for name, state in states:
                self.store.save_detector_state(name, state)

        return write

    def retry_held(self, *, force: bool = False) -> Changes:
        """Store what waits for the store, when its backoff has run out; the closed store alert once done."""
        alerts = self.held.retry(force=force)
        return Changes(alerts=alerts, resume_points=self.held.resume_points())

    def _write(self, what: str, run: Callable[[], object], part_key: str | None = None) -> list[Alert]:
        """One store write, now or (when the store cannot write) later, in order; alerts to publish."""
        return self.held.write(what, run, part_key=part_key)

    def _record_history(self, history: list[Observation]) -> None:
        """Raw signal history is kept when the store writes; while it cannot, it is dropped and counted
        (parts and alerts wait in memory; raw history would not fit there)."""
        if self.held:
            self._count("signal_history_dropped", f"store cannot write: raw signal history is dropped ({len(history)} values)")
            self.counts["signal_history_dropped"] += len(history) - 1
            return
        try:
            self.store.record_signals(history)
        except StoreError as exc:
            if not exc.retryable:
                raise
            self._count("signal_history_dropped", f"store cannot write: raw signal history is dropped ({exc})")
            self.counts["signal_history_dropped"] += len(history) - 1

    def prune_history(self, now: datetime | None = None) -> int:
        """Delete raw signal history past its retention; at most once an hour, returns rows deleted."""
        if self._history is None or time.monotonic() < self._next_prune:
            return 0
        self._next_prune = time.monotonic() + 3600.0
        try:
            deleted = self.store.prune_signals((now or datetime.now(UTC)) - self._retention)
        except StoreError as exc:
            if not exc.retryable:
                raise
            self._count("signal_history_prune_failed", f"pruning the raw signal history failed ({exc}); tried again in an hour")
            return 0
        self.counts["signal_history_pruned"] += deleted
        return deleted

    def advance(self, now_by_machine: dict[str, datetime], quiet: frozenset[str] = frozenset()) -> Changes:
        """Release parts whose grace window has run out in controller time (and prune old history);
        for ``quiet`` machines (nothing in flight from their sources) first process what waits for
        re-ordering."""
        self.prune_history()
        changes = Changes()
        for machine in quiet:
            tracker = self.trackers.get(machine)
            if tracker is not None and tracker.holding:
                self._finish(tracker.settle(), changes, tracker)
        for machine, now in now_by_machine.items():
            tracker = self.trackers.get(machine)
            if tracker is not None:
                self._finish(tracker.advance(now), changes, tracker)
                self.status[machine].counter = tracker.counter
        return changes

    def close(self) -> Changes:
        """Shutdown: release parts still waiting in a grace window."""
        changes = Changes()
        for machine, tracker in self.trackers.items():
            if not self._finish(tracker.close(), changes, tracker):
                state = functools.partial(self.store.save_detector_state, _TRACKER_STATE + machine, tracker.context())
                changes.alerts += self._write("tracker state", state)
        return changes

    # ------------------------------------------------------------------ people
    def alert_command(self, command: AlertCommand) -> Outcome:
        """Acknowledge or close an alert, stored with the action that records who did it and why."""
        now = datetime.now(UTC)
        if isinstance(command, Acknowledge):
            alert, kind = self.engine.acknowledge(command.alert_id, now), ActionKind.ACKNOWLEDGE
        else:
            alert, kind = self.engine.close(command.alert_id, now), ActionKind.CLOSE
        if alert is None:
            return Outcome(None, None)
        action = Action(
            id=uuid.uuid4().hex,
            time=now,
            kind=kind,
            machine=alert.machine,
            program=alert.program,
            feature=alert.feature,
            user=command.user.name,
            role=command.user.role,
            source=command.source,
            condition_id=alert.id,
            part_number=self._last_part(alert.machine, alert.program),
            comment=command.comment,
        )
        self._write_alert_change(alert, action)
        return Outcome(alert, action)

    def record_action(self, command: RecordAction) -> Outcome:
        """Record what a person did; raises ActionError when it names what does not exist."""

        def find(alert_id: str) -> Alert | None:
            alert = next((a for a in self.engine.open_alerts() if a.id == alert_id), None)
            return alert or self.store.alert(alert_id)

        action = make_action(self.site, command, find, self._last_part, store_part_lookup(self.store))
        deferred = self._expect_step(action, command.effective_after)
        states = self._engine_writes(action.machine)  # the steps expected: watches and the book changed
        steps = self._deferred_state(action.machine) if deferred else None

        def write() -> None:
            self.store.record_action(action)
            for name, state in states:
                self.store.save_detector_state(name, state)
            if steps is not None:
                self.store.save_detector_state(_DEFERRED_STEPS + action.machine, steps)

        self._write(f"action {action.id}", write)
        return Outcome(None, action)

    def _expect_step(self, action: Action, effective_after: datetime | None = None) -> bool:
        """An offset applied or a tool changed is a known step for the detectors from the next part
        (no false drift after a correction): the size of an offset's step follows from its register.
        With ``effective_after`` (a write between parts: when the machine came to rest, controller
        time), from the first part that started after it: deferred (True when any step was)."""
        config = self.site.programs.get(action.program)
        if config is None or action.kind not in (ActionKind.OFFSET_APPLIED, ActionKind.TOOL_CHANGED):
            return False
        reg = action.register
        if action.kind is ActionKind.OFFSET_APPLIED and reg is not None:
            # a register moves every feature it corrects (G54 X moves both holes, T12 D-wear both bores)
            features = [
                f
                for f in config.features
                if any(same_register(r, reg) for r in self.engine.registers(action.machine, action.program, f).values())
            ] or ([action.feature] if action.feature else [])
        elif action.feature:
            features = [action.feature]
        else:  # a tool changed without a feature: every feature that tool corrects
            kind = self.site.machine_kind(action.machine)
            features = [f for f in config.features if any(r.tool == action.tool for r in config.registers(f, kind).values())]
        for feature in features:
            shifts: dict[str, float | None] | None = None
            if action.kind is ActionKind.OFFSET_APPLIED and reg is not None and action.change is not None:
                registers = self.engine.registers(action.machine, action.program, feature)
                axis = next((a for a, r in registers.items() if (r.kind, r.axis) == (reg.kind, reg.axis)), None)
                if axis is not None:
                    shifts = {axis: reg.shift_for(action.change)}
            if effective_after is None:
                self.engine.record_step(action.machine, action.program, feature, shifts)
            else:
                self._deferred_steps.setdefault(action.machine, []).append((effective_after, action.program, feature, shifts))
        return effective_after is not None and bool(features)

    def _release_steps(self, part: PartRecord) -> bool:
        """Hand the detectors the deferred steps this part is the first to carry; True when the
        machine's deferred steps changed (they are stored with the part)."""
        waiting = self._deferred_steps.get(part.machine)
        if not waiting:
            return False
        keep: list[DeferredStep] = []
        for after, program, feature, shifts in waiting:
            if program == part.program and part.end > after + _REST_MARGIN:
                self.engine.record_step(part.machine, program, feature, shifts)
            elif program == part.program or len(keep) < _MAX_DEFERRED:
                keep.append((after, program, feature, shifts))
        self._deferred_steps[part.machine] = keep
        return len(keep) != len(waiting)

    def _deferred_state(self, machine: str) -> dict[str, Any]:
        """A machine's deferred steps as the store keeps them (:func:`_steps_from` reads them back)."""
        steps = [
            {"after": after.isoformat(), "program": program, "feature": feature, "shifts": shifts}
            for after, program, feature, shifts in self._deferred_steps.get(machine, [])
        ]
        return {"version": 1, "steps": steps}

    def _last_part(self, machine: str, program: str) -> int | None:
        """The number of the last part of ``program`` stored for ``machine`` (None before the first)."""
        n = self.store.next_part_numbers(machine).get(program)
        return n - 1 if n is not None else None

    def _write_alert_change(self, alert: Alert, action: Action | None = None) -> None:
        self._tell([alert])
        states = self._engine_writes(alert.machine, program="")

        def write() -> None:
            self.store.record_alerts([alert])
            for name, state in states:
                self.store.save_detector_state(name, state)
            if action is not None:
                self.store.record_action(action)

        self._write(f"alert change {alert.id}", write)

    def _engine_writes(
        self, machine: str, *, program: str | None = None, everything: bool = False
    ) -> list[tuple[str, StateWrite]]:
        """The store writes that save the machine's engine state: the shares of ``program`` ("" for the
        alert book alone, None for all) that changed since they were last written. The first time a
        machine is written in this run, and with ``everything``, every share of it is written whole
        (a store from before shares, or a reload, may hold watches that are no longer the engine's)."""
        prefix = ENGINE_STATE + machine
        first = not self._states.written(prefix)
        stored = self._stored
        if first or everything:
            shares = self.engine.shares(machine, stored=stored)
            self._states.forget(prefix)
        elif program == "":
            shares = {"": self.engine.state_book(machine, stored=stored)}
        else:
            shares = self.engine.shares(machine, program, stored=stored)
        named = {prefix + suffix: share for suffix, share in shares.items()}
        writes = self._states.writes(named)
        if first or everything:
            stale = [n for n in self._stored_shares if (n == prefix or n.startswith(prefix + "/")) and n not in named]
            writes += [(n, {"version": named[prefix]["version"], "watches": []}) for n in stale]
            self._stored_shares = (self._stored_shares - set(stale)) | set(named)
        else:
            self._stored_shares |= set(named)
        return writes

    def _tell(self, *batches: Iterable[Alert]) -> None:
        """These alerts go to the store's alerts table before, or with, the engine state written next."""
        for alerts in batches:
            for alert in alerts:
                if alert.state is AlertState.CLOSED:
                    self._told.pop(alert.id, None)
                else:
                    self._told[alert.id] = alert

    def _stored(self, alert: Alert) -> bool:
        """Whether the alerts table holds ``alert`` exactly as it stands (the very object last told)."""
        return self._told.get(alert.id) is alert

    def _finish(self, parts: list[PartRecord], changes: Changes, tracker: PartTracker) -> int:
        """Detect on and store each new part, with the engine state and the tracker's context after
        it in the same transaction; returns how many parts were stored."""
        stored_parts = 0
        unseen: list[PartRecord] = []
        for i, part in enumerate(parts):
            self._without_context.discard(part.machine)
            if self.held.holds_part(part.key) or self.store.has_part(part.key):  # seen before: the engine has it
                changes.duplicates += 1
                self.counts["duplicate_parts"] += 1
                continue
            refreshed: list[Alert] = []
            released = False
            if part.status is PartStatus.NOT_OBSERVED:
                # one alert change per run of placeholders, stored with the last of them
                unseen.append(part)
                following = parts[i + 1] if i + 1 < len(parts) else None
                alerts = []
                if following is None or following.status is not PartStatus.NOT_OBSERVED:
                    alerts, unseen = self.engine.parts_not_observed(part.machine, unseen), []
                self.status[part.machine].not_observed += 1
            else:
                try:
                    released = self._release_steps(part)
                    assessment = self.engine.assess(part)
                    alerts, refreshed = assessment.alerts, assessment.refreshed
                except (ValueError, TypeError, ArithmeticError) as exc:  # never lose the part to a detection fault
                    self._count(
                        f"detection_error:{type(exc).__name__}", f"{part.key}: detection failed ({exc}); part stored without it"
                    )
                    alerts, refreshed = [], []
            self._tell(alerts, refreshed)  # stored in the part's transaction, before the engine state
            states = [
                *self._engine_writes(part.machine, program=part.program),
                (_TRACKER_STATE + part.machine, tracker.context(after=part)),
            ]
            if released:  # the steps this part carries are no longer waiting, after a restart too
                states.append((_DEFERRED_STEPS + part.machine, self._deferred_state(part.machine)))
            size = 0
            if self.held:  # it will wait: keep its states as JSON (what the store writes; far smaller)
                states = [(name, _encoded(state)) for name, state in states]
                size = sum(len(_text(state)) for _, state in states) + _PART_BYTES
            changes.alerts += self.held.write(
                f"part {part.key}",
                functools.partial(self.store.record_part, part, alerts, states, refreshed),
                part_key=part.key,
                size=size,
            )
            status = self.status[part.machine]
            status.parts += 1
            status.last_part_end = part.end.isoformat()
            self.counts[f"parts_{part.status}"] += 1
            self.parts_by_status[(part.machine, str(part.status))] += 1
            self.counts["alert_changes"] += len(alerts)
            changes.parts.append(part)
            changes.alerts += alerts
            stored_parts += 1
        return stored_parts

    # ------------------------------------------------------------------ inspection
    def inspection_changed(self) -> Changes:
        """Feed the drift engine what inspection results stored or matched since the last call
        brought (a CMM file imported by the daemon or the CLI, results matched later).

        Per machine and program they touched, each inspection source's series of the last
        ``detection.history`` parts is handed to the engine in part order (it feeds what is new,
        or rebuilds a source that got an older part's value); the alert changes and the machine's
        engine state are stored together."""
        changes = Changes()
        last = self.store.last_inspection_seq()
        if last <= self._inspection_seq:
            return changes
        touched: set[tuple[str, str]] = set()
        for stored in self.store.inspection_results(after_seq=self._inspection_seq, with_actuals=False):
            part = self.store.part(stored.part_key) if stored.part_key else None
            if part is not None and self.engine.series_labels(part.program):
                touched.add((part.machine, part.program))
        for machine, program in sorted(touched):
            alerts = self._series(machine, program)
            self._tell(alerts)
            states = self._engine_writes(machine, program=program)

            def write(alerts: list[Alert] = alerts, states: list[tuple[str, StateWrite]] = states) -> None:
                self.store.record_alerts(alerts)
                for name, state in states:
                    self.store.save_detector_state(name, state)

            changes.alerts += alerts
            changes.alerts += self._write(f"inspection results of {machine} {program}", write)
            self.counts["alert_changes"] += len(alerts)
        self._inspection_seq = last
        changes.alerts += self._write(
            "inspection position", functools.partial(self.store.save_detector_state, _INSPECTION_SEQ, {"seq": last})
        )
        return changes

    def _series(self, machine: str, program: str) -> list[Alert]:
        config = self.site.programs.get(program)
        labels = self.engine.series_labels(program)
        if config is None or not labels:
            return []
        parts = [
            p
            for p in self.store.parts(machine=machine, program=program, last=config.detection.history)
            if p.status is not PartStatus.ABORTED
        ]
        by_part: dict[str, list[StoredResult]] = {}
        for stored in self.store.inspection_results(part_keys=[p.key for p in parts]):
            by_part.setdefault(stored.part_key or "", []).append(stored)
        mapped: dict[Characteristic, tuple[str, str] | None] = {}
        series: dict[tuple[str, str], list[SeriesPoint]] = {fs: [] for fs in labels.values()}
        for part in parts:
            first: dict[tuple[str, str], Actual] = {}  # the first actual of each source, in import order
            for stored in by_part.get(part.key, []):
                for actual in stored.result.actuals:
                    c = actual.characteristic
                    if c not in mapped:
                        mapped[c] = config.feature_source(c)
                    fs = mapped[c]
                    if fs is not None and fs in series:
                        first.setdefault(fs, actual)
            for fs, actual in first.items():
                series[fs].append(SeriesPoint(part, actual.value, actual.in_tolerance()))
        alerts: list[Alert] = []
        for label, fs in labels.items():
            if series[fs]:
                alerts += self.engine.assess_series(machine, program, label, series[fs])
        return alerts

    def _count(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("%s (further '%s' are counted, not logged)", message, kind)


def _encoded(state: StateWrite) -> StateWrite:
    """The same write with its state as JSON text (a held write keeps text: far smaller than objects)."""
    if isinstance(state, StateDelta):
        return state if isinstance(state.change, str) else StateDelta(dumps(state.change))
    return state if isinstance(state, str) else dumps(state)


def _text(state: StateWrite) -> str:
    text = state.change if isinstance(state, StateDelta) else state
    assert isinstance(text, str)
    return text
