"""Write an offset register on an OPC UA controller: read, add, write, read back, verify.

A write changes the parts a machine makes, so it fails closed: it is refused (and nothing is
written) when the change passes a register's limits, when the connection is not SignAndEncrypt
(unless the site allows it for a simulator; never for an automatic write), when the user may not
write the register, when the machine does not come to rest between parts in time, when the
register moved since it was read (someone typed at the control), or when the caller's advice went
stale while waiting. A value read back that differs from the one written is undone (the old value
is written back) and reported; only when even that fails does the error say the register needs a
person (``OffsetRefused.restored`` is False).

The sequence on one session of its own (the reading adapter's subscriptions are never touched)::

    read register (old) -> wait until between parts -> read state and register together
    (a part started: wait again; the register moved: refuse) -> still_current() -> write
    old + change -> read back -> verify within half the register's resolution

Between the last read and the write there are a few milliseconds in which a part could start;
a controller that offers an interlock ("safe to write") names it in ``between_parts.node``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua

from adapters.opcua.addressing import parse_address, resolve
from adapters.opcua.config import OpcUaOffsets, OpcUaRegister, OpcUaSignal, OpcUaSource
from adapters.opcua.session import close_quietly, open_client
from monitor.errors import ConnectError, OffsetRefused

__all__ = ["OffsetWrite", "OffsetWriter", "is_idle"]

log = logging.getLogger(__name__)

_NOTIFICATIONS = 64
"""Bound of the queue of between-parts state changes one waiting write holds."""


@dataclass(frozen=True, slots=True)
class OffsetWrite:
    """What one write did: the register's value before, written and read back, and how it was done.

    ``change`` is the change applied in the monitor's convention (rounded to the register's
    resolution); ``new_value - old_value`` is ``-change`` for an ``inverted`` register.
    """

    register: str
    change: float
    old_value: float
    new_value: float
    read_back: float
    waited_s: float
    security: str
    user: str | None
    effective_after: datetime | None = None
    """Controller time (the between-parts state's SourceTimestamp) the machine came to rest before the
    write: parts started after it are cut with the new value."""


def is_idle(value: Any, idle: frozenset[str]) -> bool:
    """Whether a between-parts signal's value means no part is being cut; unknown values are not.

    >>> is_idle("READY", frozenset({"ready"})), is_idle(ua.LocalizedText("Running"), frozenset({"ready"}))
    (True, False)
    >>> is_idle(True, frozenset({"true"})), is_idle(None, frozenset({"ready"}))
    (True, False)
    """
    if value is None:
        return False
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    if isinstance(value, bool):
        value = "true" if value else "false"
    return str(value).strip().lower() in idle


class OffsetWriter:
    """Writes the registers of one machine's ``offsets:`` over its OPC UA source.

    ``signals`` is the machine's signal map (the between-parts state is usually its ``execution``).
    Each :meth:`apply` opens a session of its own, with the offsets' write user when one is set.
    """

    def __init__(
        self, machine: str, source: OpcUaSource, offsets: OpcUaOffsets, signals: Mapping[str, str | OpcUaSignal]
    ) -> None:
        self.machine = machine
        self.offsets = offsets
        if offsets.username_env is not None:
            source = source.model_copy(update={"username_env": offsets.username_env, "password_env": offsets.password_env})
        self.source = source
        between = offsets.between_parts
        if between.node is not None:
            self._between = between.node
        else:
            spec = signals.get(between.signal or "")
            if spec is None:
                raise ConnectError(
                    f"{machine}: between_parts.signal {between.signal} is not mapped; map it or give between_parts.node"
                )
            self._between = spec if isinstance(spec, str) else spec.node
        self._idle = frozenset(v.strip().lower() for v in between.idle)

    # ------------------------------------------------------------------------------ checks without I/O
    @property
    def secure(self) -> bool:
        """Whether writes go over SignAndEncrypt."""
        return self.source.security_mode == "SignAndEncrypt"

    @property
    def security(self) -> str:
        return f"{self.source.security_policy}/{self.source.security_mode}"

    def register(self, key: str) -> OpcUaRegister:
        """The register named ``key``; refused when this machine may not write it."""
        reg = self.offsets.find(key)
        if reg is None:
            known = ", ".join(r.key for r in self.offsets.registers)
            raise OffsetRefused("unknown_register", f"{self.machine}: no writable register {key}; writable: {known}")
        return reg

    def check(self, key: str, change: float, *, applied_in_batch: float = 0.0, automatic: bool = False) -> OpcUaRegister:
        """Security and limits, before anything is read: OffsetRefused says which and what to do."""
        reg = self.register(key)
        if automatic and not (self.secure and self.source.username_env is not None):
            raise OffsetRefused(
                "insecure",
                f"{self.machine}: automatic offset writes need security_mode SignAndEncrypt and a user with write "
                f"rights (username_env); this connection is {self.security}"
                + ("" if self.source.username_env else " without a user")
                + "; apply by hand or secure the source (docs/offsets.md)",
            )
        if not self.secure and not self.offsets.allow_insecure:
            raise OffsetRefused(
                "insecure",
                f"{self.machine}: refusing to write {reg.key} over {self.security}; offsets are written only over "
                "SignAndEncrypt (set security_policy and security_mode SignAndEncrypt on the source; "
                "offsets.allow_insecure is for a simulator on this computer)",
            )
        if not math.isfinite(change):
            raise OffsetRefused("limit", f"{self.machine}: change {change!r} of {reg.key} is not a number")
        limit = reg.auto_limit if automatic else reg.max_change
        what = "automatic " if automatic else ""
        if abs(change) > limit + 1e-12:
            raise OffsetRefused(
                "limit",
                f"{self.machine}: {what}change {change:+.4f} mm of {reg.key} passes its limit of {limit:.4f} mm per "
                f"{what}write (offsets.registers[].{'auto_max_change' if automatic else 'max_change'}); check the "
                "advice, or change the register at the control",
            )
        if applied_in_batch + abs(change) > reg.max_batch_change + 1e-12:
            raise OffsetRefused(
                "batch_limit",
                f"{self.machine}: {reg.key} was changed by {applied_in_batch:.4f} mm in this batch already; "
                f"{abs(change):.4f} more passes its batch limit of {reg.max_batch_change:.4f} mm (max_batch_change): "
                "a drift this large wants a look at the machine, not another offset",
            )
        if round(change / reg.resolution) == 0:
            raise OffsetRefused(
                "limit", f"{self.machine}: change {change:+.5f} mm is below {reg.key}'s resolution ({reg.resolution} mm)"
            )
        return reg

    # ------------------------------------------------------------------------------ the controller
    async def read(self, key: str) -> float:
        """The register's value now."""
        reg = self.register(key)
        client, nodes = await self._connect(reg)
        try:
            value, _ = _number(reg.key, (await _read(client, [nodes["register"]]))[0])
            return value
        finally:
            await close_quietly(client)

    async def apply(
        self,
        key: str,
        change: float,
        *,
        applied_in_batch: float = 0.0,
        automatic: bool = False,
        still_current: Callable[[], Awaitable[None]] | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> OffsetWrite:
        """Change register ``key`` by ``change`` mm (monitor convention) between parts, verified.

        ``applied_in_batch``: what this register was changed by in this batch so far (sum of sizes).
        ``still_current()`` is awaited right before the write, once the machine is between parts, and
        raises OffsetRefused("stale") when the advice the change came from no longer holds.
        ``on_wait(state)`` is called once when the machine is running a part and the write waits.
        """
        reg = self.check(key, change, applied_in_batch=applied_in_batch, automatic=automatic)
        step = round(change / reg.resolution) * reg.resolution
        client, nodes = await self._connect(reg)
        try:
            return await self._apply(client, nodes, reg, step, still_current, on_wait)
        except ua.UaStatusCodeError as exc:
            name = ua.StatusCode(exc.code).name
            if name in ("BadUserAccessDenied", "BadNotWritable", "BadWriteNotSupported"):
                raise OffsetRefused(
                    "denied",
                    f"{self.machine}: the controller refused the write of {reg.key} ({name}): the OPC UA user "
                    f"{self._user() or '(anonymous)'} has no write rights on it; give the writing user "
                    "(offsets.username_env) those rights on the controller",
                ) from exc
            raise OffsetRefused(
                "unreachable", f"{self.machine}: {reg.key} could not be written: {name}; nothing was changed"
            ) from exc
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            raise OffsetRefused(
                "unreachable",
                f"{self.machine}: the connection failed while writing {reg.key} ({exc!r}); read the register at the "
                "control before trying again",
                restored=False,
            ) from exc
        finally:
            await close_quietly(client)

    # ------------------------------------------------------------------------------ internals
    def _user(self) -> str | None:
        return os.environ.get(self.source.username_env) if self.source.username_env else None

    async def _connect(self, reg: OpcUaRegister) -> tuple[Client, dict[str, ua.NodeId]]:
        try:
            client = await open_client(self.source)
        except ConnectError as exc:
            raise OffsetRefused("unreachable", f"{self.machine}: cannot connect to write {reg.key}: {exc}") from exc
        try:
            found = await resolve(
                client, {"register": parse_address(reg.node), "between": parse_address(self._between)}, self.source.namespaces
            )
        except BaseException:
            await close_quietly(client)
            raise
        if found.missing:
            await close_quietly(client)
            why = "; ".join(f"{k}: {v}" for k, v in found.missing.items())
            raise OffsetRefused(
                "unreachable", f"{self.machine}: {reg.key} or the between-parts state is not on the server ({why})"
            )
        mode = getattr(getattr(client, "security_policy", None), "Mode", ua.MessageSecurityMode.None_)
        if self.secure and mode != ua.MessageSecurityMode.SignAndEncrypt:  # what was asked is what we got
            await close_quietly(client)
            raise OffsetRefused("insecure", f"{self.machine}: the session is not SignAndEncrypt ({mode}); nothing written")
        return client, found.nodes

    async def _apply(
        self,
        client: Client,
        nodes: dict[str, ua.NodeId],
        reg: OpcUaRegister,
        step: float,
        still_current: Callable[[], Awaitable[None]] | None,
        on_wait: Callable[[str], None] | None,
    ) -> OffsetWrite:
        register, between = nodes["register"], nodes["between"]
        access = (await _read(client, [register], ua.AttributeIds.UserAccessLevel))[0]
        if access.Value is not None and not ua.ua_binary.test_bit(int(access.Value.Value), ua.AccessLevel.CurrentWrite):
            raise OffsetRefused(
                "denied",
                f"{self.machine}: {reg.key} is not writable for the OPC UA user {self._user() or '(anonymous)'} "
                "(UserAccessLevel); give the writing user (offsets.username_env) write rights on the controller",
            )
        old, vtype = _number(reg.key, (await _read(client, [register]))[0])
        started = time.monotonic()
        rest = await self._wait_between_parts(client, between, register, reg, old, on_wait)
        waited = time.monotonic() - started
        if still_current is not None:
            await still_current()
        sign = 1.0 if reg.direction == "same" else -1.0
        new = _on_grid(old + sign * step, reg.resolution)
        await client.get_node(register).write_value(ua.DataValue(ua.Variant(_as(vtype, new), vtype)))
        back, _ = _number(reg.key, (await _read(client, [register]))[0])
        if abs(back - new) > reg.resolution / 2:
            await self._undo(client, register, reg, old, vtype, new, back)
        log.info("%s: %s %+.4f mm: %.4f -> %.4f (read back %.4f)", self.machine, reg.key, step, old, new, back)
        return OffsetWrite(reg.key, step, old, new, back, waited, self.security, self._user(), rest)

    async def _wait_between_parts(
        self,
        client: Client,
        between: ua.NodeId,
        register: ua.NodeId,
        reg: OpcUaRegister,
        old: float,
        on_wait: Callable[[str], None] | None,
    ) -> datetime | None:
        """Return once the machine is between parts and the register still holds ``old``: the
        controller time the between-parts state began (None when the server gives none)."""
        timeout = self.offsets.between_parts.timeout_s
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_NOTIFICATIONS)
        subscription = None
        told = False
        deadline = time.monotonic() + timeout
        try:
            while True:
                state_dv, reg_dv = await _read(client, [between, register])
                now, _ = _number(reg.key, reg_dv)
                if abs(now - old) > reg.resolution / 2:
                    raise OffsetRefused(
                        "moved",
                        f"{self.machine}: {reg.key} changed from {old:.4f} to {now:.4f} since it was read (edited at "
                        "the control?); nothing written: look at the condition's advice again",
                        register_value=now,
                    )
                state = state_dv.Value.Value if state_dv.Value is not None and _good(state_dv) else None
                if is_idle(state, self._idle):
                    stamp: datetime | None = state_dv.SourceTimestamp
                    return stamp.replace(tzinfo=UTC) if stamp is not None and stamp.tzinfo is None else stamp
                if not told:
                    told = True
                    if on_wait is not None:
                        on_wait(str(getattr(state, "Text", state)))
                    log.info("%s: waiting for the part to end before writing %s (state %s)", self.machine, reg.key, state)
                if subscription is None:
                    subscription = await client.create_subscription(50, _Changes(queue))
                    await subscription.subscribe_data_change(client.get_node(between))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OffsetRefused(
                        "running",
                        f"{self.machine}: still running a part after {timeout:.0f} s (between_parts.timeout_s); "
                        f"{reg.key} not written",
                    )
                try:
                    async with asyncio.timeout(left):
                        while not is_idle(await queue.get(), self._idle):
                            pass
                except TimeoutError:
                    continue  # the loop reads once more and refuses with the reason
        finally:
            if subscription is not None:
                try:
                    await subscription.delete()
                except (OSError, TimeoutError, ConnectionError, ua.UaError):
                    log.debug("could not delete the between-parts subscription", exc_info=True)

    async def _undo(
        self, client: Client, register: ua.NodeId, reg: OpcUaRegister, old: float, vtype: ua.VariantType, new: float, back: float
    ) -> None:
        """The controller holds something else than written: put the old value back, then refuse."""
        restored = False
        now = back
        try:
            await client.get_node(register).write_value(ua.DataValue(ua.Variant(_as(vtype, old), vtype)))
            now, _ = _number(reg.key, (await _read(client, [register]))[0])
            restored = abs(now - old) <= reg.resolution / 2
        except (OSError, TimeoutError, ConnectionError, ua.UaError):
            log.warning("%s: could not restore %s after a read-back mismatch", self.machine, reg.key, exc_info=True)
        if restored:
            tail = f"the old value {old:.4f} was written back and read back"
        else:
            tail = f"the old value {old:.4f} could NOT be restored: the register holds {now:.4f}; check it at the control now"
        raise OffsetRefused(
            "readback",
            f"{self.machine}: wrote {new:.4f} to {reg.key} but read back {back:.4f} (a gateway or the control altered "
            f"it); {tail}",
            restored=restored,
            register_value=now,
        )


class _Changes:
    """asyncua subscription handler: between-parts state changes into a bounded queue (oldest dropped)."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(val)


async def _read(client: Client, nodes: list[ua.NodeId], attribute: ua.AttributeIds = ua.AttributeIds.Value) -> list[ua.DataValue]:
    """One Read request for several nodes, keeping each DataValue's status (a bad one is not raised)."""
    params = ua.ReadParameters()
    for node in nodes:
        rv = ua.ReadValueId()
        rv.NodeId = node
        rv.AttributeId = attribute
        params.NodesToRead.append(rv)
    result: list[ua.DataValue] = await client.uaclient.read(params)
    return result


def _good(dv: ua.DataValue) -> bool:
    return dv.StatusCode is None or dv.StatusCode.is_good()


_NUMERIC = {ua.VariantType.Double, ua.VariantType.Float}
"""Registers in mm are floating point; a control that keeps them in integer micrometres is not supported."""


def _number(key: str, dv: ua.DataValue) -> tuple[float, ua.VariantType]:
    if not _good(dv) or dv.Value is None or dv.Value.VariantType not in _NUMERIC:
        status = dv.StatusCode.name if dv.StatusCode is not None else "?"
        kind = dv.Value.VariantType.name if dv.Value is not None else "nothing"
        raise OffsetRefused(
            "unreachable",
            f"register {key} does not read as a number of mm (Double or Float; got {kind}, {status}); nothing written",
        )
    value = float(dv.Value.Value)
    if not math.isfinite(value):
        raise OffsetRefused("unreachable", f"register {key} reads {value}; nothing written")
    return value, dv.Value.VariantType


def _on_grid(value: float, resolution: float) -> float:
    decimals = max(0, -math.floor(math.log10(resolution)) + 1)
    return round(round(value / resolution) * resolution, decimals)


def _as(vtype: ua.VariantType, value: float) -> float:
    return value
