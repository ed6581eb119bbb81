"""Acknowledging or closing an alert, or recording an action, from the command line, whether the
daemon runs or not.

The running daemon's core is the one writer of alert state, so while it runs a person's change is
a command sent to it through its local control API (:mod:`monitor.control`), dashboard enabled or
not: it can never race the detectors (an acknowledgement written to the store behind a running
daemon's back was overwritten as open by the next escalation). When no daemon runs, which the
store's lock tells for certain (:mod:`monitor.runtime`), the change is written to the store while
holding that lock, so no daemon can start half-way through it; the daemon applies it to its
detectors when it next starts. Actions are stored the same way (the daemon reads them from the store).
In a shared (PostgreSQL) store the machine's lease plays the lock's part: the change is written only
while no daemon holds that machine (the command holds its lease meanwhile and writes fenced); a
machine watched by a daemon on another host is changed there.

Who acts is the user whose token is in ``$MONITOR_TOKEN`` (``users:`` of the site file); a site
without users records the "local" user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.commands import (
    Acknowledge,
    AlertCommand,
    ApplyOffset,
    CloseAlert,
    Command,
    Outcome,
    RecordAction,
    make_action,
    store_part_lookup,
)
from monitor.config import OpcUaMachine, Site, load_site
from monitor.control import ControlClient, DaemonUnreachable
from monitor.errors import MonitorError
from monitor.model import Action, ActionKind, AlertState
from monitor.runtime import RuntimeInfo, StoreLock, read_runtime
from monitor.store import Store, open_store
from monitor.store.lease import MachineLease, daemon_id
from monitor.users import WRITE_OFFSET, authorize, cli_user

__all__ = ["THROUGH_DAEMON", "TOKEN_ENV", "WRITTEN_TO_STORE", "acknowledge_alert", "apply_offset", "change_alert"]

TOKEN_ENV = "MONITOR_TOKEN"
"""The environment variable that holds the command line user's token."""

THROUGH_DAEMON = "through the running daemon"
WRITTEN_TO_STORE = "in the store; the daemon applies it at start"
_POLL_S = 0.1


async def acknowledge_alert(
    site_path: Path, alert_id: str, *, close: bool = False, comment: str = "", wait_s: float = 10.0
) -> tuple[Outcome, str]:
    """Acknowledge (or close) ``alert_id``; returns what changed and how it was done."""
    site = load_site(site_path)
    user = cli_user(site, os.environ.get(TOKEN_ENV))
    command: AlertCommand = CloseAlert(alert_id, user, comment) if close else Acknowledge(alert_id, user, comment)
    return await change_alert(site, command, wait_s=wait_s)


async def change_alert(site: Site, command: Command, *, wait_s: float = 10.0) -> tuple[Outcome, str]:
    """Apply a person's change: to the running daemon's core, else to the store under its lock.

    A daemon that is starting (it holds the lock but does not listen yet) is waited for, up to
    ``wait_s``; one that stops meanwhile releases the lock and the change goes to the store."""
    store_path = site.store_path
    shared = site.config.store.url
    kind = (
        command.kind
        if isinstance(command, RecordAction)
        else (ActionKind.ACKNOWLEDGE if isinstance(command, Acknowledge) else ActionKind.CLOSE)
    )
    authorize(command.user, kind)
    token = os.environ.get(TOKEN_ENV)
    deadline = time.monotonic() + wait_s
    holder = ""
    while True:
        if shared is None:
            written = await asyncio.to_thread(_in_store_unless_running, site, command)
        else:
            written, holder = await asyncio.to_thread(_in_shared_store_unless_owned, site, shared, command)
        if written is not None:
            return written, WRITTEN_TO_STORE
        info = read_runtime(store_path)
        if info is not None:
            try:
                outcome = await ControlClient(info.control_url, info.control_token).execute(command, token)
            except DaemonUnreachable:
                pass  # stopping, or a stale file beside a starting daemon: look again
            else:
                if outcome.alert is None and outcome.action is None:
                    assert not isinstance(command, RecordAction)
                    what = "open alert" if isinstance(command, CloseAlert) else "open, unacknowledged alert"
                    raise MonitorError(f"no {what} {command.alert_id}; list them with `monitor alerts --open`")
                return outcome, THROUGH_DAEMON
        if time.monotonic() >= deadline and shared is not None:
            raise MonitorError(
                f"the machine is watched by {holder}, not by a daemon of this host: change it on that "
                "daemon's dashboard (`monitor plant` lists the owners) or with the same command on its host"
            )
        if time.monotonic() >= deadline:
            raise MonitorError(
                f"a monitor daemon holds {store_path}'s lock but its control API does not answer; "
                "wait until it has started (or stopped) and try again"
            )
        await asyncio.sleep(_POLL_S)  # the daemon is starting: its runtime file comes once it listens


async def apply_offset(
    site_path: Path, alert_id: str, *, value: float | None = None, axis: str | None = None, comment: str = ""
) -> list[dict[str, Any]]:
    """Have the running daemon write condition ``alert_id``'s offset advice (or ``value``) to the
    controller: each register's outcome, written or refused (recorded either way; docs/offsets.md).
    Needs the daemon: it knows the current advice and is the one writer of what was done."""
    site = load_site(site_path)
    user = cli_user(site, os.environ.get(TOKEN_ENV))
    authorize(user, WRITE_OFFSET)
    info = read_runtime(site.store_path)
    if site.config.store.url is not None:
        holder = await asyncio.to_thread(_held_elsewhere, site.config.store.url, alert_id, info)
        if holder:
            raise MonitorError(
                f"condition {alert_id}'s machine is watched by {holder}, not by this host's daemon: apply the offset "
                "on that daemon's dashboard or with the same command on its host (`monitor plant` lists the owners)"
            )
    if info is None:
        raise MonitorError(
            "no monitor daemon runs for this site: offsets are written by the running daemon (it knows the current "
            "advice); start it with `monitor run`, or type the value at the control and record it with `monitor act offset`"
        )
    waits = [m.offsets.between_parts.timeout_s for m in site.config.machines if isinstance(m, OpcUaMachine) and m.offsets]
    command = ApplyOffset(alert_id, user, "cli", value, axis, None, comment)
    client = ControlClient(info.control_url, info.control_token)
    return await client.apply_offset(command, os.environ.get(TOKEN_ENV), timeout_s=max(waits, default=0.0) + 60.0)


def _held_elsewhere(url: str, alert_id: str, mine: RuntimeInfo | None) -> str:
    """Which other daemons hold the lease of condition ``alert_id``'s machine, in words ("" when
    none does, or the condition is unknown: the daemon of this host says so then). The register's
    one writer is the daemon that holds the machine, as for every other change of its conditions."""
    with open_store(url, read_only=True) as reader:
        alert = reader.alert(alert_id)
        if alert is None:
            return ""
        owners = [r for r in reader.machine_owners() if r["machine"] == alert.machine and r["live"]]
    ours = mine.lease_owner if mine is not None else None
    return ", ".join(f"{r['owner']} (cell {r['cell']})" for r in owners if r["owner"] != ours)


def _in_shared_store_unless_owned(site: Site, url: str, command: Command) -> tuple[Outcome | None, str]:
    """A shared store: write the change if no daemon holds its machine, holding the machine's lease
    meanwhile (so no daemon takes it half-way through, and the write is fenced); else (None, who
    holds it)."""
    machine = command.machine if isinstance(command, RecordAction) else None
    alert_id = command.alert_id
    if alert_id is not None:
        with open_store(url, read_only=True) as reader:
            alert = reader.alert(alert_id)
        if alert is None:
            raise MonitorError(f"no alert {alert_id}; list them with `monitor alerts`")
        machine = alert.machine
    if not machine:
        raise MonitorError("name the machine (or the condition) the action was done on")
    lease = MachineLease(url, [machine], cell=site.config.site, ttl_s=30.0, owner=f"monitor-cli:{daemon_id()}")
    if not lease.try_acquire():
        lease.close()
        return None, lease.waiting_for()
    try:
        with open_store(url, fence=lease.fence) as store:
            return _apply(site, store, command), ""
    finally:
        lease.release()


def _apply(site: Site, store: Store, command: Command) -> Outcome:
    """Write a person's change to a store no daemon writes to meanwhile."""

    def last_part(machine: str, program: str) -> int | None:
        n = store.next_part_numbers(machine).get(program)
        return n - 1 if n is not None else None

    if isinstance(command, RecordAction):
        action = make_action(site, dataclasses.replace(command, source="store"), store.alert, last_part, store_part_lookup(store))
        store.record_action(action)
        return Outcome(None, action)
    alert = store.alert(command.alert_id)
    if alert is None:
        raise MonitorError(f"no alert {command.alert_id}; list them with `monitor alerts`")
    if alert.state is AlertState.CLOSED:
        raise MonitorError(f"alert {command.alert_id} is already closed")
    closing = isinstance(command, CloseAlert)
    now = datetime.now(UTC)
    changed = dataclasses.replace(alert, state=AlertState.CLOSED if closing else AlertState.ACKNOWLEDGED, time=now)
    done = Action(
        id=uuid.uuid4().hex,
        time=now,
        kind=ActionKind.CLOSE if closing else ActionKind.ACKNOWLEDGE,
        machine=alert.machine,
        program=alert.program,
        feature=alert.feature,
        user=command.user.name,
        role=command.user.role,
        source="store",
        condition_id=alert.id,
        part_number=last_part(alert.machine, alert.program),
        comment=command.comment,
    )
    store.record_alerts([changed])
    store.record_action(done)
    return Outcome(changed, done)


def _in_store_unless_running(site: Site, command: Command) -> Outcome | None:
    """Write the change to the store if no daemon holds its lock (holding it meanwhile); None if one does."""
    lock = StoreLock(site.store_path)
    if not lock.try_acquire():
        return None
    try:
        with open_store(site.store_path) as store:
            return _apply(site, store, command)
    finally:
        lock.release()
