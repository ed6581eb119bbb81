"""People's commands to the monitor's core: acknowledge, close, record an action.

They enter through :meth:`monitor.core.MonitorApi.execute` (the dashboard, the control API that the
command line uses, and, issue 18, the controller write path) and are applied on the core's thread
by the pipeline, the one writer of alert state. Each carries the :class:`~monitor.users.User` who
gave it and through what (``source``), and is stored as an :class:`~monitor.model.Action`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitor.errors import ActionError
from monitor.model import PART_DISPOSITIONS, Action, ActionKind, Alert, PartRecord, Register
from monitor.users import LOCAL_USER, User

if TYPE_CHECKING:
    from monitor.config import Site
    from monitor.store import StoreReader

__all__ = [
    "Acknowledge",
    "AlertCommand",
    "ApplyOffset",
    "CloseAlert",
    "Command",
    "OffsetApply",
    "Outcome",
    "PartLookup",
    "RecordAction",
    "action_command",
    "apply_offset_command",
    "command_to_dict",
    "make_action",
    "store_part_lookup",
]


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """A person has seen the alert; it stays acknowledged, even when it escalates, until it closes.
    Recorded as an ``acknowledge`` action with the user and the comment."""

    alert_id: str
    user: User = LOCAL_USER
    comment: str = ""
    source: str = "cli"


@dataclass(frozen=True, slots=True)
class CloseAlert:
    """A person closes the alert; if the condition persists a new alert opens on a later part."""

    alert_id: str
    user: User = LOCAL_USER
    comment: str = ""
    source: str = "cli"


AlertCommand = Acknowledge | CloseAlert
"""Every change a person can make to alert state."""


@dataclass(frozen=True, slots=True)
class RecordAction:
    """What a person did at the machine (or, issue 18, the controller write path): an offset applied,
    a tool changed, a comment, or what became of one part (quarantined, scrapped, reworked, accepted
    on concession). ``alert_id`` ties it to a condition (its machine, program and feature are then
    taken from it); otherwise machine, program and feature name it. A part's disposition names the
    part by ``part_number`` (the latest stored part of that number on the machine and program) or by
    its stored ``part_key`` (which also names machine and program).
    An offset applied without ``register`` is on the feature's register (``axis`` picks one of a
    position's). Offsets applied and tools changed tell the detectors to expect a step."""

    kind: ActionKind
    user: User = LOCAL_USER
    source: str = "cli"
    alert_id: str | None = None
    machine: str | None = None
    program: str | None = None
    feature: str | None = None
    axis: str | None = None
    register: Register | None = None
    change: float | None = None
    old_value: float | None = None
    new_value: float | None = None
    tool: str | None = None
    part_number: int | None = None
    reason: str = ""
    comment: str = ""
    effective_after: datetime | None = None
    """For an offset written between parts (issue 18): the controller time the machine came to rest
    before the write; the detectors expect its step from the first part that started after it."""
    part_key: str | None = None


Command = Acknowledge | CloseAlert | RecordAction
"""Every change a person can make: the one entry is :meth:`MonitorApi.execute`."""


@dataclass(frozen=True, slots=True)
class ApplyOffset:
    """Have the monitor write a condition's offset advice to the controller (issue 18, docs/offsets.md).

    Not a command to the core (writing waits for the machine and talks to it): the daemon's offset
    service (:mod:`monitor.offsets`) carries it out and records the outcome through the core as an
    ``offset_applied`` or ``offset_refused`` action. ``value`` replaces the advised change (mm, the
    advice's convention); ``axis`` picks one register of a position's advice; ``expected`` is the
    change the person saw (the dashboard sends it): a current advice that differs is stale.
    """

    alert_id: str
    user: User = LOCAL_USER
    source: str = "cli"
    value: float | None = None
    axis: str | None = None
    expected: float | None = None
    comment: str = ""
    automatic: bool = False


OffsetApply = Callable[[ApplyOffset], Awaitable[list[dict[str, Any]]]]
"""The daemon's offset service as the control API and the dashboard call it: each register's outcome."""


def apply_offset_command(alert_id: str, body: dict[str, Any], user: User, source: str) -> ApplyOffset:
    """An :class:`ApplyOffset` from JSON (``{"value", "axis", "expected", "comment"}``); ActionError when wrong."""
    unknown = sorted(set(body) - {"value", "axis", "expected", "comment"})
    if unknown:
        raise ActionError(f"unknown key(s) {', '.join(unknown)}; known: value, axis, expected, comment")
    numbers: dict[str, float | None] = {}
    for name in ("value", "expected"):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ActionError(f"{name} must be a number of mm, not {v!r}")
        numbers[name] = float(v) if v is not None else None
    axis, comment = body.get("axis"), body.get("comment", "")
    if axis is not None and axis not in ("x", "y", "z", "value"):
        raise ActionError(f"axis must be x, y, z or value, not {axis!r}")
    if not isinstance(comment, str):
        raise ActionError("comment must be text")
    return ApplyOffset(alert_id, user, source, numbers["value"], axis, numbers["expected"], comment)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did: the alert after it (None: it changed none) and the action recorded."""

    alert: Alert | None
    action: Action | None


def command_to_dict(command: Command) -> dict[str, Any]:
    """A command as JSON for the control API (without its user: the API names the user by token)."""
    if isinstance(command, RecordAction):
        body = {f: getattr(command, f) for f in _ACTION_FIELDS if getattr(command, f) is not None}
        body["kind"] = str(command.kind)
        if command.register is not None:
            body["register"] = command.register.as_dict()
        return body
    return {"alert_id": command.alert_id, "comment": command.comment}


_ACTION_FIELDS = (
    "alert_id",
    "machine",
    "program",
    "feature",
    "axis",
    "change",
    "old_value",
    "new_value",
    "tool",
    "part_number",
    "part_key",
    "reason",
    "comment",
)
_NUMBERS = ("change", "old_value", "new_value")


def action_command(body: dict[str, Any], user: User, source: str) -> RecordAction:
    """A :class:`RecordAction` from JSON (the dashboard's and the control API's body); ActionError
    when a key is unknown or a value has the wrong type."""
    unknown = sorted(set(body) - {*_ACTION_FIELDS, "kind", "register"})
    if unknown:
        raise ActionError(f"unknown key(s) {', '.join(unknown)}; known: kind, register, {', '.join(_ACTION_FIELDS)}")
    try:
        kind = ActionKind(str(body.get("kind")))
    except ValueError:
        raise ActionError(f"kind must be one of {', '.join(str(k) for k in ActionKind)}") from None
    values: dict[str, Any] = {}
    for name in _ACTION_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if name in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ActionError(f"{name} must be a number of mm, not {value!r}")
            value = float(value)
        elif name == "part_number":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ActionError(f"part_number must be a whole number from 1, not {value!r}")
        elif not isinstance(value, str):
            raise ActionError(f"{name} must be text, not {value!r}")
        values[name] = value
    register = None
    if body.get("register") is not None:
        try:
            register = Register.from_dict(body["register"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ActionError(f"register must be {{kind, axis, factor[, tool, work_offset]}} ({exc})") from None
    return RecordAction(kind=kind, user=user, source=source, register=register, **values)


PartLookup = Callable[[str | None, str | None, str | None, int | None], PartRecord | None]
"""``find(key, machine, program, part_number)``: the stored part with that key, else the latest one of
that number on that machine and program (None when there is none)."""


def store_part_lookup(store: StoreReader) -> PartLookup:
    """A :data:`PartLookup` over a store (:class:`~monitor.store.StoreReader`)."""

    def find(key: str | None, machine: str | None, program: str | None, number: int | None) -> PartRecord | None:
        if key is not None:
            return store.part(key)
        if number is None or not machine:
            return None
        found = store.parts(machine=machine, program=program or None, first_part=number, last_part=number)
        return found[-1] if found else None

    return find


def make_action(
    site: Site,
    command: RecordAction,
    find_alert: Callable[[str], Alert | None],
    last_part: Callable[[str, str], int | None],
    find_part: PartLookup | None = None,
) -> Action:
    """The action ``command`` records, checked against ``site``: ActionError when it names a machine,
    program, feature, condition, axis or part that does not exist, or lacks what its kind needs.

    ``find_alert(id)`` finds the condition it answers; ``last_part(machine, program)`` is the part
    the action refers to when the command does not name one; ``find_part`` finds the stored part a
    disposition names (without it, the part is named by number only)."""
    machine, program, feature, condition_id = command.machine, command.program, command.feature, None
    if command.alert_id is not None:
        alert = find_alert(command.alert_id)
        if alert is None:
            raise ActionError(f"no condition {command.alert_id!r}; list them with `monitor alerts`")
        machine, program, feature, condition_id = alert.machine, alert.program, alert.feature, alert.id
    part: PartRecord | None = None
    if command.kind in PART_DISPOSITIONS:
        if command.part_number is None and command.part_key is None:
            raise ActionError(f"a part {_DISPOSITION_WORDS[command.kind]} needs its part number")
        if find_part is not None:
            part = find_part(command.part_key, machine, program, command.part_number)
            if part is None:
                what = (
                    f"no part with key {command.part_key!r}"
                    if command.part_key is not None
                    else f"no part {command.part_number} of program {program or '?'} on {machine or '?'}"
                )
                raise ActionError(f"{what} in the store; list them with `monitor parts`")
            if (
                (machine and part.machine != machine)
                or (program and part.program != program)
                or (command.part_number is not None and part.part_number != command.part_number)
            ):
                raise ActionError(
                    f"part {part.key} is part {part.part_number} of {part.program} on {part.machine}, not the one named"
                )
            machine, program = part.machine, part.program
    if not machine or machine not in site.machine_ids():
        raise ActionError(f"no machine {machine!r} in this site; machines: {', '.join(site.machine_ids())}")
    program, feature = program or "", feature or ""
    config = site.programs.get(program) if program else None
    if program and config is None:
        raise ActionError(f"no program {program!r} in this site; programs: {', '.join(site.programs)}")
    if feature and (config is None or feature not in config.features):
        known = ", ".join(config.features) if config is not None else "name the program too"
        raise ActionError(f"program {program or '?'} has no feature {feature!r}; features: {known}")
    register, change = command.register, command.change
    if change is None and command.old_value is not None and command.new_value is not None:
        change = command.new_value - command.old_value
    if command.kind is ActionKind.OFFSET_APPLIED:
        if change is None:
            raise ActionError("an offset applied needs the change (mm), or the register's old and new values")
        if register is None:
            if config is None or not feature:
                raise ActionError("an offset applied needs the feature it corrects, or the register itself")
            registers = config.registers(feature, site.machine_kind(machine), command.tool)
            if command.axis is None and len(registers) == 1:
                register = next(iter(registers.values()))
            elif command.axis in registers:
                register = registers[command.axis]
            else:
                raise ActionError(f"{feature} is corrected per axis: name the axis ({', '.join(registers)})")
    part_number = command.part_number if part is None else part.part_number
    if part_number is None and program:
        part_number = last_part(machine, program)
    return Action(
        id=uuid.uuid4().hex,
        time=datetime.now(UTC),
        kind=command.kind,
        machine=machine,
        program=program,
        feature=feature,
        user=command.user.name,
        role=command.user.role,
        source=command.source,
        condition_id=condition_id,
        part_number=part_number,
        register=register,
        change=change,
        old_value=command.old_value,
        new_value=command.new_value,
        tool=command.tool or (register.tool if register is not None else None),
        reason=command.reason,
        comment=command.comment,
        part_key=part.key if part is not None else command.part_key,
    )


_DISPOSITION_WORDS = {
    ActionKind.PART_QUARANTINED: "quarantined",
    ActionKind.PART_SCRAPPED: "scrapped",
    ActionKind.PART_REWORKED: "reworked",
    ActionKind.PART_ACCEPTED: "accepted on concession",
}
