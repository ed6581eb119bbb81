"""The drift engine: complete part records in, condition changes out.

One :class:`DriftEngine` watches every feature of every program on every machine. Per feature it
keeps a bounded history and a few pure detectors (``monitor.detect``); after each part it asks
each detector kind whether it signals, and the condition book turns those answers into one living
*condition* per (machine, program, feature): it opens when any detector signals, is re-evaluated on
every part (state watch, warning, critical, out of tolerance or recovering; the evidence of every
signal; the advice for now: parts left, the offset per register of the machine, the one action),
and returns to ok after ``close_after`` parts without a signal. Level changes leave the engine as
changes (people are told); a fresher advice on the same level leaves as a refresh (stored, not
announced).

Heavy work (ARL root finding for the chart limits) happens once in the constructor; a part costs
a few small numpy operations per feature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from monitor.codec import alert_from_dict, alert_to_dict
from monitor.detect.attribute import AttributeCount
from monitor.detect.evidence import FeatureEvidence, Unsettled
from monitor.detect.messages import Signal, signals
from monitor.detect.watch import AttributePlan, FeatureSnapshot, FeatureWatch, WatchPlan, inspection_signal
from monitor.errors import DetectionError, MonitorError
from monitor.inspection.config import PROBE_SOURCE
from monitor.model import Alert, AlertKind, AlertState, ConditionState, PartRecord, PartStatus, Register, Severity
from monitor.registers import OffsetChange, SharedFeature, SharedRegister, advice_text, advise, same_register, share_register

if TYPE_CHECKING:
    from monitor.config import ProgramConfig

__all__ = ["DriftEngine", "PartAssessment", "SeriesPoint"]

_STATE_VERSION = 2
"""2: the Bayesian trend models and residual charts (issue 11); watches saved by version 1 restart."""
_MAX_IDS = 50_000
"""Alert ids remembered to keep them unique across batches (oldest forgotten first)."""
_MAX_REGISTER_KEYS = 4096
"""Register lookups kept (programs x features x machine kinds x tools); all forgotten when full."""


def _id_machine(base: str) -> str:
    """The machine an alert id base names (its first part)."""
    return base.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class PartAssessment:
    """What one part did: the condition changes (to announce and store), the refreshed conditions
    (same level, fresher advice: to store only), and the evidence of every feature it fed (by name)."""

    alerts: list[Alert] = field(default_factory=list)
    evidence: dict[str, FeatureEvidence] = field(default_factory=dict)
    refreshed: list[Alert] = field(default_factory=list)


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


_V = TypeVar("_V")
_Key = tuple[str, str, str]
_NONE: Mapping[Any, Any] = MappingProxyType({})


class _ByMachine(dict[_Key, _V]):
    """A dict keyed by (machine, program, feature or label) that also holds each machine's entries
    apart, in the same order, so that a part's state (its machine's shares, see
    :meth:`DriftEngine.shares`) is built from that machine's entries, not by scanning the cell's.

    Only ``d[k] = v``, ``del d[k]`` and ``pop`` change it (the engine's ways); the other ways of
    changing a dict raise, so the two views cannot part."""

    def __init__(self) -> None:
        super().__init__()
        self._by: dict[str, dict[_Key, _V]] = {}

    def of(self, machine: str) -> Mapping[_Key, _V]:
        """The entries of ``machine``, in the order the whole dict has them (read only)."""
        return self._by.get(machine, _NONE)

    def __setitem__(self, key: _Key, value: _V) -> None:
        super().__setitem__(key, value)
        self._by.setdefault(key[0], {})[key] = value

    def __delitem__(self, key: _Key) -> None:
        super().__delitem__(key)
        del self._by[key[0]][key]

    def pop(self, key: _Key, *default: Any) -> Any:
        if key in self:
            value = super().pop(key)
            del self._by[key[0]][key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def _unsupported(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a _ByMachine changes by d[k] = v, del d[k] or pop only")

    update = setdefault = popitem = clear = __ior__ = _unsupported


@dataclass
class _Book:
    """A feature's open (or acknowledged) condition, the parts in a row without a signal, and
    whether an offset was recorded since its last signal (``stepped``: the drift it answered is
    then not held against closing, see :meth:`DriftEngine._evaluate`)."""

    alert: Alert
    quiet: int = 0
    stepped: bool = False


_ORDER = (AlertKind.OUT_OF_TOLERANCE, AlertKind.FORECAST, AlertKind.CUSUM, AlertKind.EWMA, AlertKind.RUN_RULE, AlertKind.REPROBE)
"""Which signal speaks for a condition when several do: the strongest evidence first."""
_ADVICE_CLAUSES = ("suggest ", "mean still near nominal")


def _action(
    level: ConditionState,
    part: int,
    apply: str,
    forecast: Mapping[str, Any],
    quiet: int,
    recover_after: int,
    active: Mapping[AlertKind, Signal | None],
    unsettled: Unsettled | None = None,
) -> str:
    """The one thing to do now, in a machinist's words (``apply``: the advice's
    :func:`~monitor.registers.advice_text`, "" when there is none)."""
    if level is ConditionState.OK:
        return f"none: back to ok after {recover_after} parts without a signal"
    if level is ConditionState.OUT_OF_TOLERANCE:
        if AlertKind.REPROBE in active:
            return f"re-probe part {part} before scrapping it" + (f"; if confirmed apply {apply}" if apply else "")
        return f"quarantine part {part}" + (f" and apply {apply}" if apply else "; find the cause before the next part")
    if level is ConditionState.RECOVERING:
        return f"no action: no signal for {quiet} of {recover_after} parts" + (f" (still {apply} off centre)" if apply else "")
    if not active and level is ConditionState.WATCH:
        if apply:
            return f"not re-centred yet: {apply} would"
        return f"watch the next parts: {unsettled.words()}" if unsettled is not None else "watch the next parts"
    if set(active) == {AlertKind.REPROBE}:
        return f"re-probe part {part} (one reading far from the others)"
    first = forecast.get("first_out_part")
    when = f" before part {first:.0f}" if isinstance(first, (int, float)) else ""
    if level in (ConditionState.CRITICAL, ConditionState.WARNING):
        return f"apply {apply}{when}" if apply else f"check the process{when}: no offset would re-centre it yet"
    return f"watch; {apply} would re-centre it" if apply else "watch the next parts: no offset change yet"


def _shared_words(shared: list[SharedRegister], level: ConditionState) -> str:
    """What the action adds when a register of the advice also moves other features (see
    :func:`~monitor.registers.share_register`): why the change differs, or why there is none."""
    if not shared or level is ConditionState.OK:
        return ""
    return "; " + "; ".join(s.note for s in shared)


def _headline(message: str) -> str:
    """A detector's message without its own offset clause (the condition's advice replaces it)."""
    head, _, last = message.rpartition("; ")
    return head if head and last.startswith(_ADVICE_CLAUSES) else message


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

    def __init__(
        self,
        programs: Mapping[str, ProgramConfig],
        *,
        machine_kinds: Mapping[str, str] | None = None,
        probe_tools: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._programs = dict(programs)
        self._kinds = dict(machine_kinds or {})
        """Machine kind (mill, lathe, mill-turn) by machine: which registers the advice names."""
        self._probes = dict(probe_tools or {})
        """The probe's tool numbers by machine: never advised as the tool that cut a feature."""
        self._plans: dict[str, list[WatchPlan]] = {name: WatchPlan.for_program(cfg) for name, cfg in self._programs.items()}
        self._attr_plans = {name: AttributePlan.for_program(cfg) for name, cfg in self._programs.items()}
        self._counts: _ByMachine[AttributeCount] = _ByMachine()
        self._fed: _ByMachine[list[str]] = _ByMachine()
        """Part keys fed to each inspection source's watch, in part order (late results rebuild it)."""
        self._watches: _ByMachine[FeatureWatch] = _ByMachine()
        self._book: _ByMachine[_Book] = _ByMachine()
        self._lost: dict[str, Alert] = {}
        self._gaps: dict[str, Alert] = {}
        self.migrated: list[Alert] = []
        """Open alerts of an engine state saved before conditions (one per detector kind), closed on
        loading: the pipeline stores them once; the feature's condition opens at its next part."""
        self._last_part: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        """Alert id bases issued (every machine's, oldest first: the oldest are forgotten first)."""
        self._machine_ids: dict[str, dict[str, int]] = {}
        """The same by machine (the part of them a machine's alert book saves with every part)."""
        self._registers: dict[tuple[str, str, str, str | None], dict[str, Register]] = {}
        """Registers by (program, feature, machine kind, tool): asked for several times per part."""

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
                evidence = self._feed(part, plan, out)
                if evidence is not None:
                    out.evidence[plan.feature.name] = evidence
        for attr in self._attr_plans.get(part.program, []):
            if attr.source == PROBE_SOURCE:
                passed = attr.feature.passed(part.measurements)
                if passed is None:
                    self._count("missing_measurement")
                    continue
                self._count_attribute(part, attr, passed, out)
        return out

    def _feed(self, part: PartRecord, plan: WatchPlan, out: PartAssessment, *, quiet: bool = False) -> FeatureEvidence | None:
        """One part into one channel watch; its condition re-evaluated into ``out`` (unless ``quiet``:
        a rebuild from late inspection data, whose history is not alerted again)."""
        watch = self._watch(part.machine, plan)
        update = watch.update(part.machine, part)
        if update.skipped or update.evidence is None:
            self._count(update.skipped or "skipped")
            return None
        if quiet:
            return update.evidence
        if update.new_batch:
            out.alerts.extend(self._close_feature(part, plan, "new batch (part numbers started again)"))
        sigs = signals(plan, update.evidence, watch.streaks, watch.tool)
        watch.note_signals({kind: sig is not None for kind, sig in sigs.items()})
        changed, refreshed = self._evaluate(part, plan, watch, sigs, update.evidence)
        out.alerts.extend(changed)
        out.refreshed.extend(refreshed)
        return update.evidence

    def _count_attribute(
        self, part: PartRecord, plan: AttributePlan, passed: bool, out: PartAssessment, *, quiet: bool = False
    ) -> None:
        """One part's go/no-go verdict: counted; a fail makes the feature's condition out of
        tolerance, passes let it recover and close after ``close_after`` parts."""
        key = (part.machine, plan.program, plan.label)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = AttributeCount()
        result = count.update(1.0 if passed else 0.0)
        if quiet:
            return
        entry = self._book.get(key)
        if passed and entry is None:
            return
        close_after = plan.config.close_after
        share = f"{result.proportion:.1%}, 95% interval {result.lo:.1%}-{result.hi:.1%}"
        tally = f"{result.fails} of {result.n} parts failed so far ({share})"
        if not passed:
            if entry is not None:
                entry.quiet = 0
            level = ConditionState.OUT_OF_TOLERANCE
            action = f"quarantine part {part.part_number}; find the cause before the next part"
            words = f"{plan.display} failed on part {part.part_number}: {tally}; {action}"
        else:
            assert entry is not None
            entry.quiet += 1
            level = ConditionState.OK if entry.quiet >= close_after else ConditionState.RECOVERING
            action = f"no action: passed {entry.quiet} of {close_after} parts"
            words = f"{plan.display} passed on part {part.part_number}: {tally}; {action}"
        evidence: dict[str, Any] = {
            "passed": passed,
            "fails": result.fails,
            "checked": result.n,
            "proportion": result.proportion,
            "condition": str(level),
            "signals": {} if passed else {str(AlertKind.OUT_OF_TOLERANCE): {"severity": "critical", "message": words}},
            "advice": {"action": action, "text": "", "offsets": [], "parts_left": 0 if not passed else None},
            "quiet_parts": entry.quiet if entry is not None and passed else 0,
            "recover_after": close_after,
        }
        changed, refreshed = self._settle(part, plan, key, entry, level, AlertKind.OUT_OF_TOLERANCE, words, evidence)
        out.alerts.extend(changed)
        out.refreshed.extend(refreshed)

    # ---------------------------------------------------------------------------- inspection
    def assess_series(self, machine: str, program: str, label: str, points: list[SeriesPoint]) -> list[Alert]:
        """The values of one feature from one inspection source (``label``: ``feature@source``), for
        every part that has one, in part order; returns the condition changes (a same-level refresh
        of a source's condition waits for its next change: the store keeps refreshes with parts).

        Results arrive late and out of order (a CMM measures every fifth part an hour later). Points
        after the last part fed are fed in order, each evaluated like a probe part. A point before
        it (an older part measured later, a re-import) rebuilds the source's watch from all points
        quietly; only the latest part is then evaluated, so history is not alerted twice."""
        out = PartAssessment()
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
        for i, point in enumerate(new):
            quiet = rebuild and i < len(new) - 1
            if channel is not None:
                if point.value is None:
                    self._count("inspection_without_value")
                    continue
                part = replace(point.part, measurements={inspection_signal(channel.feature.name, channel.source): point.value})
                self._feed(part, channel, out, quiet=quiet)
            elif attribute is not None:
                if point.passed is None:
                    self._count("inspection_without_verdict")
                    continue
                self._count_attribute(point.part, attribute, point.passed, out, quiet=quiet)
        history = channel.config.history if channel is not None else (attribute.config.history if attribute else 200)
        self._fed[key] = keys[-history:]
        return out.alerts

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
        entry = self._book.get((machine, program, plan.label))
        if entry is not None:
            entry.stepped = True

    def evidence(self, machine: str, program: str, feature: str) -> FeatureEvidence | None:
        """The latest evidence of one feature on one machine (None before its first part)."""
        watch = self._watches.get((machine, program, feature))
        return watch.last if watch is not None else None

    def _evaluate(
        self, part: PartRecord, plan: WatchPlan, watch: FeatureWatch, sigs: Mapping[AlertKind, Signal | None], ev: FeatureEvidence
    ) -> tuple[list[Alert], list[Alert]]:
        """Re-evaluate the feature's condition on this part: (changes to announce, refreshes to store)."""
        key = (part.machine, part.program, plan.label)
        entry = self._book.get(key)
        active = {k: sigs[k] for k in _ORDER if sigs.get(k) is not None}
        if not active and entry is None:
            return [], []
        close_after = plan.config.close_after
        if active:
            if entry is not None:
                entry.quiet = 0
                entry.stepped = False
            if AlertKind.OUT_OF_TOLERANCE in active:
                level = ConditionState.OUT_OF_TOLERANCE
            else:
                worst = max(s.severity.rank for s in active.values() if s is not None)
                level = {0: ConditionState.WATCH, 1: ConditionState.WARNING, 2: ConditionState.CRITICAL}[worst]
        # Hysteresis: no part counts towards closing while an axis is still moving (a slow drift crosses
        # nominal quietly on its way). After a recorded offset the trend's slope still spans the step
        # (wear that went on, or stopped: its models cannot tell yet), so the offset is taken as the
        # answer to the drift until a detector signals again: the charts restart at the new level.
        unsettled = None if active or (entry is not None and entry.stepped) else ev.unsettled()
        if active:
            pass
        elif ev.offsets or unsettled is not None:
            # no detector signals, but the mean still sits credibly off nominal (not re-centred), or it
            # is near nominal while still drifting (a slow drift crossing it): watch, not recovering
            assert entry is not None
            entry.quiet = 0
            level = ConditionState.WATCH
        else:
            assert entry is not None
            entry.quiet += 1
            level = ConditionState.OK if entry.quiet >= close_after else ConditionState.RECOVERING
        words, evidence = self._words(part, plan, watch, active, ev, level, entry, unsettled)
        kind = next(iter(active), entry.alert.kind if entry is not None else AlertKind.FORECAST)
        return self._settle(part, plan, key, entry, level, kind, words, evidence)

    def _settle(
        self,
        part: PartRecord,
        plan: Plan,
        key: tuple[str, str, str],
        entry: _Book | None,
        level: ConditionState,
        kind: AlertKind,
        words: str,
        evidence: dict[str, Any],
    ) -> tuple[list[Alert], list[Alert]]:
        """Open, update or close the condition ``key`` at ``level``: (changes, refreshes)."""
        close_after = plan.config.close_after
        if plan.source != PROBE_SOURCE:
            evidence = {**evidence, "source": plan.source}
        if entry is None:
            alert = Alert(
                id=self._new_id(f"{part.machine}/{part.program}/{plan.label}/{part.part_number}"),
                machine=part.machine,
                program=part.program,
                feature=plan.feature.name,
                kind=kind,
                severity=level.severity,
                state=AlertState.OPEN,
                part_number=part.part_number,
                message=words,
                time=part.end,
                evidence=evidence,
                part_key=part.key,
                condition=level,
                last_part=part.part_number,
            )
            self._book[key] = _Book(alert)
            return [alert], []
        before = entry.alert
        after = replace(
            before,
            kind=kind,
            severity=level.severity,
            message=words,
            time=part.end,
            evidence={**evidence, "opened_at_part": before.part_number},
            part_key=part.key,
            condition=level,
            last_part=part.part_number,
        )
        if level is ConditionState.OK:
            del self._book[key]
            closed = replace(
                after,
                state=AlertState.CLOSED,
                evidence={
                    **after.evidence,
                    "closed_at_part": part.part_number,
                    "close_reason": f"re-centred for {close_after} parts",
                },
            )
            return [closed], []
        entry.alert = after
        if level is not before.condition:
            return [after], []
        return [], [after]

    def registers(self, machine: str, program: str, feature: str, tool: str | None = None) -> dict[str, Register]:
        """The register correcting each axis of ``feature`` on ``machine`` ("value" for a size); ``tool``
        is the tool that last cut (used when the program file names none; never the probe)."""
        return dict(self._registers_of(machine, program, feature, tool))

    def _registers_of(self, machine: str, program: str, feature: str, tool: str | None) -> Mapping[str, Register]:
        """:meth:`registers` itself, not a copy: for the engine's own reads (advice and sharing ask
        for them with every part of an open condition); never changed by the caller."""
        if tool is not None and tool in self._probes.get(machine, frozenset()):
            tool = None
        kind = self._kinds.get(machine, "mill")
        key = (program, feature, kind, tool)
        found = self._registers.get(key)
        if found is None:
            found = self._programs[program].registers(feature, kind, tool)
            if len(self._registers) >= _MAX_REGISTER_KEYS:
                self._registers.clear()
            self._registers[key] = found
        return found

    def _words(
        self,
        part: PartRecord,
        plan: WatchPlan,
        watch: FeatureWatch,
        active: Mapping[AlertKind, Signal | None],
        ev: FeatureEvidence,
        level: ConditionState,
        entry: _Book | None,
        unsettled: Unsettled | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The condition's message and evidence on this part: the strongest signal's words, then the
        advice for now in the machine's registers."""
        registers = self._registers_of(part.machine, part.program, plan.feature.name, watch.tool)
        deviations = {o.axis: o.deviation for o in ev.offsets}
        if level is ConditionState.OUT_OF_TOLERANCE and not deviations:
            deviations = {a: e.deviation for a, e in ev.axes.items()}
        changes = advise(registers, deviations)
        changes, shared = self._shared(part, plan, changes)
        signals_ev = {str(k): {"severity": str(s.severity), "message": s.message, **s.evidence} for k, s in active.items() if s}
        first = next(iter(active.values()), None)
        forecast = signals_ev.get(str(AlertKind.FORECAST), {})
        parts_left = 0 if level is ConditionState.OUT_OF_TOLERANCE else forecast.get("parts_to_breach")
        quiet = entry.quiet if entry else 0
        text = advice_text(changes)
        action = _action(level, part.part_number, text, forecast, quiet, plan.config.close_after, active, unsettled)
        advice = {
            "action": action + _shared_words(shared, level),
            "text": text,
            "offsets": [c.as_dict() for c in changes],
            "shared": [s.as_dict() for s in shared],
            "parts_left": parts_left,
            "first_out_part": forecast.get("first_out_part"),
            "first_out_interval": forecast.get("first_out_interval"),
        }
        if first is not None:
            headline = _headline(first.message)
        else:
            dev = ", ".join(f"{'' if a == 'value' else a.upper() + ' '}{e.deviation * 1000:+.1f} um" for a, e in ev.axes.items())
            headline = f"{plan.display}: no detector signal ({dev} from nominal on part {part.part_number})"
        message = f"{headline}; {advice['action']}"
        top = dict(first.evidence) if first is not None else {}
        evidence: dict[str, Any] = {
            **top,
            "condition": str(level),
            "signals": signals_ev,
            "advice": advice,
            "quiet_parts": entry.quiet if entry is not None and not active else 0,
            "recover_after": plan.config.close_after,
            "unsettled": unsettled.words() if unsettled is not None else None,
            "tool": watch.tool if watch.tool not in self._probes.get(part.machine, frozenset()) else None,
        }
        return message, evidence

    def _shared(
        self, part: PartRecord, plan: WatchPlan, changes: list[OffsetChange]
    ) -> tuple[list[OffsetChange], list[SharedRegister]]:
        """The advice of a register that corrects other features of the program too (G54 X: every hole
        of the setup; one tool's D-wear: every bore it cuts), weighed against where those features are
        now (:func:`~monitor.registers.share_register`): combined, or withdrawn when they disagree."""
        if not changes:
            return changes, []
        out: list[OffsetChange] = []
        notes: list[SharedRegister] = []
        for change in changes:
            others = self._sharing(part, plan, change)
            shared = share_register(plan.feature.name, change, others)
            if shared is None:
                out.append(change)
                continue
            notes.append(shared)
            if shared.change is not None:
                out.append(replace(change, change=shared.change))
        return out, notes

    def _sharing(self, part: PartRecord, plan: WatchPlan, change: OffsetChange) -> list[SharedFeature]:
        """The other features of the part's program that ``change``'s register moves, with their
        current deviation on it (where each stood on its latest part, this one or the one before: kept in
        the state, so a restart advises alike)."""
        others: list[SharedFeature] = []
        target = change.register
        for other in self._plans.get(part.program, []):
            if other.source != PROBE_SOURCE or other.label == plan.label:
                continue
            watch = self._watches.get((part.machine, part.program, other.label))
            seen = watch.shared if watch is not None else None
            if watch is None or seen is None or not 0 <= part.part_number - seen.part_number <= 1:
                continue
            registers = self._registers_of(part.machine, part.program, other.feature.name, watch.tool)
            for axis, reg in registers.items():
                if axis not in seen.levels or not same_register(reg, target):
                    continue
                others.append(SharedFeature(other.feature.name, reg, seen.levels[axis], axis in seen.significant))
        return others

    def _new_id(self, base: str) -> str:
        """``base`` the first time; ``base#2``, ``base#3``... when a later batch (part numbers start
        again) opens the same kind on the same part number, so an id never names two alerts."""
        n = self._ids.get(base, 0) + 1
        self._ids[base] = n
        self._machine_ids.setdefault(_id_machine(base), {})[base] = n
        if len(self._ids) > _MAX_IDS:
            oldest = next(iter(self._ids))
            del self._ids[oldest]
            del self._machine_ids[_id_machine(oldest)][oldest]
        return base if n == 1 else f"{base}#{n}"

    def _close_feature(self, part: PartRecord, plan: WatchPlan, reason: str) -> list[Alert]:
        """Close the feature's condition at once (a new batch)."""
        entry = self._book.pop((part.machine, part.program, plan.label), None)
        if entry is None:
            return []
        closed = replace(
            entry.alert,
            state=AlertState.CLOSED,
            condition=ConditionState.OK,
            time=part.end,
            part_key=part.key,
            evidence={**entry.alert.evidence, "closed_at_part": part.part_number, "close_reason": reason},
        )
        return [closed]

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
                )  # the feature's next signal opens a new condition
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
        self,
        programs: Mapping[str, ProgramConfig],
        time: datetime,
        plans: Mapping[str, list[WatchPlan]] | None = None,
        *,
        machine_kinds: Mapping[str, str] | None = None,
        probe_tools: Mapping[str, frozenset[str]] | None = None,
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
                    condition=ConditionState.OK if entry.alert.condition is not None else None,
                    time=time,
                    evidence={**entry.alert.evidence, "close_reason": "program file changed: the feature is watched afresh"},
                )
            )
        self._programs, self._plans = new, plans
        self._registers.clear()
        self._attr_plans = {name: AttributePlan.for_program(cfg) for name, cfg in new.items()}
        if machine_kinds is not None:
            self._kinds = dict(machine_kinds)
        if probe_tools is not None:
            self._probes = dict(probe_tools)
        return closed

    # ------------------------------------------------------------------------------ persistence
    def state(self, machine: str | None = None) -> dict[str, Any]:
        """Everything needed to resume after a restart, as plain JSON-able data.

        With ``machine``, only that machine's share (no counters): the daemon stores one share per
        machine, so a part writes its own machine's state, not the whole cell's again.
        :meth:`from_states` joins the shares.
        """

        state = self._book_state(machine)
        watches = self._watches if machine is None else self._watches.of(machine)
        state["watches"] = [{"machine": m, "program": p, "feature": f, "state": w.state()} for (m, p, f), w in watches.items()]
        if machine is None:
            state["counters"] = dict(self.counters)
        return state

    def shares(
        self, machine: str, program: str | None = None, *, stored: Callable[[Alert], bool] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The machine's state in shares, each saved under its own name so that a part rewrites only
        the shares it changed: ``""`` the alert book (open alerts, lost connection, last part, alert
        ids) and ``"/<program>/<feature>"`` one feature's watch each (of ``program`` only, when given).
        :meth:`from_states` joins them like :meth:`state`'s.

        ``stored``: whether an open condition's alert, exactly as it stands, is in the alerts table
        (written before this state or in its transaction). The book then keeps only its id, state and
        counters, and :meth:`from_states` takes the alert from the table: a condition refreshed with
        every part is not written twice per part (its evidence is a few KB)."""
        book = self.state_book(machine, stored=stored)
        out: dict[str, dict[str, Any]] = {"": book}
        for (m, p, f), w in self._watches.of(machine).items():
            if program is None or p == program:
                out[f"/{p}/{f}"] = {
                    "version": _STATE_VERSION,
                    "watches": [{"machine": m, "program": p, "feature": f, "state": w.state()}],
                }
        return out

    def state_book(self, machine: str, *, stored: Callable[[Alert], bool] | None = None) -> dict[str, Any]:
        """The machine's alert book alone: :meth:`state` of ``machine`` without its watches
        (``stored``: see :meth:`shares`)."""
        return {**self._book_state(machine, stored), "watches": []}

    def _book_state(self, machine: str | None, stored: Callable[[Alert], bool] | None = None) -> dict[str, Any]:
        """Everything of :meth:`state` but the watches and counters (of ``machine``, or all): a
        machine's from its own entries (a part's cost does not grow with the cell)."""

        def condition(key: tuple[str, str, str], entry: _Book) -> dict[str, Any]:
            if stored is not None and stored(entry.alert):  # the alerts table has it: its id and state
                held: dict[str, Any] = {"id": entry.alert.id, "state": str(entry.alert.state)}
            else:
                held = {"alert": alert_to_dict(entry.alert)}
            return {"key": list(key), **held, "quiet": entry.quiet, "stepped": entry.stepped}

        book: Mapping[_Key, _Book] = self._book
        counts: Mapping[_Key, AttributeCount] = self._counts
        fed: Mapping[_Key, list[str]] = self._fed
        lost: Mapping[str, Alert] = self._lost
        gaps: Mapping[str, Alert] = self._gaps
        last_part: Mapping[str, int] = self._last_part
        if machine is not None:
            book, counts, fed = self._book.of(machine), self._counts.of(machine), self._fed.of(machine)
            lost = {machine: self._lost[machine]} if machine in self._lost else {}
            gaps = {machine: self._gaps[machine]} if machine in self._gaps else {}
            last_part = {machine: self._last_part[machine]} if machine in self._last_part else {}
        return {
            "version": _STATE_VERSION,
            "alerts": [condition(k, e) for k, e in book.items()],
            "counts": [{"machine": m, "program": p, "label": f, "state": c.state()} for (m, p, f), c in counts.items()],
            "fed": [{"machine": m, "program": p, "label": f, "keys": keys} for (m, p, f), keys in fed.items()],
            "lost": {m: alert_to_dict(a) for m, a in lost.items()},
            "gaps": {m: alert_to_dict(a) for m, a in gaps.items()},
            "last_part": dict(last_part),
            "ids": dict(self._ids) if machine is None else dict(self._machine_ids.get(machine, {})),
        }

    @classmethod
    def from_states(
        cls,
        programs: Mapping[str, ProgramConfig],
        states: Iterable[Mapping[str, Any]],
        *,
        alerts: Callable[[str], Alert | None] | None = None,
        **machines: Any,
    ) -> DriftEngine:
        """Rebuild an engine from the per-machine shares of :meth:`state` (or one whole state);
        ``alerts`` looks up a stored alert by id (see ``stored`` in :meth:`shares`)."""
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
        return cls.from_state(programs, merged, alerts=alerts, **machines)

    @classmethod
    def from_state(
        cls,
        programs: Mapping[str, ProgramConfig],
        state: Mapping[str, Any],
        *,
        alerts: Callable[[str], Alert | None] | None = None,
        **machines: Any,
    ) -> DriftEngine:
        """Rebuild an engine from :meth:`state`.

        Watches of features no longer configured are dropped; a watch whose saved state does not fit
        the feature any more starts afresh (counted as ``state_discarded``); detectors whose settings
        changed in the program file restart with the new settings. A condition saved by id takes its
        alert from ``alerts`` (the store's alerts table), in the state the book saved: a person's
        change written to the store meanwhile is then seen by the caller as a difference (see
        ``Pipeline._reconcile_people_changes``); one that cannot be found is dropped (counted as
        ``condition_not_found``: the feature's next signal opens a new one).
        """
        engine = cls(programs, **machines)
        engine.counters = {k: int(v) for k, v in state.get("counters", {}).items()}
        engine._ids = {k: int(v) for k, v in state.get("ids", {}).items()}
        for base, n in engine._ids.items():
            engine._machine_ids.setdefault(_id_machine(base), {})[base] = n
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
            if "alert" in a:
                alert = alert_from_dict(a["alert"])
            else:
                found = alerts(str(a["id"])) if alerts is not None else None
                if found is None:
                    engine._count("condition_not_found")
                    continue
                alert = found if str(found.state) == a["state"] else replace(found, state=AlertState(a["state"]))
            if len(a["key"]) == 3:
                m, p, f = a["key"]
                engine._book[(m, p, f)] = _Book(alert, int(a.get("quiet", 0)), bool(a.get("stepped", False)))
            else:  # an alert per detector kind (before issue 15): closed once, the condition takes over
                engine.migrated.append(
                    replace(
                        alert,
                        state=AlertState.CLOSED,
                        evidence={**alert.evidence, "close_reason": "migrated: alerts became one condition per feature"},
                    )
                )
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
