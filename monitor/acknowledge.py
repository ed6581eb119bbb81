"""Acknowledging or closing an alert from the command line, whether the daemon runs or not.

The running daemon's core is the one writer of alert state, so while it runs a person's change is
a command sent to it through its local control API (:mod:`monitor.control`), dashboard enabled or
not: it can never race the detectors (an acknowledgement written to the store behind a running
daemon's back was overwritten as open by the next escalation). When no daemon runs, which the
store's lock tells for certain (:mod:`monitor.runtime`), the change is written to the store while
holding that lock, so no daemon can start half-way through it; the daemon applies it to its
detectors when it next starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

from monitor.config import load_site
from monitor.control import ControlClient, DaemonUnreachable
from monitor.core import Acknowledge, AlertCommand, CloseAlert
from monitor.errors import MonitorError
from monitor.model import Alert, AlertState
from monitor.runtime import StoreLock, read_runtime
from monitor.store import open_store

__all__ = ["THROUGH_DAEMON", "WRITTEN_TO_STORE", "acknowledge_alert", "change_alert"]

THROUGH_DAEMON = "through the running daemon"
WRITTEN_TO_STORE = "in the store; the daemon applies it at start"
_POLL_S = 0.1


async def acknowledge_alert(
    site_path: Path, alert_id: str, *, close: bool = False, user: str | None = None, wait_s: float = 10.0
) -> tuple[Alert, str]:
    """Acknowledge (or close) ``alert_id``; returns the alert after the change and how it was done."""
    command: AlertCommand = CloseAlert(alert_id, user) if close else Acknowledge(alert_id, user)
    return await change_alert(site_path, command, wait_s=wait_s)


async def change_alert(site_path: Path, command: AlertCommand, *, wait_s: float = 10.0) -> tuple[Alert, str]:
    """Apply a person's change: to the running daemon's core, else to the store under its lock.

    A daemon that is starting (it holds the lock but does not listen yet) is waited for, up to
    ``wait_s``; one that stops meanwhile releases the lock and the change goes to the store."""
    store_path = load_site(site_path).store_path
    deadline = time.monotonic() + wait_s
    while True:
        written = await asyncio.to_thread(_in_store_unless_running, store_path, command)
        if written is not None:
            return written, WRITTEN_TO_STORE
        info = read_runtime(store_path)
        if info is not None:
            try:
                alert = await ControlClient(info.control_url, info.control_token).execute(command)
            except DaemonUnreachable:
                alert = None  # stopping, or a stale file beside a starting daemon: look again
            else:
                if alert is None:
                    what = "open alert" if isinstance(command, CloseAlert) else "open, unacknowledged alert"
                    raise MonitorError(f"no {what} {command.alert_id}; list them with `monitor alerts --open`")
                return alert, THROUGH_DAEMON
        if time.monotonic() >= deadline:
            raise MonitorError(
                f"a monitor daemon holds {store_path}'s lock but its control API does not answer; "
                "wait until it has started (or stopped) and try again"
            )
        await asyncio.sleep(_POLL_S)  # the daemon is starting: its runtime file comes once it listens


def _in_store_unless_running(path: Path, command: AlertCommand) -> Alert | None:
    """Write the change to the store if no daemon holds its lock (holding it meanwhile); None if one does."""
    lock = StoreLock(path)
    if not lock.try_acquire():
        return None
    try:
        with open_store(path) as store:
            alert = store.alert(command.alert_id)
            if alert is None:
                raise MonitorError(f"no alert {command.alert_id}; list them with `monitor alerts`")
            if alert.state is AlertState.CLOSED:
                raise MonitorError(f"alert {command.alert_id} is already closed")
            state = AlertState.CLOSED if isinstance(command, CloseAlert) else AlertState.ACKNOWLEDGED
            changed = dataclasses.replace(alert, state=state, time=datetime.now(UTC))
            store.record_alerts([changed])
            return changed
    finally:
        lock.release()
