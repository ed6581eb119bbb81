"""Applying a condition's offset advice on the controller: choose the register, guard, write, record.

A person (an engineer, :data:`monitor.users.WRITE_OFFSET`) asks through ``monitor offset apply``
or the dashboard; a feature with ``offset.auto_apply`` asks by itself (:meth:`OffsetService.run_auto`).
Either way the request becomes one :class:`ApplyOffset` for :meth:`OffsetService.apply`:

1. the condition is read as it stands now; its advice names the register and the change (or the
   person gives ``value``); a machine without ``offsets:`` for that register (an MTConnect machine,
   a register not listed) is refused with the register and value to type at the control;
2. the machine's :class:`~adapters.opcua.offsets.OffsetWriter` checks security and limits (this
   batch's earlier writes count against ``max_batch_change``), waits until the machine is between
   parts, asks :meth:`OffsetService._still_current` whether the advice still holds, writes, reads back;
3. the outcome is recorded through the core (the one writer): ``offset_applied`` with register,
   old and new value, part number and reason, which tells the detectors to expect the step; a
   refusal is recorded as ``offset_refused`` with its reason.

"Batch" for the batch limit: the writes to that register since the program's part numbers last
started again (a new batch), read from the stored actions.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.codec import action_to_dict
from monitor.commands import ApplyOffset, RecordAction
from monitor.config import OpcUaMachine, PositionFeatureConfig, Site, SizeFeatureConfig
from monitor.core import MonitorApi
from monitor.errors import ActionError, MonitorError, OffsetRefused
from monitor.model import Action, ActionKind, Alert, AlertState, ConditionState, Register, RegisterKind, Role
from monitor.registers import format_mm
from monitor.users import WRITE_OFFSET, User, authorize

if TYPE_CHECKING:
    from adapters.opcua.offsets import OffsetWrite, OffsetWriter

__all__ = ["AUTO_USER", "OffsetOutcome", "OffsetService", "register_key"]

log = logging.getLogger(__name__)

AUTO_USER = User("auto-apply", Role.ENGINEER)
"""Who an automatic write is recorded as (a feature's ``offset.auto_apply``)."""

_AUTO_STATES = frozenset({ConditionState.WARNING, ConditionState.CRITICAL})
"""Conditions whose advice an automatic write follows (a forecast breach or a chart signal; an
out-of-tolerance part wants a person)."""
_AUTO_SPACING = 3
"""Parts an automatic write leaves the detectors to see its step before the next one on a condition."""


def register_key(register: Register) -> str:
    """The site file's name of a register (``G54.X``, ``T12.tool_diameter_wear``)."""
    if register.kind is RegisterKind.WORK_OFFSET:
        return f"{register.work_offset or 'G54'}.{register.axis.upper()}"
    tool = register.tool or "?"
    return f"{tool if not tool.isdigit() else 'T' + tool}.{register.kind}"


@dataclass(frozen=True, slots=True)
class OffsetOutcome:
    """What one register's request came to: the action recorded, and the write or the refusal."""

    action: Action
    write: OffsetWrite | None = None
    refused: OffsetRefused | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": action_to_dict(self.action), "applied": self.write is not None}
        if self.write is not None:
            w = self.write
            out["write"] = {
                "register": w.register,
                "change": w.change,
                "old_value": w.old_value,
                "new_value": w.new_value,
                "read_back": w.read_back,
                "waited_s": round(w.waited_s, 3),
                "security": w.security,
                "opcua_user": w.user,
            }
        if self.refused is not None:
            out["refused"] = {"reason": self.refused.reason, "message": str(self.refused), "restored": self.refused.restored}
        return out


@dataclass(frozen=True, slots=True)
class _Target:
    axis: str
    register: Register
    key: str
    change: float


@dataclass(slots=True)
class OffsetService:
    """Turns :class:`ApplyOffset` requests into verified controller writes and recorded actions."""

    api: MonitorApi
    _busy: set[tuple[str, str]] = field(default_factory=set)
    _tasks: set[asyncio.Future[OffsetOutcome]] = field(default_factory=set)
    _auto_queue: asyncio.Queue[Alert] = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    auto_dropped: int = 0
    """Condition changes the auto-apply queue dropped while full (the oldest first)."""
    _auto_last: dict[str, int] = field(default_factory=dict)

    def writable(self, machine: str) -> OpcUaMachine | None:
        """The machine's OPC UA entry that has ``offsets:`` (None: the monitor only advises)."""
        site: Site = self.api.site
        return next((m for m in site.config.machines if m.id == machine and isinstance(m, OpcUaMachine) and m.offsets), None)

    def _writer(self, entry: OpcUaMachine) -> OffsetWriter:
        from adapters.opcua.offsets import OffsetWriter  # asyncua only for a site that writes offsets

        assert entry.offsets is not None
        return OffsetWriter(entry.id, entry.source, entry.offsets, entry.signals)

    async def apply(self, request: ApplyOffset, *, on_wait: Callable[[str], None] | None = None) -> list[OffsetOutcome]:
        """Apply the request, one register after the other; every outcome is recorded.

        Raises ActionError (no such condition, an axis it does not have) or NotAllowed (a role that
        may not write offsets) before anything is recorded or written."""
        authorize(request.user, WRITE_OFFSET)
        alert = await self._condition(request.alert_id)
        targets = self._targets(alert, request)
        if request.expected is not None and len(targets) != 1:
            raise ActionError("expected names one register's change: give the axis too")
        outcomes = []
        for target in targets:
            outcomes.append(await self._apply_one(alert, target, request, on_wait))
        return outcomes

    # ------------------------------------------------------------------------------ the plan
    async def _condition(self, alert_id: str) -> Alert:
        alert = await self.api.read(lambda store: store.alert(alert_id))
        if alert is None or alert.condition is None:
            raise ActionError(f"no condition {alert_id!r}; list them with `monitor alerts --open`")
        return alert

    def _registers(self, alert: Alert) -> dict[str, Register]:
        site: Site = self.api.site
        config = site.programs.get(alert.program)
        if config is None or alert.feature not in config.features:
            raise ActionError(f"condition {alert.id}: program {alert.program} has no feature {alert.feature} now")
        return config.registers(alert.feature, site.machine_kind(alert.machine))

    def _targets(self, alert: Alert, request: ApplyOffset) -> list[_Target]:
        registers = self._registers(alert)
        advised = _advice(alert, registers)
        if request.axis is not None and request.axis not in registers:
            raise ActionError(f"{alert.feature} has no axis {request.axis!r}; axes: {', '.join(registers)}")
        if request.value is not None:
            axes = [request.axis] if request.axis is not None else list(registers)
            if len(axes) != 1:
                raise ActionError(f"{alert.feature} is corrected per axis: give the axis with the value ({', '.join(axes)})")
            axis = axes[0]
            reg = advised[axis][0] if axis in advised else registers[axis]
            return [_Target(axis, reg, register_key(reg), request.value)]
        chosen = {a: v for a, v in advised.items() if request.axis is None or a == request.axis}
        if not chosen:
            advice = alert.evidence.get("advice") if isinstance(alert.evidence, dict) else None
            said = advice.get("action") if isinstance(advice, dict) else None
            raise ActionError(
                f"condition {alert.id} advises no offset now ({said or 'no advice'}); give a value to apply one anyway"
            )
        return [_Target(a, reg, register_key(reg), change) for a, (reg, change) in chosen.items()]

    # ------------------------------------------------------------------------------ one register
    async def _apply_one(
        self, alert: Alert, target: _Target, request: ApplyOffset, on_wait: Callable[[str], None] | None
    ) -> OffsetOutcome:
        """Write and record one register. Cancelling the request (a client gone, the daemon
        stopping) abandons a write that still waits for the machine; one that has begun writing
        finishes, verified or undone, and is recorded."""
        committing = False

        def commit() -> None:
            nonlocal committing
            committing = True

        task = asyncio.ensure_future(self._write_and_record(alert, target, request, on_wait, commit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not committing:
                task.cancel()
            raise

    async def _write_and_record(
        self,
        alert: Alert,
        target: _Target,
        request: ApplyOffset,
        on_wait: Callable[[str], None] | None,
        on_commit: Callable[[], None],
    ) -> OffsetOutcome:
        busy = (alert.machine, target.key.lower())
        try:
            if alert.state is AlertState.CLOSED or alert.condition is ConditionState.OK:
                raise OffsetRefused("stale", f"condition {alert.id} is closed; nothing to apply")
            if request.expected is not None and request.value is None:
                _same_advice(target.key, request.expected, target.change, f"shown before, now part {alert.last_part}")
            entry = self.writable(alert.machine)
            if entry is None or entry.offsets is None or entry.offsets.find(target.key) is None:
                raise OffsetRefused("not_writable", _type_it(self.api.site, alert, target))
            if busy in self._busy:
                raise OffsetRefused("busy", f"{alert.machine}: a write of {target.key} is already under way; one at a time")
            self._busy.add(busy)
            try:
                await self._not_pending(alert, target.key)
                applied = await self._applied_in_batch(alert, target.key)
                writer = self._writer(entry)

                async def still_current() -> None:
                    await self._still_current(alert, target, request)
                    on_commit()

                write = await writer.apply(
                    target.key,
                    target.change,
                    applied_in_batch=applied,
                    automatic=request.automatic,
                    still_current=still_current,
                    on_wait=on_wait,
                )
            finally:
                self._busy.discard(busy)
        except OffsetRefused as refused:
            log.warning("offset %s on %s refused (%s): %s", target.key, alert.machine, refused.reason, refused)
            action = await self._record(alert, target, request, None, refused)
            return OffsetOutcome(action, refused=refused)
        action = await self._record(alert, target, request, write, None)
        return OffsetOutcome(action, write=write)

    async def _still_current(self, planned: Alert, target: _Target, request: ApplyOffset) -> None:
        """The advice the change came from still holds: the condition is open and (unless the person
        gave the value) advises the same register by about as much, in the same direction."""
        now = await self.api.read(lambda store: store.alert(planned.id))
        if now is None or now.state is AlertState.CLOSED or now.condition in (None, ConditionState.OK):
            raise OffsetRefused("stale", f"condition {planned.id} is closed; nothing written")
        await self._not_pending(now, target.key)
        if request.value is not None:
            return
        current = _advice(now, self._registers(now)).get(target.axis)
        if current is None:
            raise OffsetRefused(
                "stale", f"condition {planned.id} no longer advises {target.key} (part {now.last_part}); nothing written"
            )
        _same_advice(target.key, target.change, current[1], f"part {planned.last_part} -> {now.last_part}")

    async def _not_pending(self, alert: Alert, key: str) -> None:
        """Refuse while the register's latest change has not reached a measured part yet: the advice
        (of this condition or of another feature the register corrects: both bores of one boring
        tool) still shows the deviation that change corrects, and applying it again would correct twice."""

        def read(store: Any) -> list[Action]:
            found: list[Action] = store.actions(machine=alert.machine, program=alert.program, last=50)
            return found

        latest = next(
            (
                a
                for a in reversed(await self.api.read(read))
                if a.kind is ActionKind.OFFSET_APPLIED
                and a.register is not None
                and register_key(a.register).lower() == key.lower()
            ),
            None,
        )
        part = alert.last_part or alert.part_number
        if latest is not None and latest.part_number is not None and latest.part_number >= part:
            raise OffsetRefused(
                "pending",
                f"{key} was changed by {format_mm(latest.change or 0.0)} mm after part {latest.part_number} "
                f"({latest.user}); the advice has not seen a part made since: wait for the next part",
            )

    async def _applied_in_batch(self, alert: Alert, key: str) -> float:
        """Sum of the sizes of the writes to ``key`` on this machine and program in the current batch."""

        def read(store: Any) -> list[Action]:
            found: list[Action] = store.actions(machine=alert.machine, program=alert.program)
            return found

        actions = await self.api.read(read)
        total = 0.0
        bound = alert.last_part or alert.part_number
        for action in reversed(actions):
            if action.part_number is not None:
                if action.part_number > bound:
                    break  # a part number higher than a later one: an earlier batch
                bound = action.part_number
            if (
                action.kind is ActionKind.OFFSET_APPLIED
                and action.source == "controller"
                and action.register is not None
                and register_key(action.register).lower() == key.lower()
                and action.change is not None
            ):
                total += abs(action.change)
        return total

    async def _record(
        self, alert: Alert, target: _Target, request: ApplyOffset, write: OffsetWrite | None, refused: OffsetRefused | None
    ) -> Action:
        how = "automatically" if request.automatic else f"by {request.user.name} through the {request.source}"
        if write is not None:
            reason = (
                f"written {how} over {write.security}{' as OPC UA user ' + write.user if write.user else ''}; "
                f"read back {write.read_back:.4f}"
                + (f"; waited {write.waited_s:.0f} s for the part to end" if write.waited_s >= 1 else "")
                + (f"; advice was {format_mm(target.change)}" if request.value is None else "; value given by hand")
            )
            command = RecordAction(
                kind=ActionKind.OFFSET_APPLIED,
                user=request.user,
                source="controller",
                alert_id=alert.id,
                axis=target.axis,
                register=target.register,
                change=write.change,
                old_value=write.old_value,
                new_value=write.new_value,
                reason=reason,
                comment=request.comment,
                effective_after=write.effective_after,
            )
        else:
            assert refused is not None
            command = RecordAction(
                kind=ActionKind.OFFSET_REFUSED,
                user=request.user,
                source="controller",
                alert_id=alert.id,
                axis=target.axis,
                register=target.register,
                change=target.change,
                old_value=refused.register_value,
                reason=f"{refused.reason}: {refused}",
                comment=request.comment,
            )
        outcome = await self.api.execute(command)
        assert outcome.action is not None
        return outcome.action

    # ------------------------------------------------------------------------------ auto-apply
    def offer(self, item: object) -> None:
        """The core's output hook (every stored part and alert change; never blocks): conditions that
        may ask for an automatic write wait in a bounded queue for :meth:`run_auto`."""
        if not isinstance(item, Alert) or item.condition not in _AUTO_STATES or item.state is AlertState.CLOSED:
            return
        if self._auto_queue.full():
            self._auto_queue.get_nowait()
            self.auto_dropped += 1
        self._auto_queue.put_nowait(item)

    async def run_auto(self) -> None:
        """Apply the advice of conditions whose feature has ``offset.auto_apply``, one at a time."""
        while True:
            alert = await self._auto_queue.get()
            request = self._auto_request(alert)
            if request is None:
                continue
            try:
                outcomes = await self.apply(request)
            except MonitorError as exc:  # a condition that vanished, a program reloaded meanwhile
                log.warning("automatic offset for %s not applied: %s", request.alert_id, exc)
                continue
            for o in outcomes:
                if o.action.part_number is not None:
                    self._auto_last[request.alert_id] = o.action.part_number

    def _auto_request(self, alert: Alert) -> ApplyOffset | None:
        """An automatic request for a condition, when its feature asks for it and it is time."""
        if alert.condition not in _AUTO_STATES or alert.state is AlertState.CLOSED:
            return None
        config = self.api.site.programs.get(alert.program)
        feature = config.features.get(alert.feature) if config is not None else None
        offset = feature.offset if isinstance(feature, (SizeFeatureConfig, PositionFeatureConfig)) else None
        if offset is None or not offset.auto_apply or self.writable(alert.machine) is None:
            return None
        last = alert.last_part or alert.part_number
        done = self._auto_last.get(alert.id)
        if done is not None and last < done + _AUTO_SPACING:
            return None
        return ApplyOffset(alert.id, AUTO_USER, "auto", automatic=True, comment="offset.auto_apply")


def _advice(alert: Alert, registers: Mapping[str, Register]) -> dict[str, tuple[Register, float]]:
    """The condition's advice now: register and change by the feature's axis ("value" for a size)."""
    out: dict[str, tuple[Register, float]] = {}
    advice = alert.evidence.get("advice") if isinstance(alert.evidence, dict) else None
    offsets = advice.get("offsets", []) if isinstance(advice, dict) else []
    for item in offsets:
        try:
            reg = Register.from_dict(item["register"])
            change = float(item["change_mm"])
        except (KeyError, TypeError, ValueError):
            continue
        axis = next((a for a, r in registers.items() if (r.kind, r.axis) == (reg.kind, reg.axis)), None)
        if axis is not None and math.isfinite(change):
            out[axis] = (reg, change)
    return out


def _same_advice(key: str, planned: float, current: float, when: str) -> None:
    """Refuse as stale when the advice turned round or moved by more than half of what was planned."""
    if math.copysign(1.0, current) != math.copysign(1.0, planned) or abs(current - planned) > max(abs(planned) / 2.0, 0.0001):
        raise OffsetRefused(
            "stale",
            f"the advice for {key} is {format_mm(current)} mm now, not the {format_mm(planned)} mm it was ({when}); "
            "nothing written: look at the condition again",
        )


def _type_it(site: Site, alert: Alert, target: _Target) -> str:
    entry = next((m for m in site.config.machines if m.id == alert.machine), None)
    why = (
        "is read over MTConnect (read-only)"
        if entry is not None and entry.source.type == "mtconnect"
        else f"has no writable register {target.key} (offsets: in the site file)"
    )
    return (
        f"{alert.machine} {why}: type {target.register.label} {format_mm(target.change)} mm at the control, then record it "
        f"with `monitor act offset --condition {alert.id} --change {target.change:+.4f}`"
    )
