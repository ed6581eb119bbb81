"""The batch report's numbers: read from the store, computed once, rendered elsewhere.

What a quality engineer needs to sign off a small batch, read from the store:

- per feature, every part's measurement (true position for position features) against its
  tolerance band, with the alerts marked on the chart;
- capability Cp, Cpk, Pp and Ppk with 95 % confidence intervals, normality and stability
  (:func:`monitor.detect.capability.capability`, the one implementation every screen uses: true
  position and one-sided characteristics are judged against their one limit, so they have Cpk/Ppk
  but no Cp/Pp);
- the parts out of tolerance, the conditions raised and what was done about them (the actions people
  recorded: acknowledged with a comment, offset applied in which register, tool changed, part
  quarantined, with who and when; closed), the offset the advice named, and the tools used with
  their life counters.

:func:`build_report` gathers the numbers into a :class:`BatchReport` (plain data, tested alone)
from any :class:`~monitor.store.StoreReader`; :mod:`monitor.report.table` (CSV) and
:mod:`monitor.report.page` (HTML from a template) only format it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from monitor.codec import action_text
from monitor.config import ProgramConfig
from monitor.detect.capability import CapabilityResult
from monitor.errors import MonitorError
from monitor.inspection.config import PROBE_SOURCE
from monitor.model import (
    PART_DISPOSITIONS,
    PROCESS_ACTIONS,
    Action,
    ActionKind,
    Alert,
    AlertKind,
    AlertState,
    AttributeFeature,
    Feature,
    PartRecord,
    PartStatus,
    PositionFeature,
    SizeFeature,
)
from monitor.report.sources import (
    Bias,
    FeatureValue,
    Measurement,
    SourceReport,
    bias,
    inspection_values,
    measurements,
    source_report,
)
from monitor.report.stored import capability_of_values
from monitor.report.verdict import Verdict, worst
from monitor.store import StoreReader

__all__ = [
    "AlertOutcome",
    "BatchReport",
    "FeatureReport",
    "FeatureValue",
    "PartDisposition",
    "ReportHeader",
    "ToolSummary",
    "batch_actions",
    "build_report",
    "feature_capability",
    "judge",
    "part_dispositions",
    "summary",
    "when_text",
]


@dataclass(frozen=True, slots=True)
class FeatureReport:
    """Everything the report says about one feature of the program."""

    feature: Feature
    lower: float | None
    upper: float | None
    nominal: float
    unit: str
    values: tuple[FeatureValue, ...]
    capability: CapabilityResult | None
    missing_parts: tuple[int, ...]
    balloon: str | None = None
    sources: tuple[SourceReport, ...] = ()
    """Every measurement source with values: the probe first, then the program's inspection sources."""
    biases: tuple[Bias, ...] = ()
    """The probe against each inspection source, on the parts both measured."""
    verdict: Verdict | None = None
    """The worst verdict of its sources."""

    @property
    def name(self) -> str:
        return self.feature.name

    @property
    def kind(self) -> str:
        """size, angle, one_sided, position or attribute (as in the program file)."""
        return self.feature.kind if not isinstance(self.feature, PositionFeature) else "position"

    def limits_text(self) -> str:
        """The tolerance as the report prints it: ``9.9900 – 10.0100 mm``, ``≤ 0.0200 mm``."""
        unit = " °" if self.unit == "deg" else f" {self.unit}" if self.unit else ""
        if self.kind == "attribute":
            return "go / no-go"
        if self.kind == "position":
            return f"Ø {self.upper:.4f}{unit} (true position)"
        if self.lower is None:
            return f"≤ {self.upper:.4f}{unit}"
        if self.upper is None:
            return f"≥ {self.lower:.4f}{unit}"
        return f"{self.lower:.4f} – {self.upper:.4f}{unit}"

    @property
    def out_of_tolerance(self) -> list[FeatureValue]:
        return [v for v in self.values if not v.in_tolerance]

    def stats(self) -> dict[str, float | None]:
        xs = [v.value for v in self.values]
        return {
            "n": len(xs),
            "mean": statistics.fmean(xs) if xs else None,
            "sd": statistics.stdev(xs) if len(xs) >= 2 else None,
            "min": min(xs) if xs else None,
            "max": max(xs) if xs else None,
        }


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    """One alert of the batch, as it stands, with what people and the detector did about it."""

    alert: Alert
    raised_at: datetime
    raised_part: int
    acknowledged_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    offset_register: str | None
    offset_change_mm: float | None
    actions: tuple[Action, ...] = ()
    """What people recorded on it (issue 15's action record), oldest first."""
    offset_text: str | None = None
    """The latest advice in the machine's registers, every axis ("G54 X -0.019 Y +0.003 mm")."""

    def offset(self) -> str:
        """The offset the advice named, for the report's table ("–" when none)."""
        if self.offset_text:
            return self.offset_text
        if self.offset_register and self.offset_change_mm is not None:
            return f"{self.offset_register} {self.offset_change_mm:+.4f} mm"
        return "–"

    def action(self) -> str:
        """What was done, in words, for the report's alert table: every recorded action with who and
        when, then how it ended. Alerts stored before actions were recorded (schema < 4) fall back to
        their state changes ("acknowledged <when>")."""
        done = [f"{when_text(a.time)} {a.user} ({a.role}): {action_text(a)}" for a in self.actions]
        recorded = {a.kind for a in self.actions}
        if self.acknowledged_at is not None and ActionKind.ACKNOWLEDGE not in recorded:
            done.append(f"acknowledged {when_text(self.acknowledged_at)}")
        if self.closed_at is not None:
            reason = f" ({self.close_reason})" if self.close_reason else ""
            done.append(f"closed {when_text(self.closed_at)}{reason}")
        if not done:
            done.append("still open, nothing recorded")
        return "; ".join(done)


def _done(a: Action) -> str:
    """An action in the disposition's words: what, who, when and the part it followed."""
    after = f", after part {a.part_number}" if a.kind in PROCESS_ACTIONS and a.part_number is not None else ""
    return f"{action_text(a)} ({a.user}, {when_text(a.time)}{after})"


@dataclass(frozen=True, slots=True)
class PartDisposition:
    """What was recorded about one out-of-tolerance value of one part, for the reviewer.

    ``part_actions`` are recorded on the part itself (quarantined, scrapped, reworked, accepted on
    concession; by its key, or by machine and part number), whatever feature they were recorded
    from: a part is scrapped whole. ``condition`` is the feature's condition (of the same
    measurement source) that was alive when the part was made, and ``process_actions`` what was done
    to the process under it (offsets applied, tools changed) with when and after which part."""

    part_actions: tuple[Action, ...] = ()
    condition: AlertOutcome | None = None
    process_actions: tuple[Action, ...] = ()

    def part_text(self) -> str:
        return "; ".join(_done(a) for a in self.part_actions)

    def process_text(self) -> str:
        return "; ".join(_done(a) for a in self.process_actions)

    def text(self) -> str:
        """One cell: the part's disposition, then the process's; "no disposition recorded" only when
        neither was (with how the condition was handled, when it was)."""
        part, process = self.part_text(), self.process_text()
        if not part and not process:
            handled = self.condition.action() if self.condition is not None else ""
            if handled and handled != "still open, nothing recorded":
                return f"no disposition recorded (condition: {handled})"
            return "no disposition recorded"
        text = part or "no disposition of the part recorded"
        return f"{text}; process: {process}" if process else text


@dataclass(frozen=True, slots=True)
class ToolSummary:
    """A tool that cut parts of the batch, with its life counter at the first and last of them."""

    tool: str
    parts: int
    first_part: int
    last_part: int
    life_first: float | None
    life_last: float | None
    cutting_time_s: float


@dataclass(frozen=True, slots=True)
class ReportHeader:
    """What the report says about the part and how it judges (program file's ``report``, with the
    command line's overrides)."""

    customer: str | None = None
    customer_part_number: str | None = None
    part_name: str | None = None
    drawing: str | None = None
    revision: str | None = None
    lot: str | None = None
    required_index: str = "ppk"
    required: float = 1.67
    sign_off: tuple[str, ...] = ()

    @classmethod
    def of(cls, program: ProgramConfig, **overrides: Any) -> ReportHeader:
        """From the program file, with ``overrides`` (None values left out) on top."""
        r = program.report
        base: dict[str, Any] = {
            "customer": r.customer,
            "customer_part_number": r.customer_part_number,
            "part_name": r.part_name,
            "drawing": r.drawing,
            "revision": r.revision,
            "required_index": r.required_index,
            "required": r.required,
            "sign_off": tuple(r.sign_off),
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True, slots=True)
class BatchReport:
    """The numbers of one report; rendering never computes anything new."""

    site: str
    program: str
    machines: tuple[str, ...]
    first_part: int | None
    last_part: int | None
    generated: datetime
    parts: tuple[PartRecord, ...]
    features: tuple[FeatureReport, ...]
    alerts: tuple[AlertOutcome, ...]
    tools: tuple[ToolSummary, ...]
    header: ReportHeader = field(default_factory=lambda: ReportHeader())
    unmatched: int = 0
    """Inspection results in the store that no part matched (``monitor inspections --unmatched``)."""
    lots: tuple[str, ...] = ()
    """Lot numbers the inspection results of these parts name."""
    measurements: tuple[Measurement, ...] = ()
    """Every measurement of the complete parts, every source, re-measurements included."""
    offsets: tuple[Action, ...] = ()
    """Every offset the monitor wrote to (or refused to write to) a controller during the batch, oldest
    first: the audit trail of the closed loop (docs/offsets.md)."""
    part_actions: Mapping[str, tuple[Action, ...]] = field(default_factory=dict)
    """What became of each part (quarantined, scrapped, reworked, accepted), by part key, oldest first."""
    dispositions: Mapping[tuple[str, str, str], PartDisposition] = field(default_factory=dict)
    """Each out-of-tolerance value's disposition, by (feature, source, part key)."""
    actions: tuple[Action, ...] = ()
    """Every action taken during the batch, oldest first (:func:`batch_actions`)."""

    def disposition(self, feature: str, source: str, part_key: str) -> PartDisposition:
        """What was recorded about this part's out-of-tolerance value (nothing: an empty disposition)."""
        return self.dispositions.get((feature, source, part_key)) or PartDisposition(self.part_actions.get(part_key, ()))

    @property
    def complete_parts(self) -> list[PartRecord]:
        return [p for p in self.parts if p.status is PartStatus.COMPLETE]

    def not_observed(self) -> list[tuple[list[PartRecord], str]]:
        """Runs of parts the controller counted but nobody saw (data lost), each with its note."""
        runs: list[tuple[list[PartRecord], str]] = []
        for p in self.parts:
            if p.status is not PartStatus.NOT_OBSERVED:
                continue
            note = p.notes[0] if p.notes else ""
            last = runs[-1][0][-1] if runs else None
            if last is not None and runs[-1][1] == note and p.part_number == last.part_number + 1:
                runs[-1][0].append(p)
            else:
                runs.append(([p], note))
        return runs

    def status_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in PartStatus}
        for p in self.parts:
            counts[p.status.value] += 1
        return counts


# ------------------------------------------------------------------------------------- building
def judge(feature: Feature, m: Mapping[str, float]) -> tuple[float, bool, dict[str, float]] | None:
    """A part's value of ``feature`` from its measurements (true position for a position; 1 for a
    failed go/no-go check, 0 for a pass), whether it is in tolerance, and a position's deviation
    per axis; None when a measurement is missing or not finite. Every screen judges this way."""
    if isinstance(feature, AttributeFeature):
        passed = feature.passed(dict(m))
        return None if passed is None else (0.0 if passed else 1.0, passed, {})
    if isinstance(feature, SizeFeature):
        value = m.get(feature.signal) if feature.signal is not None else None
        if value is None or not math.isfinite(value):
            return None
        return value, feature.in_tolerance(value), {}
    if any(m.get(ref.signal) is None or not math.isfinite(m[ref.signal]) for _, ref in feature.axes):
        return None
    tp = feature.true_position(dict(m))
    if tp is None or not math.isfinite(tp):
        return None
    return tp, tp <= feature.tolerance, {axis: m[ref.signal] - ref.nominal for axis, ref in feature.axes}


def _feature_value(feature: Feature, part: PartRecord) -> FeatureValue | None:
    judged = judge(feature, part.measurements)
    if judged is None:
        return None
    value, ok, deviations = judged
    return FeatureValue(part.machine, part.part_number, part.key, value, ok, deviations)


def _feature_report(feature: Feature, parts: Sequence[PartRecord]) -> FeatureReport:
    values: list[FeatureValue] = []
    missing: list[int] = []
    for part in parts:
        v = _feature_value(feature, part)
        if v is None:
            missing.append(part.part_number)
        else:
            values.append(v)
    order = {p.key: (p.end, p.key) for p in parts}
    in_order = sorted(values, key=lambda v: order[v.part_key])  # capability follows production order
    cap = capability_of_values(feature, [v.value for v in in_order])
    if isinstance(feature, AttributeFeature):
        return FeatureReport(feature, None, None, 0.0, "", tuple(values), None, tuple(missing))
    if isinstance(feature, SizeFeature):
        f = feature
        return FeatureReport(f, f.lower, f.upper, f.nominal, f.unit, tuple(values), cap, tuple(missing))
    return FeatureReport(feature, None, feature.tolerance, 0.0, "mm", tuple(values), cap, tuple(missing))


def feature_capability(feature: Feature, parts: Sequence[PartRecord]) -> CapabilityResult | None:
    """Capability of one feature over ``parts`` (complete ones; taken in the order they ended, as
    the store's series keep them): what the report, ``monitor parts --capability``, ``monitor
    analyze`` and the dashboard all show."""
    return _feature_report(feature, parts).capability


def _alert_outcomes(store: StoreReader, alerts: Sequence[Alert]) -> list[AlertOutcome]:
    """Join each alert with its history (alert_events) to find when it was raised, acknowledged, closed."""
    wanted = {a.id for a in alerts}
    history: dict[str, list[Alert]] = {a: [] for a in wanted}
    after = 0
    while True:
        page = store.alert_events(after, limit=1000)
        if not page:
            break
        for seq, event in page:
            after = seq
            if event.id in wanted:
                history[event.id].append(event)
    out: list[AlertOutcome] = []
    for alert in alerts:
        events = history[alert.id] or [alert]
        first = events[0]
        acked = next((e.time for e in events if e.state is AlertState.ACKNOWLEDGED), None)
        closed = next((e.time for e in events if e.state is AlertState.CLOSED), None)
        offset: dict[str, Any] = {}
        for e in events:  # the latest suggestion made while the alert lived
            candidate = e.evidence.get("offset")
            advice = e.evidence.get("advice")
            if isinstance(advice, dict) and advice.get("offsets"):  # a condition's advice names the machine's register
                first_offset = advice["offsets"][0]
                candidate = {
                    "register": first_offset.get("label"),
                    "change_mm": first_offset.get("change_mm"),
                    "text": advice.get("text"),  # every axis: "G54 X -0.019 Y +0.003 mm"
                }
            if isinstance(candidate, dict):
                offset = candidate
        change = offset.get("change_mm")
        # what people did: actions that name this condition, and those on its feature while it lived
        # that name no condition (an offset recorded from the command line by feature)
        until = closed or datetime.max.replace(tzinfo=UTC)
        acts = [
            a
            for a in store.actions(machine=alert.machine, program=alert.program, feature=alert.feature)
            if a.condition_id == alert.id or (a.condition_id is None and first.time <= a.time <= until)
        ]
        reason = alert.evidence.get("close_reason")
        if reason is None and "closed_at_part" in alert.evidence and closed is not None:
            reason = f"back in control at part {alert.evidence['closed_at_part']}"
        out.append(
            AlertOutcome(
                alert=alert,
                raised_at=first.time,
                raised_part=int(alert.evidence.get("opened_at_part", first.part_number)),
                acknowledged_at=acked,
                closed_at=closed,
                close_reason=None if reason is None else str(reason),
                offset_register=None if offset.get("register") is None else str(offset["register"]),
                offset_change_mm=float(change) if isinstance(change, (int, float)) else None,
                actions=tuple(acts),
                offset_text=str(offset["text"]) if offset.get("text") else None,
            )
        )
    out.sort(key=lambda o: (o.raised_at, o.alert.id))
    return out


def _lost_at(alert: Alert) -> datetime:
    """When a connection was lost (evidence ``lost_at``), else the alert's latest change."""
    text = alert.evidence.get("lost_at")
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return alert.time


def _tools(parts: Sequence[PartRecord]) -> list[ToolSummary]:
    by_tool: dict[str, list[tuple[PartRecord, Any]]] = {}
    for part in parts:
        for use in part.tools:
            by_tool.setdefault(use.tool, []).append((part, use))
    out = []
    for tool, uses in by_tool.items():
        lives_first = [u.life_start if u.life_start is not None else u.life_end for _, u in uses]
        lives_last = [u.life_end if u.life_end is not None else u.life_start for _, u in uses]
        first = next((x for x in lives_first if x is not None), None)
        last = next((x for x in reversed(lives_last) if x is not None), None)
        numbers = [p.part_number for p, _ in uses]
        parts_cut = len({p.key for p, _ in uses})  # a tool called twice in one part counts once
        out.append(ToolSummary(tool, parts_cut, min(numbers), max(numbers), first, last, sum(u.cutting_time for _, u in uses)))
    out.sort(key=lambda t: (t.first_part, t.tool))
    return out


def build_report(
    store: StoreReader,
    program: ProgramConfig,
    *,
    site: str,
    machine: str | None = None,
    first_part: int | None = None,
    last_part: int | None = None,
    generated: datetime | None = None,
    header: ReportHeader | None = None,
    machines: Sequence[str] | None = None,
) -> BatchReport:
    """Read the batch from the store and compute everything the report shows.

    Only complete parts enter the charts and capability; incomplete and aborted parts are counted
    and listed. Alerts are those of the program (and machine) raised on a part inside the range.
    ``header`` (default: the program file's ``report``) names the part and the acceptance rule.
    ``machines`` keeps only those machines' parts and alerts (one cell of a shared store).
    """
    header = header or ReportHeader.of(program)
    parts = store.parts(machine=machine, program=program.program, first_part=first_part, last_part=last_part, machines=machines)
    if not parts:
        where = f" on {machine}" if machine else ""
        where += f" on the cell's machines ({', '.join(machines) or 'none'})" if machines is not None else ""
        span = f" between parts {first_part} and {last_part}" if first_part is not None or last_part is not None else ""
        raise MonitorError(f"no parts of program {program.program}{where}{span} in the store; check `monitor parts`")
    parts.sort(key=lambda p: (p.part_number, p.machine, p.end))
    complete = [p for p in parts if p.status is PartStatus.COMPLETE]
    inspected = inspection_values(store, program, complete)
    features = tuple(
        _with_sources(_feature_report(f, complete), program, complete, inspected, header) for f in program.feature_models()
    )
    results = store.inspection_results(part_keys=[p.key for p in complete], with_actuals=False)
    lots = sorted({s.result.lot for s in results if s.result.lot})

    lo = first_part if first_part is not None else min(p.part_number for p in parts)
    hi = last_part if last_part is not None else max(p.part_number for p in parts)
    alerts = [
        a
        for a in store.alerts(machine=machine, program=program.program, machines=machines)
        if lo <= a.part_number <= hi or lo <= int(a.evidence.get("opened_at_part", a.part_number)) <= hi
    ]
    # Connection losses carry no program: include those of the batch's machines while it ran.
    start, end = min(p.start for p in parts), max(p.end for p in parts)
    for m in sorted({p.machine for p in parts}):
        alerts.extend(a for a in store.alerts(machine=m) if a.kind is AlertKind.SIGNAL_LOST and start <= _lost_at(a) <= end)
    outcomes = _alert_outcomes(store, alerts)
    part_actions = part_dispositions(store, program.program, parts)
    actions = batch_actions(store, program.program, parts, {a.id for a in alerts}, part_actions)
    return BatchReport(
        site=site,
        program=program.program,
        machines=tuple(sorted({p.machine for p in parts})),
        first_part=lo,
        last_part=hi,
        generated=generated or datetime.now(UTC),
        parts=tuple(parts),
        features=features,
        alerts=tuple(outcomes),
        tools=tuple(_tools(complete or parts)),
        header=header,
        unmatched=len(store.inspection_results(unmatched=True, with_actuals=False)),
        lots=tuple(lots),
        measurements=tuple(measurements(store, program, complete)),
        offsets=tuple(_controller_writes(store, program.program, {p.machine for p in parts}, {a.id for a in alerts})),
        part_actions=part_actions,
        dispositions=_dispositions(features, parts, outcomes, part_actions),
        actions=tuple(actions),
    )


def batch_actions(
    store: StoreReader,
    program: str,
    parts: Sequence[PartRecord],
    conditions: set[str],
    part_actions: Mapping[str, tuple[Action, ...]],
) -> list[Action]:
    """Every action taken during the batch, oldest first: those recorded on its machines (for its
    program, or for no program) between the first part's start and the last part's end, and those
    answering one of its conditions or naming one of its parts whenever they were recorded (a part
    scrapped the next morning belongs to the batch's record)."""
    if not parts:
        return []
    start, end = min(p.start for p in parts), max(p.end for p in parts)
    keys = {p.key for p in parts}
    linked = {a.id for acts in part_actions.values() for a in acts}
    out: dict[str, Action] = {}
    for machine in sorted({p.machine for p in parts}):
        for a in store.actions(machine=machine):
            if a.program not in (program, ""):
                continue
            if (
                start <= a.time <= end
                or a.condition_id in conditions
                or (a.part_key is not None and a.part_key in keys)
                or a.id in linked
            ):
                out[a.id] = a
    return sorted(out.values(), key=lambda a: (a.time, a.id))


def part_dispositions(store: StoreReader, program: str, parts: Sequence[PartRecord]) -> dict[str, tuple[Action, ...]]:
    """Every disposition recorded on the batch's parts, by part key. An action names its part by key;
    one recorded by number only (before keys were recorded) goes to the part of that number on that
    machine that ended last before the action (a part number recurs when a new batch starts)."""
    by_number: dict[tuple[str, int], list[PartRecord]] = {}
    keys = {p.key for p in parts}
    for p in parts:
        by_number.setdefault((p.machine, p.part_number), []).append(p)
    out: dict[str, list[Action]] = {}
    for machine in sorted({p.machine for p in parts}):
        for a in store.actions(machine=machine, program=program):
            if a.kind not in PART_DISPOSITIONS:
                continue
            key = a.part_key if a.part_key in keys else None
            if a.part_key is None and a.part_number is not None:
                same = sorted(by_number.get((a.machine, a.part_number), []), key=lambda p: p.end)
                before = [p for p in same if p.end <= a.time]
                key = (before[-1] if before else same[0]).key if same else None
            if key is not None:
                out.setdefault(key, []).append(a)
    return {k: tuple(sorted(v, key=lambda a: (a.time, a.id))) for k, v in out.items()}


def _dispositions(
    features: Sequence[FeatureReport],
    parts: Sequence[PartRecord],
    outcomes: Sequence[AlertOutcome],
    part_actions: Mapping[str, tuple[Action, ...]],
) -> dict[tuple[str, str, str], PartDisposition]:
    """Each out-of-tolerance value with the part's own actions and the process actions of the
    condition (same machine, feature and source) that was alive when the part was made: opened at or
    before its end, closed at or after it. Since issue 15 one condition spans every bad part of an
    episode, so the condition alone cannot say what became of each part."""
    ends = {p.key: p.end for p in parts}
    out: dict[tuple[str, str, str], PartDisposition] = {}
    for f in features:
        for s in f.sources:
            mine = [
                o
                for o in outcomes
                if o.alert.feature == f.name
                and (o.alert.condition is not None or o.alert.kind is AlertKind.OUT_OF_TOLERANCE)
                and str(o.alert.evidence.get("source", PROBE_SOURCE)) == s.source
            ]
            for v in s.out_of_tolerance:
                end = ends.get(v.part_key)
                alive = [
                    o
                    for o in mine
                    if o.alert.machine == v.machine
                    and end is not None
                    and o.raised_at <= end
                    and (o.closed_at is None or end <= o.closed_at)
                ]
                condition = alive[-1] if alive else None
                process = tuple(a for a in condition.actions if a.kind in PROCESS_ACTIONS) if condition is not None else ()
                out[(f.name, s.source, v.part_key)] = PartDisposition(part_actions.get(v.part_key, ()), condition, process)
    return out


def _with_sources(
    f: FeatureReport,
    program: ProgramConfig,
    parts: Sequence[PartRecord],
    inspected: Mapping[tuple[str, str], tuple[list[FeatureValue], int]],
    header: ReportHeader,
) -> FeatureReport:
    """The feature's measurement sources (probe first), the probe's bias against each, its verdict."""
    spec = program.features.get(f.name)
    measured_by = dict(spec.measured_by) if spec is not None else {}
    order = {p.key: (p.end, p.key) for p in parts}
    index, required = header.required_index, header.required
    sources: list[SourceReport] = []
    if f.feature.signals:
        sources.append(
            source_report(f.feature, PROBE_SOURCE, measured_by.get(PROBE_SOURCE), f.values, order, index=index, required=required)
        )
    for name, how in measured_by.items():
        if name == PROBE_SOURCE:
            continue
        values, again = inspected.get((f.name, name), ([], 0))
        sources.append(source_report(f.feature, name, how, values, order, index=index, required=required, remeasured=again))
    probe = sources[0] if sources and sources[0].source == PROBE_SOURCE else None
    biases = [] if probe is None else [bias(f.feature, probe.values, s.values, s.source) for s in sources[1:]]
    verdict = worst([s.verdict for s in sources if s.values])
    return replace(
        f,
        balloon=spec.balloon if spec is not None else None,
        sources=tuple(sources),
        biases=tuple(b for b in biases if b is not None),
        verdict=verdict,
    )


_WRITES = (ActionKind.OFFSET_APPLIED, ActionKind.OFFSET_REFUSED)


def _controller_writes(store: StoreReader, program: str, machines: set[str], conditions: set[str]) -> list[Action]:
    """Offsets the monitor wrote to the batch's controllers (and refused to) for the batch's conditions."""
    out = [
        a
        for m in sorted(machines)
        for a in store.actions(machine=m, program=program)
        if a.kind in _WRITES and a.source == "controller" and a.condition_id in conditions
    ]
    return sorted(out, key=lambda a: (a.time, a.id))


def when_text(t: datetime) -> str:
    """A time as the report prints it: minutes, UTC."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_SUMMARY_KEYS = ("cp", "cp_ci", "cpk", "cpk_ci", "pp", "pp_ci", "ppk", "ppk_ci", "stable", "signals", "normality_p")


def _source_summary(s: SourceReport) -> dict[str, Any]:
    cap = {k: v for k, v in s.capability.as_dict().items() if k in _SUMMARY_KEYS} if s.capability else {}
    return {
        "source": s.source,
        "system": s.system,
        "resolution": s.resolution,
        "repeatability": s.repeatability,
        "n": len(s.values),
        "out_of_tolerance": [v.part_number for v in s.out_of_tolerance],
        "remeasured": s.remeasured,
        **cap,
        **s.verdict.as_dict(),
    }


def summary(report: BatchReport) -> dict[str, Any]:
    """The report's headline numbers as JSON, for ``monitor report --json``."""
    return {
        "site": report.site,
        "program": report.program,
        "machines": list(report.machines),
        "parts": len(report.parts),
        "status": report.status_counts(),
        "header": {k: getattr(report.header, k) for k in ReportHeader.__dataclass_fields__} | {"lots": list(report.lots)},
        "unmatched_inspection_results": report.unmatched,
        "features": [
            {
                "feature": f.name,
                "balloon": f.balloon,
                "kind": f.kind,
                **f.stats(),
                "out_of_tolerance": [v.part_number for v in f.out_of_tolerance],
                **({k: v for k, v in f.capability.as_dict().items() if k in _SUMMARY_KEYS} if f.capability else {}),
                **(f.verdict.as_dict() if f.verdict else {}),
                "sources": [_source_summary(s) for s in f.sources],
                "bias": [
                    {"source": b.source, "n": b.n, "mean": b.mean, "ci": [b.lo, b.hi], "sd": b.sd, "r": b.r, "share": b.share}
                    for b in f.biases
                ],
            }
            for f in report.features
        ],
        "alerts": len(report.alerts),
        "actions": len(report.actions),
        "open_alerts": sum(1 for o in report.alerts if o.alert.state is not AlertState.CLOSED),
        "tools": [t.tool for t in report.tools],
    }
