"""The drift engine: complete part records in, alert state changes out.

One :class:`DriftEngine` watches every feature of every program on every machine. Per feature it
keeps a bounded history and a few pure detectors (``monitor.detect``); after each part it asks
each detector kind whether it signals, and the alert book turns those answers into managed alerts:
one open alert per (machine, program, feature, kind) that opens, escalates (watch -> warning ->
critical) and closes after ``close_after`` quiet parts. Only state *changes* leave the engine.

Heavy work (ARL root finding for the chart limits) happens once in the constructor; a part costs
a few small numpy operations per feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitor.codec import alert_from_dict, alert_to_dict
from monitor.detect.attribute import AttributeCount
from monitor.detect.evidence import FeatureEvidence
from monitor.detect.messages import Signal, signals
from monitor.detect.watch import STAT_KINDS, AttributePlan, FeatureSnapshot, FeatureWatch, WatchPlan, inspection_signal
from monitor.errors import DetectionError, MonitorError
from monitor.inspection.config import PROBE_SOURCE
from monitor.model import Alert, AlertKind, AlertState, PartRecord, PartStatus, Severity

if TYPE_CHECKING:
    from monitor.config import ProgramConfig

__all__ = ["DriftEngine", "PartAssessment", "SeriesPoint"]

_STATE_VERSION = 2
"""2: the Bayesian trend models and residual charts (issue 11); watches saved by version 1 restart."""
_MAX_IDS = 50_000
"""Alert ids remembered to keep them unique across batches (oldest forgotten first)."""


@dataclass(frozen=True, slots=True)
class PartAssessment:
    """What one part did: the alert state changes, and the evidence of every feature it fed (by name)."""

    alerts: list[Alert] = field(default_factory=list)
    evidence: dict[str, FeatureEvidence] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One part's value of a feature from an inspection source: the part (for its number, time and
    tool covariates), the measured value (None for a go/no-go check) and whether it passed."""

    part: PartRecord
    value: float | None
    passed: bool | None = None


def _feature_of(label: str) -> str:
    """The feature name of a watch label (``bore`` or ``bore@cmm``)."""
    return label.split("@", 1)[0]


Plan = WatchPlan | AttributePlan


@dataclass
class _Book:
    """An open (or acknowledged) alert with its quiet/active counters."""

    alert: Alert
    quiet: int = 0


class DriftEngine:
    """Runs the detectors of every (machine, program, feature) and manages the alerts they raise.

    >>> from monitor.config import ProgramConfig
    >>> prog = ProgramConfig.model_validate({"program": "O1", "features": {"dia": {
    ...     "kind": "size", "signal": "probe.dia", "nominal": 10.0, "lower": 9.99, "upper": 10.01}}})
    >>> engine = DriftEngine({"O1": prog})
    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> part = PartRecord("k1", "m1", "O1", 1, t, t, PartStatus.COMPLETE, {"probe.dia": 10.02})
    >>> [(a.kind.value, a.severity.value) for a in engine.process(part)]
    [('out_of_tolerance', 'critical')]
    """

    def __init__(self, programs: Mapping[str, ProgramConfig]) -> None:
        self._programs = dict(programs)
        self._plans: dict[str, list[WatchPlan]] = {name: WatchPlan.for_program(cfg) for name, cfg in self._programs.items()}
        self._attr_plans = {name: AttributePlan.for_program(cfg) for name, cfg in self._programs.items()}
        self._watches: dict[tuple[str, str, str], FeatureWatch] = {}
        self._counts: dict[tuple[str, str, str], AttributeCount] = {}
        self._fed: dict[tuple[str, str, str], list[str]] = {}
        """Part keys fed to each inspection source's watch, in part order (late results rebuild it)."""
        self._book: dict[tuple[str, str, str, str], _Book] = {}
        self._lost: dict[str, Alert] = {}
        self._gaps: dict[str, Alert] = {}
        self._last_part: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self._ids: dict[str, int] = {}

    # ------------------------------------------------------------------------------ parts
    def process(self, part: PartRecord) -> list[Alert]:
        """Feed one part; returns the alerts it opened, escalated or closed (never raises on odd values)."""
        return self.assess(part).alerts

    def assess(self, part: PartRecord) -> PartAssessment:
        """Feed one part; the alert changes and the typed evidence of every feature it measured."""
        out = PartAssessment()
        if part.status is not PartStatus.COMPLETE:
            self._count("part_not_complete")
            return out
        plans = self._plans.get(part.program)
        if plans is None:
            self._count("unknown_program")
            return out
        self._last_part[part.machine] = part.part_number
        for plan in plans:
            if plan.source == PROBE_SOURCE:
                evidence = self._feed(part, plan, out.alerts)
                if evidence is not None:
                    out.evidence[plan.feature.name] = evidence
        for attr in self._attr_plans.get(part.program, []):
            if attr.source == PROBE_SOURCE:
                passed = attr.feature.passed(part.measurements)
                if passed is None:
                    self._count("missing_measurement")
                    continue
                out.alerts.extend(self._count_attribute(part, attr, passed))
        return out

    def _feed(self, part: PartRecord, plan: WatchPlan, changes: list[Alert], *, quiet: bool = False) -> FeatureEvidence | None:
        """One part into one channel watch; its signals reconciled into ``changes`` (unless ``quiet``:
        a rebuild from late inspection data, whose history is not alerted again)."""
        watch = self._watch(part.machine, plan)
        update = watch.update(part.machine, part)
        if update.skipped or update.evidence is None:
            self._count(update.skipped or "skipped")
            return None
        if quiet:
            return update.evidence
        if update.new_batch:
            changes += self._close_feature(part, plan, tuple(AlertKind), "new batch (part numbers started again)")
        elif update.recentred:
            changes += self._close_feature(part, plan, STAT_KINDS, "re-centred (offset change)")
        sigs = signals(plan, update.evidence, watch.streaks, watch.tool)
        watch.note_signals({kind: sig is not None for kind, sig in sigs.items()})
        for kind, signal in sigs.items():
            changes += self._reconcile(part, plan, kind, signal)
        return update.evidence

    def _count_attribute(self, part: PartRecord, plan: AttributePlan, passed: bool, *, quiet: bool = False) -> list[Alert]:
        key = (part.machine, plan.program, plan.label)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = AttributeCount()
        result = count.update(1.0 if passed else 0.0)
        if quiet:
            return []
        signal = None
        if result.failed:
            message = (
                f"{plan.display} failed on part {part.part_number}: {result.fails} of {result.n} parts failed so far "
                f"({result.proportion:.1%}, 95% interval {result.lo:.1%}-{result.hi:.1%})"
            )
            evidence = {"passed": False, "fails": result.fails, "checked": result.n, "proportion": result.proportion}
            signal = Signal(Severity.CRITICAL, lambda: (message, evidence))
        return self._reconcile(part, plan, AlertKind.OUT_OF_TOLERANCE, signal)

    # ---------------------------------------------------------------------------- inspection
    def assess_series(self, machine: str, program: str, label: str, points: list[SeriesPoint]) -> list[Alert]:
        """The values of one feature from one inspection source (``label``: ``feature@source``), for
        every part that has one, in part order; returns the alert changes.

        Results arrive late and out of order (a CMM measures every fifth part an hour later). Points
        after the last part fed are fed in order, each reconciled like a probe part. A point before
        it (an older part measured later, a re-import) rebuilds the source's watch from all points
        quietly; only the latest part's signals are then reconciled, so history is not alerted twice."""
        key = (machine, program, label)
        channel = next((p for p in self._plans.get(program, []) if p.label == label), None)
        attribute = next((p for p in self._attr_plans.get(program, []) if p.label == label), None)
        if channel is None and attribute is None:
            self._count("unknown_series")
            return []
        fed = self._fed.get(key, [])
        keys = [p.part.key for p in points]
        known = [k for k in keys if k in set(fed)]
        if keys[: len(known)] == known and fed[len(fed) - len(known) :] == known:
            new, rebuild = points[len(known) :], False
        else:
            new, rebuild = points, True
            self._count("series_rebuilt")
            self._watches.pop(key, None)
            self._counts.pop(key, None)
        changes: list[Alert] = []
        for i, point in enumerate(new):
            quiet = rebuild and i < len(new) - 1
            if channel is not None:
                if point.value is None:
                    self._count("inspection_without_value")
                    continue
                part = replace(point.part, measurements={inspection_signal(channel.feature.name, channel.source): point.value})
                self._feed(part, channel, changes, quiet=quiet)
            elif attribute is not None:
                if point.passed is None:
                    self._count("inspection_without_verdict")
                    continue
                changes += self._count_attribute(point.part, attribute, point.passed, quiet=quiet)
        history = channel.config.history if channel is not None else (attribute.config.history if attribute else 200)
        self._fed[key] = keys[-history:]
        return changes

    def series_labels(self, program: str) -> dict[str, tuple[str, str]]:
        """The inspection-source series of a program: label -> (feature, source)."""
        plans: list[Plan] = [*self._plans.get(program, []), *self._attr_plans.get(program, [])]
        return {p.label: (p.feature.name, p.source) for p in plans if p.source != PROBE_SOURCE}

    def attribute_counts(self, machine: str, program: str, label: str) -> AttributeCount | None:
        """The pass/fail count of a go/no-go feature (``label``: the feature, or ``feature@source``)."""
        return self._counts.get((machine, program, label))

    def _watch(self, machine: str, plan: WatchPlan) -> FeatureWatch:
        key = (machine, plan.program, plan.label)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = FeatureWatch(plan)
        return watch

    def _plan(self, program: str, feature: str) -> WatchPlan | None:
        """The plan of a feature (its probe's), or of ``feature@source``."""
        return next((p for p in self._plans.get(program, []) if p.label == feature), None)

    def record_step(self, machine: str, program: str, feature: str, shifts: Mapping[str, float | None] | None = None) -> None:
        """A recorded offset or tool change of this feature takes effect from the next part: its trend
        models expect a level step there (``shifts``: the expected change of each axis's deviation in
        mm, ``"value"`` for a size; None or missing axes: size unknown) and its charts restart.

        Raises DetectionError for a feature the program does not have."""
        plan = self._plan(program, feature)
        if plan is None:
            raise DetectionError(f"program {program} has no feature {feature!r}")
        unknown = sorted(set(shifts or {}) - set(plan.axes))
        if unknown:
            raise DetectionError(f"feature {feature} has no axis {', '.join(unknown)}; its axes are {', '.join(plan.axes)}")
        self._watch(machine, plan).expect_step(shifts)

    def evidence(self, machine: str, program: str, feature: str) -> FeatureEvidence | None:
        """The latest evidence of one feature on one machine (None before its first part)."""
        watch = self._watches.get((machine, program, feature))
        return watch.last if watch is not None else None

    def _reconcile(self, part: PartRecord, plan: Plan, kind: AlertKind, signal: Signal | None) -> list[Alert]:
        key = (part.machine, part.program, plan.label, str(kind))
        entry = self._book.get(key)
        if signal is None:
            if entry is None:
                return []
            entry.quiet += 1
            if entry.quiet < plan.config.close_after:
                return []
            del self._book[key]
            closed = replace(
                entry.alert,
                state=AlertState.CLOSED,
                time=part.end,
                part_key=part.key,
                evidence={**entry.alert.evidence, "closed_at_part": part.part_number, "close_reason": "back in control"},
            )
            return [closed]
        source = {} if plan.source == PROBE_SOURCE else {"source": plan.source}
        if entry is None:
            evidence = {**signal.evidence, **source}
            alert = Alert(
                id=self._new_id(f"{part.machine}/{part.program}/{plan.label}/{kind}/{part.part_number}"),
                machine=part.machine,
                program=part.program,
                feature=plan.feature.name,
                kind=kind,
                severity=signal.severity,
                state=AlertState.OPEN,
                part_number=part.part_number,
                message=signal.message,
                time=part.end,
                evidence=evidence,
                part_key=part.key,
            )
            self._book[key] = _Book(alert)
            return [alert]
        entry.quiet = 0
        if signal.severity.rank > entry.alert.severity.rank:
            entry.alert = replace(
                entry.alert,
                severity=signal.severity,
                message=signal.message,
                time=part.end,
                evidence={
                    **signal.evidence,
                    **source,
                    "opened_at_part": entry.alert.part_number,
                    "escalated_at_part": part.part_number,
                },
                part_key=part.key,
            )
            return [entry.alert]
        return []

    def _new_id(self, base: str) -> str:
        """``base`` the first time; ``base#2``, ``base#3``... when a later batch (part numbers start
        again) opens the same kind on the same part number, so an id never names two alerts."""
        n = self._ids.get(base, 0) + 1
        self._ids[base] = n
        if len(self._ids) > _MAX_IDS:
            del self._ids[next(iter(self._ids))]
        return base if n == 1 else f"{base}#{n}"

    def _close_feature(self, part: PartRecord, plan: WatchPlan, kinds: tuple[AlertKind, ...], reason: str) -> list[Alert]:
        """Close the feature's open alerts of ``kinds`` at once (offset change, new batch)."""
        closed = []
        for kind in kinds:
            entry = self._book.pop((part.machine, part.program, plan.label, str(kind)), None)
            if entry is not None:
                closed.append(
                    replace(
                        entry.alert,
                        state=AlertState.CLOSED,
                        time=part.end,
                        part_key=part.key,
                        evidence={**entry.alert.evidence, "closed_at_part": part.part_number, "close_reason": reason},
                    )
                )
        return closed

    # ------------------------------------------------------------------------------ people
    def acknowledge(self, alert_id: str, time: datetime) -> Alert | None:
        """Mark an open alert acknowledged; it stays so (even when escalating) until it closes."""
        for entry in self._book.values():
            if entry.alert.id == alert_id:
                if entry.alert.state is AlertState.ACKNOWLEDGED:
                    return None
                entry.alert = replace(entry.alert, state=AlertState.ACKNOWLEDGED, time=time)
                return entry.alert
        for book in (self._lost, self._gaps):
            for machine, alert in book.items():
                if alert.id == alert_id and alert.state is AlertState.OPEN:
                    book[machine] = replace(alert, state=AlertState.ACKNOWLEDGED, time=time)
                    return book[machine]
        return None

    def close(self, alert_id: str, time: datetime) -> Alert | None:
        """Close an alert by hand; if the condition persists a new alert (new id) opens on a later part."""
        for key, entry in self._book.items():
            if entry.alert.id == alert_id:
                del self._book[key]
                return replace(
                    entry.alert,
                    state=AlertState.CLOSED,
                    time=time,
                    evidence={**entry.alert.evidence, "close_reason": "closed by hand"},
                )
        for book in (self._lost, self._gaps):
            for machine, alert in book.items():
                if alert.id == alert_id:
                    del book[machine]
                    return replace(alert, state=AlertState.CLOSED, time=time)
        return None

    def connection_changed(self, machine: str, connected: bool, time: datetime) -> list[Alert]:
        """Open a SIGNAL_LOST alert when a machine's source is lost; close it when it is back."""
        current = self._lost.get(machine)
        if connected:
            if current is None:
                return []
            del self._lost[machine]
            return [replace(current, state=AlertState.CLOSED, time=time, message=f"{machine}: connection restored")]
        if current is not None:
            return []
        part_number = self._last_part.get(machine, 0)
        alert = Alert(
            id=f"{machine}/-/connection/{AlertKind.SIGNAL_LOST}/{part_number}@{time.timestamp():.0f}",
            machine=machine,
            program="",
            feature="connection",
            kind=AlertKind.SIGNAL_LOST,
            severity=Severity.WARNING,
            state=AlertState.OPEN,
            part_number=part_number,
            message=f"{machine}: lost connection to the controller; parts are not being monitored",
            time=time,
            evidence={"last_part_number": part_number, "lost_at": time.isoformat()},
        )
        self._lost[machine] = alert
        return [alert]

    def data_gap(self, machine: str, start: datetime, end: datetime | None, reason: str) -> list[Alert]:
        """A source reported lost data: open the machine's data-gap alert, or add to the open one.

        The alert stays open until a person acknowledges or closes it: data that is gone does not
        come back by itself, and the batch's evidence has a hole someone should know about."""
        window = start.isoformat(timespec="seconds") + (f" to {end.isoformat(timespec='seconds')}" if end else "")
        return self._gap_alert(
            machine, start, f"{machine}: data lost {window} (controller clock): {reason}", {"gaps": 1}, {"last_gap": window}
        )

    def parts_not_observed(self, machine: str, parts: list[PartRecord]) -> list[Alert]:
        """Placeholders were recorded for counter values nobody saw: say which parts are missing."""
        if not parts:
            return []
        first, last = parts[0], parts[-1]
        numbers = f"part {first.part_number}" if len(parts) == 1 else f"parts {first.part_number}-{last.part_number}"
        counters = f"counter {first.counter}" if len(parts) == 1 else f"counter {first.counter}-{last.counter}"
        reason = first.notes[0].removeprefix("not observed: ") if first.notes else ""
        message = f"{machine}: {len(parts)} part(s) not observed ({numbers}, {counters}): {reason}"
        return self._gap_alert(
            machine, last.end, message, {"parts_not_observed": len(parts)}, {"last_not_observed": f"{numbers} ({counters})"}
        )

    def _gap_alert(self, machine: str, time: datetime, message: str, add: dict[str, int], note: dict[str, str]) -> list[Alert]:
        current = self._gaps.get(machine)
        if current is None:
            part_number = self._last_part.get(machine, 0)
            evidence: dict[str, Any] = {"gaps": 0, "parts_not_observed": 0, **note}
            for k, v in add.items():
                evidence[k] = evidence.get(k, 0) + v
            alert = Alert(
                id=f"{machine}/-/data/{AlertKind.DATA_GAP}/{part_number}@{time.timestamp():.0f}",
                machine=machine,
                program="",
                feature="data",
                kind=AlertKind.DATA_GAP,
                severity=Severity.WARNING,
                state=AlertState.OPEN,
                part_number=part_number,
                message=message,
                time=time,
                evidence=evidence,
            )
        else:
            evidence = {**current.evidence, **note}
            for k, v in add.items():
                evidence[k] = int(evidence.get(k, 0)) + v
            alert = replace(current, message=message, time=time, evidence=evidence)
        self._gaps[machine] = alert
        return [alert]

    def open_alerts(self) -> list[Alert]:
        """Every alert that is open or acknowledged, oldest first."""
        alerts = [e.alert for e in self._book.values()] + list(self._lost.values()) + list(self._gaps.values())
        return sorted(alerts, key=lambda a: (a.time, a.id))

    # ------------------------------------------------------------------------------ reload
    def prepare(self, programs: Mapping[str, ProgramConfig]) -> dict[str, list[WatchPlan]]:
        """The watch plans for ``programs``, solved now (the costly part of a reload, and where bad
        detection settings raise DetectionError) without changing anything; unchanged programs
        reuse their plans."""
        return {
            name: self._plans[name] if self._programs.get(name) == cfg else WatchPlan.for_program(cfg)
            for name, cfg in programs.items()
        }

    def reprogram(
        self, programs: Mapping[str, ProgramConfig], time: datetime, plans: Mapping[str, list[WatchPlan]] | None = None
    ) -> list[Alert]:
        """Watch ``programs`` from the next part on; returns the alerts this closes.

        Features whose definition and program detection settings are unchanged keep their watch
        (history, detector state, open alerts) exactly. A feature that changed (nominal, limits,
        signal, or its program's ``detection:``) starts afresh and its open alerts close ("program
        file changed"), as do those of removed features and programs. ``plans`` come from
        :meth:`prepare` (solved here when not given).
        """
        new = dict(programs)
        plans = dict(plans) if plans is not None else self.prepare(new)
        kept: set[tuple[str, str]] = set()
        for name, cfg in new.items():
            old = self._programs.get(name)
            if old is None or old.detection != cfg.detection:
                continue
            kept |= {(name, f) for f, spec in cfg.features.items() if old.features.get(f) == spec}
        for watch_key in [k for k in self._watches if (k[1], _feature_of(k[2])) not in kept]:
            del self._watches[watch_key]
        for count_key in [k for k in self._counts if (k[1], _feature_of(k[2])) not in kept]:
            del self._counts[count_key]
        for fed_key in [k for k in self._fed if (k[1], _feature_of(k[2])) not in kept]:
            del self._fed[fed_key]
        closed: list[Alert] = []
        for book_key in [k for k in self._book if (k[1], _feature_of(k[2])) not in kept]:
            entry = self._book.pop(book_key)
            closed.append(
                replace(
                    entry.alert,
                    state=AlertState.CLOSED,
                    time=time,
                    evidence={**entry.alert.evidence, "close_reason": "program file changed: the feature is watched afresh"},
                )
            )
        self._programs, self._plans = new, plans
        self._attr_plans = {name: AttributePlan.for_program(cfg) for name, cfg in new.items()}
        return closed

    # ------------------------------------------------------------------------------ persistence
    def state(self, machine: str | None = None) -> dict[str, Any]:
        """Everything needed to resume after a restart, as plain JSON-able data.

        With ``machine``, only that machine's share (no counters): the daemon stores one share per
        machine, so a part writes its own machine's state, not the whole cell's again.
        :meth:`from_states` joins the shares.
        """

        state = self._book_state(machine)
        state["watches"] = [
            {"machine": m, "program": p, "feature": f, "state": w.state()}
            for (m, p, f), w in self._watches.items()
            if machine is None or m == machine
        ]
        if machine is None:
            state["counters"] = dict(self.counters)
        return state

    def shares(self, machine: str, program: str | None = None) -> dict[str, dict[str, Any]]:
        """The machine's state in shares, each saved under its own name so that a part rewrites only
        the shares it changed: ``""`` the alert book (open alerts, lost connection, last part, alert
        ids) and ``"/<program>/<feature>"`` one feature's watch each (of ``program`` only, when given).
        :meth:`from_states` joins them like :meth:`state`'s."""
        book = self.state_book(machine)
        out: dict[str, dict[str, Any]] = {"": book}
        for (m, p, f), w in self._watches.items():
            if m == machine and (program is None or p == program):
                out[f"/{p}/{f}"] = {
                    "version": _STATE_VERSION,
                    "watches": [{"machine": m, "program": p, "feature": f, "state": w.state()}],
                }
        return out

    def state_book(self, machine: str) -> dict[str, Any]:
        """The machine's alert book alone: :meth:`state` of ``machine`` without its watches."""
        return {**self._book_state(machine), "watches": []}

    def _book_state(self, machine: str | None) -> dict[str, Any]:
        """Everything of :meth:`state` but the watches and counters (of ``machine``, or all)."""

        def mine(m: str) -> bool:
            return machine is None or m == machine

        return {
            "version": _STATE_VERSION,
            "alerts": [
                {"key": list(k), "alert": alert_to_dict(e.alert), "quiet": e.quiet} for k, e in self._book.items() if mine(k[0])
            ],
            "counts": [
                {"machine": m, "program": p, "label": f, "state": c.state()} for (m, p, f), c in self._counts.items() if mine(m)
            ],
            "fed": [{"machine": m, "program": p, "label": f, "keys": keys} for (m, p, f), keys in self._fed.items() if mine(m)],
            "lost": {m: alert_to_dict(a) for m, a in self._lost.items() if mine(m)},
            "gaps": {m: alert_to_dict(a) for m, a in self._gaps.items() if mine(m)},
            "last_part": {m: n for m, n in self._last_part.items() if mine(m)},
            "ids": {b: n for b, n in self._ids.items() if mine(b.split("/", 1)[0])},
        }

    @classmethod
    def from_states(cls, programs: Mapping[str, ProgramConfig], states: Iterable[Mapping[str, Any]]) -> DriftEngine:
        """Rebuild an engine from the per-machine shares of :meth:`state` (or one whole state)."""
        merged: dict[str, Any] = {
            "watches": [],
            "alerts": [],
            "counts": [],
            "fed": [],
            "lost": {},
            "gaps": {},
            "last_part": {},
            "counters": {},
            "ids": {},
        }
        merged["version"] = _STATE_VERSION
        for share in states:
            merged["version"] = min(merged["version"], int(share.get("version", _STATE_VERSION)))
            for key in ("watches", "alerts", "counts", "fed"):
                merged[key] += share.get(key, [])
            for key in ("lost", "gaps", "last_part", "counters", "ids"):
                merged[key].update(share.get(key, {}))
        return cls.from_state(programs, merged)

    @classmethod
    def from_state(cls, programs: Mapping[str, ProgramConfig], state: Mapping[str, Any]) -> DriftEngine:
        """Rebuild an engine from :meth:`state`.

        Watches of features no longer configured are dropped; a watch whose saved state does not fit
        the feature any more starts afresh (counted as ``state_discarded``); detectors whose settings
        changed in the program file restart with the new settings.
        """
        engine = cls(programs)
        engine.counters = {k: int(v) for k, v in state.get("counters", {}).items()}
        engine._ids = {k: int(v) for k, v in state.get("ids", {}).items()}
        plans = {(name, p.label): p for name, ps in engine._plans.items() for p in ps}
        labels = {(name, p.label) for name, ps in engine._attr_plans.items() for p in ps} | set(plans)
        for c in state.get("counts", []):
            if (c["program"], c["label"]) in labels:
                engine._counts[(c["machine"], c["program"], c["label"])] = AttributeCount.from_state(c["state"])
        for f in state.get("fed", []):
            if (f["program"], f["label"]) in labels:
                engine._fed[(f["machine"], f["program"], f["label"])] = [str(k) for k in f["keys"]]
        current = int(state.get("version", _STATE_VERSION)) >= _STATE_VERSION
        for w in state.get("watches", []):
            plan = plans.get((w["program"], w["feature"]))
            if plan is None:
                continue
            if not current:
                engine._count("state_discarded")  # detectors of an older version: the feature starts afresh
                continue
            try:
                watch = FeatureWatch.from_state(plan, w["state"])
            except (KeyError, TypeError, ValueError, MonitorError):
                # saved by another version or for another feature shape: start this feature afresh
                engine._count("state_discarded")
                continue
            engine._watches[(w["machine"], w["program"], w["feature"])] = watch
        for a in state.get("alerts", []):
            m, p, f, k = a["key"]
            engine._book[(m, p, f, k)] = _Book(alert_from_dict(a["alert"]), int(a.get("quiet", 0)))
        engine._lost = {m: alert_from_dict(d) for m, d in state.get("lost", {}).items()}
        engine._gaps = {m: alert_from_dict(d) for m, d in state.get("gaps", {}).items()}
        engine._last_part = {m: int(n) for m, n in state.get("last_part", {}).items()}
        return engine

    # ------------------------------------------------------------------------------ dashboard
    def snapshot(self, machine: str, program: str, feature: str) -> FeatureSnapshot | None:
        """Detection's state of one feature for presentation (a fresh one before its first part);
        None when the program has no such feature."""
        watch = self._watches.get((machine, program, feature))
        if watch is not None:
            return watch.snapshot()
        plan = self._plan(program, feature)
        return FeatureWatch(plan).snapshot() if plan is not None else None

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1
