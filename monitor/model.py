"""The domain model every module speaks: observations in, part records through, alerts out.

Objects here are frozen and carry no behaviour beyond small derived values, so they can cross
threads, be compared in tests and be serialised to JSON for the store and the sinks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "CANONICAL_SIGNALS",
    "CONNECTION_SIGNAL",
    "GAP_SIGNAL",
    "PART_DISPOSITIONS",
    "PROCESS_ACTIONS",
    "Action",
    "ActionKind",
    "Alert",
    "AlertKind",
    "AlertState",
    "AttributeFeature",
    "AxisRef",
    "ConditionState",
    "Feature",
    "Observation",
    "PartRecord",
    "PartStatus",
    "PositionFeature",
    "Register",
    "RegisterKind",
    "Role",
    "Severity",
    "SizeFeature",
    "SpindleStats",
    "ToolUse",
    "Value",
    "is_canonical_signal",
    "new_observation",
    "out_of_tolerance",
]

Value = float | str | None
"""An observed value: a number, a text (program name, execution state) or None for UNAVAILABLE."""

CANONICAL_SIGNALS: frozenset[str] = frozenset(
    {
        "spindle.load",
        "spindle.speed",
        "spindle.override",
        "tool.number",
        "tool.life",
        "part.count",
        "part.complete",
        "part.id",
        "program.name",
        "execution",
    }
)
"""Signal names every adapter maps to; probe results are ``probe.<name>`` in addition."""

GAP_SIGNAL = "source.gap"
"""Emitted by an adapter when it knows data was lost (agent restart, buffer overrun, reconnect).

The value is a short human description of the gap. ``time`` is where the loss begins and, when the
adapter knows it, ``end`` where it ends, both in the source's own clock (the last value seen
before the loss and the newest value found after it), so the gap sorts among the controller's
data. The tracker marks every part that overlaps the window incomplete, and accounts for each
part counter value the controller moved through meanwhile with a ``not_observed`` placeholder,
because a part that may have missed a probe value must never look complete."""

CONNECTION_SIGNAL = "source.connection"
"""Emitted by an adapter on every connection state change; value is ``connected`` or ``lost``."""


def is_canonical_signal(name: str) -> bool:
    """True for the fixed canonical names and for any ``probe.<name>``/``tool.life.<n>`` style name."""
    if name in CANONICAL_SIGNALS or name in (GAP_SIGNAL, CONNECTION_SIGNAL):
        return True
    head, _, tail = name.partition(".")
    if head == "probe" and tail:
        return True
    return name.startswith("tool.life.") and len(name) > len("tool.life.")


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of one signal of one machine at one time, as the controller reported it.

    ``time`` is the controller's timestamp (UTC, timezone-aware) where the protocol gives one.
    ``source_seq`` is the protocol's own sequence number (MTConnect) when there is one, so
    replays after a reconnect can be recognised.
    """

    machine: str
    signal: str
    time: datetime
    value: Value
    source_seq: int | None = None
    end: datetime | None = None
    """Only for an observation that covers a span (a ``source.gap``): where it ends, in the clock of ``time``."""

    @property
    def number(self) -> float | None:
        """The value as a finite float, or None when it is missing, text or not finite.

        Never raises: an int beyond float range (a JSON replay line's ``10**400`` written out) is
        not finite either."""
        v = self.value
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, (int, float)):
            try:
                f = float(v)
            except OverflowError:
                return None
            return f if math.isfinite(f) else None
        if isinstance(v, str):
            try:
                f = float(v)
            except ValueError:
                return None
            return f if math.isfinite(f) else None
        return None


_new_object = object.__new__
_OBSERVATION_FIELDS = tuple(
    Observation.__dict__[name].__set__ for name in ("machine", "signal", "time", "value", "source_seq", "end")
)


def new_observation(machine: str, signal: str, time: datetime, value: Value, source_seq: int | None = None) -> Observation:
    """``Observation(machine, signal, time, value, source_seq)``, built for the adapters' hot path.

    A frozen dataclass sets each field through ``object.__setattr__`` by name; setting the slots
    directly gives the same object in a third less time, which counts at thousands a second."""
    obs: Observation = _new_object(Observation)
    set_machine, set_signal, set_time, set_value, set_seq, set_end = _OBSERVATION_FIELDS
    set_machine(obs, machine)
    set_signal(obs, signal)
    set_time(obs, time)
    set_value(obs, value)
    set_seq(obs, source_seq)
    set_end(obs, None)
    return obs


class PartStatus(StrEnum):
    """How a part's record ended; only ``complete`` parts are fed to drift detection."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    ABORTED = "aborted"
    NOT_OBSERVED = "not_observed"
    """The controller's part counter says this part was made, but none of its data reached the
    monitor (connection lost, daemon stopped): a placeholder that keeps every counter value
    accounted for, with the reason and the window (``start``/``end``, source clock) in its notes."""


@dataclass(frozen=True, slots=True)
class ToolUse:
    """A tool that cut during the part, with its life counter at the first and last sight."""

    tool: str
    life_start: float | None = None
    life_end: float | None = None
    cutting_time: float = 0.0


@dataclass(frozen=True, slots=True)
class SpindleStats:
    """Spindle aggregates over the part's cycle; load in percent, times in seconds."""

    mean_load: float | None = None
    peak_load: float | None = None
    cutting_time: float = 0.0
    energy: float | None = None
    """Integral of load over cutting time (percent-seconds), a proxy for work done on the part."""


@dataclass(frozen=True, slots=True)
class PartRecord:
    """Everything that happened to one part on one machine.

    ``key`` is stable across restarts and replays (machine, program and the controller time at
    which the part ended), so the store can refuse to record the same part twice.
    """

    key: str
    machine: str
    program: str
    part_number: int
    start: datetime
    end: datetime
    status: PartStatus
    measurements: dict[str, float] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    tools: tuple[ToolUse, ...] = ()
    spindle: SpindleStats = field(default_factory=SpindleStats)
    counter: int | None = None
    notes: tuple[str, ...] = ()
    part_id: str | None = None
    """The identifier the probing macro wrote with this part's results (``part.id``), if mapped."""
    flags: tuple[str, ...] = ()
    """Machine-readable marks beside the notes, e.g. ``attributed_by_rule`` when a result's
    timestamp alone would have put it on the neighbouring part (see docs/opcua.md)."""

    @property
    def tool_life(self) -> float | None:
        """Life counter of the last tool that cut (the one most likely to drive drift)."""
        for use in reversed(self.tools):
            if use.life_end is not None:
                return use.life_end
        return None


@dataclass(frozen=True, slots=True)
class AxisRef:
    """One axis of a position feature: the probe signal that measures it and its nominal."""

    signal: str
    nominal: float


@dataclass(frozen=True, slots=True)
class SizeFeature:
    """A measured value judged against its limits: a size (diameter, length, depth: both limits),
    an angle (degrees), or a one-sided characteristic (flatness, roughness, runout: an upper limit
    only; a minimum wall: a lower limit only).

    ``signal`` is the probe signal that measures it, None when only inspection (a CMM, a gauge)
    does; ``lower``/``upper`` None is no limit on that side; ``nominal`` is the target (for a
    one-sided characteristic, the value the process is expected to hold)."""

    name: str
    signal: str | None
    nominal: float
    lower: float | None
    upper: float | None
    unit: str = "mm"
    kind: str = "size"
    """``size``, ``angle`` or ``one_sided`` (as in the program file)."""

    @property
    def signals(self) -> tuple[str, ...]:
        return () if self.signal is None else (self.signal,)

    @property
    def two_sided(self) -> bool:
        return self.lower is not None and self.upper is not None

    def in_tolerance(self, value: float) -> bool:
        """Within the limits (the limits themselves included)."""
        return (self.lower is None or value >= self.lower) and (self.upper is None or value <= self.upper)

    def judge(self, measurements: Mapping[str, float]) -> bool | None:
        """Whether the part's probe value lies within the limits; None when the probe does not measure
        it or it was not measured (or NaN)."""
        value = measurements.get(self.signal) if self.signal is not None else None
        if value is None or not math.isfinite(value):
            return None
        return self.in_tolerance(value)


@dataclass(frozen=True, slots=True)
class PositionFeature:
    """A hole or boss position judged as true position: 2*sqrt(dx^2+dy^2[+dz^2]) <= tolerance."""

    name: str
    x: AxisRef
    y: AxisRef
    tolerance: float
    z: AxisRef | None = None

    @property
    def axes(self) -> tuple[tuple[str, AxisRef], ...]:
        axes = [("x", self.x), ("y", self.y)]
        if self.z is not None:
            axes.append(("z", self.z))
        return tuple(axes)

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(a.signal for _, a in self.axes)

    def true_position(self, measurements: Mapping[str, float]) -> float | None:
        """The diameter of the zone the measured point needs, or None when an axis is missing."""
        total = 0.0
        for axis in (self.x, self.y) if self.z is None else (self.x, self.y, self.z):  # self.axes, not built
            value = measurements.get(axis.signal)
            if value is None:
                return None
            total += (value - axis.nominal) ** 2
        return 2.0 * math.sqrt(total)

    def judge(self, measurements: Mapping[str, float]) -> bool | None:
        """Whether the true position lies within the tolerance; None when an axis was not measured
        (every part of a list of 100 is judged for ``/api/parts``: no copy of its measurements)."""
        tp = self.true_position(measurements)
        if tp is None or not math.isfinite(tp):
            return None
        return tp <= self.tolerance


@dataclass(frozen=True, slots=True)
class AttributeFeature:
    """A go/no-go check (a thread gauge, a visual check): each part passes or fails; counted and
    charted as the proportion that fails. ``signal``, when the machine checks it, is a probe signal
    whose value is 1 (or any non-zero number) for a pass and 0 for a fail."""

    name: str
    signal: str | None = None
    unit: str = ""
    kind: str = "attribute"

    @property
    def signals(self) -> tuple[str, ...]:
        return () if self.signal is None else (self.signal,)

    def passed(self, measurements: dict[str, float]) -> bool | None:
        """Whether the part passed by its probe signal; None when the signal is missing or not finite."""
        if self.signal is None:
            return None
        value = measurements.get(self.signal)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return value != 0

    def judge(self, measurements: Mapping[str, float]) -> bool | None:
        """Whether the part passed (as :meth:`passed`): one question every feature kind answers."""
        return self.passed(dict(measurements))


Feature = SizeFeature | PositionFeature | AttributeFeature


def out_of_tolerance(features: Iterable[Feature], measurements: Mapping[str, float]) -> dict[str, list[str]]:
    """The features a part's measurements put out of tolerance (the part is bad), each with the
    signals that measure it (so a table can mark those values red)."""
    return {f.name: list(f.signals) for f in features if f.judge(measurements) is False}


class AlertKind(StrEnum):
    """What raised an alert."""

    FORECAST = "forecast"
    EWMA = "ewma"
    CUSUM = "cusum"
    RUN_RULE = "run_rule"
    REPROBE = "reprobe"
    """A single reading far from what the process predicts (chipped stylus, swarf): probe the part again."""
    OUT_OF_TOLERANCE = "out_of_tolerance"
    SIGNAL_LOST = "signal_lost"
    INCOMPLETE_PART = "incomplete_part"
    STORE_UNWRITABLE = "store_unwritable"
    """The embedded store refused writes (disk full, read-only, I/O error); parts wait in memory."""
    DATA_GAP = "data_gap"


class Severity(StrEnum):
    """Escalation ladder of an alert: watch, then warning, then critical."""

    WATCH = "watch"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"watch": 0, "warning": 1, "critical": 2}[self.value]


class AlertState(StrEnum):
    """Life of an alert: open until acknowledged by a person or closed when back in control."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class ConditionState(StrEnum):
    """Where a feature's condition stands, re-evaluated on every part (issue 15)."""

    OK = "ok"
    WATCH = "watch"
    WARNING = "warning"
    CRITICAL = "critical"
    OUT_OF_TOLERANCE = "out_of_tolerance"
    RECOVERING = "recovering"
    """No detector signals any more; back to ok after ``detection.close_after`` such parts."""

    @property
    def severity(self) -> Severity:
        return {
            "watch": Severity.WATCH,
            "warning": Severity.WARNING,
            "critical": Severity.CRITICAL,
            "out_of_tolerance": Severity.CRITICAL,
        }.get(self.value, Severity.WATCH)

    @property
    def rank(self) -> int:
        return {"ok": 0, "recovering": 1, "watch": 2, "warning": 3, "critical": 4, "out_of_tolerance": 5}[self.value]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as it stands after its latest change; sinks receive every change.

    A feature's alert is its *condition* (issue 15): one per machine, program and feature while it
    is not ok, re-evaluated on every part. ``condition`` is where it stands (watch ... out of
    tolerance, recovering; ok once closed), ``kind`` the strongest evidence behind it now, and
    ``evidence`` holds every detector signal and the current ``advice`` (parts left, the offset per
    register, the one action to take). ``state`` is its life for people: open, acknowledged (kept
    through escalation), closed. Machine alerts (signal lost, store unwritable) have no
    ``condition``. ``id`` is stable for the life of the episode, so a sink can update what it showed.
    ``last_part`` is the part it was last evaluated on (``part_number``: the part that opened it).
    """

    id: str
    machine: str
    program: str
    feature: str
    kind: AlertKind
    severity: Severity
    state: AlertState
    part_number: int
    message: str
    time: datetime
    evidence: dict[str, Any] = field(default_factory=dict)
    part_key: str | None = None
    condition: ConditionState | None = None
    last_part: int | None = None


class RegisterKind(StrEnum):
    """The controller register that corrects a feature (see monitor.registers for the defaults)."""

    WORK_OFFSET = "work_offset"
    """One axis of a work offset (G54 X/Y/Z...): moves every feature cut in that setup."""
    TOOL_LENGTH_WEAR = "tool_length_wear"
    """A mill tool's length (H) wear: depths and face lengths cut by that tool."""
    TOOL_RADIUS_WEAR = "tool_radius_wear"
    """A mill tool's cutter radius (D) wear, radius convention: bores and bosses it contours."""
    TOOL_DIAMETER_WEAR = "tool_diameter_wear"
    """A mill tool's cutter (D) wear, diameter convention."""
    LATHE_X_WEAR = "lathe_x_wear"
    """A lathe tool's X wear (diameter programming): outside and inside diameters it turns or bores."""
    LATHE_Z_WEAR = "lathe_z_wear"
    """A lathe tool's Z wear: face positions and lengths it turns."""


_WEAR_NAMES = {
    RegisterKind.TOOL_LENGTH_WEAR: "H-wear",
    RegisterKind.TOOL_RADIUS_WEAR: "D-wear (radius)",
    RegisterKind.TOOL_DIAMETER_WEAR: "D-wear",
    RegisterKind.LATHE_X_WEAR: "X-wear",
    RegisterKind.LATHE_Z_WEAR: "Z-wear",
}
"""How :attr:`Register.label` names a tool register's kind (built once, not with every label:
the advice names its registers with every part of an open condition)."""


@dataclass(frozen=True, slots=True)
class Register:
    """One controller register that corrects one axis of a feature, and how it acts on it.

    ``factor`` is the register change per mm of the feature's deviation from nominal (change =
    factor * deviation re-centres it): -1 for a work offset or a lathe X wear, +1 for the D wear of a
    bore (a larger D makes the cutter stay further from the wall)... ``axis`` is the work offset's
    axis (x, y, z) or, for a tool register, the feature's axis it corrects ("value" for a size).
    """

    kind: RegisterKind
    axis: str
    factor: float
    tool: str | None = None
    work_offset: str | None = None

    @property
    def label(self) -> str:
        """How a machinist names it on the control: "G54 X", "T12 D-wear", "T3 X-wear"."""
        if self.kind is RegisterKind.WORK_OFFSET:
            return f"{self.work_offset or 'G54'} {self.axis.upper()}"
        short = _WEAR_NAMES[self.kind]
        if not self.tool:
            return f"{short} of the tool that cuts it"
        tool = f"T{self.tool}" if self.tool.isdigit() else self.tool  # a controller's bare tool number
        return f"{tool} {short}"

    def change_for(self, deviation: float) -> float:
        """The register change (mm) that brings a feature ``deviation`` mm off nominal back to it."""
        return self.factor * deviation

    def shift_for(self, change: float) -> float:
        """How far a register ``change`` (mm) moves the feature's deviation: the step to expect."""
        return -change / self.factor if self.factor else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "axis": self.axis,
            "factor": self.factor,
            "tool": self.tool,
            "work_offset": self.work_offset,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Register:
        return cls(RegisterKind(d["kind"]), str(d["axis"]), float(d["factor"]), d.get("tool"), d.get("work_offset"))


class Role(StrEnum):
    """What a named user may do: operators act on the machine and say so; engineers also close
    conditions by hand and (issue 18) may have offsets written to the controller."""

    OPERATOR = "operator"
    ENGINEER = "engineer"


class ActionKind(StrEnum):
    """What a person (or, later, the controller write path) did about a condition or a part."""

    ACKNOWLEDGE = "acknowledge"
    COMMENT = "comment"
    OFFSET_APPLIED = "offset_applied"
    OFFSET_REFUSED = "offset_refused"
    """The monitor refused (or the controller refused) to write an offset; ``reason`` says why (issue 18)."""
    TOOL_CHANGED = "tool_changed"
    PART_QUARANTINED = "part_quarantined"
    """A part set aside until someone decides what becomes of it (the operator's first move)."""
    PART_SCRAPPED = "part_scrapped"
    PART_REWORKED = "part_reworked"
    PART_ACCEPTED = "part_accepted"
    """Accepted as it is on concession (a deviation the customer or quality signed): ``reason`` says which."""
    CLOSE = "close"


PART_DISPOSITIONS = frozenset(
    {ActionKind.PART_QUARANTINED, ActionKind.PART_SCRAPPED, ActionKind.PART_REWORKED, ActionKind.PART_ACCEPTED}
)
"""Actions that say what became of one part (the report's disposition of an out-of-tolerance part)."""
PROCESS_ACTIONS = frozenset({ActionKind.OFFSET_APPLIED, ActionKind.TOOL_CHANGED})
"""Actions that changed the process (the report's "what was done to the process")."""


@dataclass(frozen=True, slots=True)
class Action:
    """One thing done, by whom, on which feature: the record the batch report's "what was done" reads.

    ``user``/``role`` say who (the user whose token was presented; "local" for the command line
    without a token). ``source`` says through what: dashboard, cli, store (written while no daemon
    ran) or controller (issue 18: an offset written over OPC UA). For ``offset_applied``:
    ``register``, ``change`` (mm, signed) and where known ``old_value``/``new_value`` (the register's
    value before and after). ``part_number`` is the part the action refers to (the last part made
    before it, or the part a disposition is about); ``part_key`` the stored part a disposition
    (quarantined, scrapped, reworked, accepted) names, so a part number that recurs in a later batch
    is never confused with it. ``condition_id`` is the condition it answered, if any.
    """

    id: str
    time: datetime
    kind: ActionKind
    machine: str
    program: str
    feature: str
    user: str
    role: Role
    source: str = "cli"
    condition_id: str | None = None
    part_number: int | None = None
    register: Register | None = None
    change: float | None = None
    old_value: float | None = None
    new_value: float | None = None
    tool: str | None = None
    reason: str = ""
    comment: str = ""
    part_key: str | None = None
