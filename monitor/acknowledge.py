"""Acknowledging or closing an alert from the command line.

When the daemon is running it owns the alerts, so the change goes through its dashboard API (with
the site's token). When it is not running, the change is written to the store, and the daemon
applies it to its detectors when it next starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp

from monitor.codec import alert_from_dict
from monitor.config import load_site
from monitor.daemon import daemon_api_url
from monitor.errors import MonitorError
from monitor.model import Alert, AlertState
from monitor.store import Store

__all__ = ["acknowledge_alert"]


async def acknowledge_alert(site_path: Path, alert_id: str, *, close: bool = False) -> tuple[Alert, str]:
    """Acknowledge (or close) ``alert_id``; returns the alert after the change and how it was done."""
    site = load_site(site_path)
    dash = site.config.dashboard
    base = daemon_api_url(site)
    if base is not None:
        url = f"{base}api/alerts/{quote(alert_id, safe='')}/{'close' if close else 'ack'}"
        headers = {"Authorization": f"Bearer {dash.token}"} if dash.token else {}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.post(url, headers=headers) as resp,
            ):
                if resp.status == 200:
                    return alert_from_dict(await resp.json()), "through the running daemon"
                if resp.status == 404:
                    raise MonitorError(f"no open alert {alert_id}; list them with `monitor alerts --open`")
                text = await resp.text()
                raise MonitorError(f"the daemon refused ({resp.status}): {text.strip()[:200]}")
        except (TimeoutError, aiohttp.ClientConnectionError):
            pass  # daemon not running: write to the store
    return await asyncio.to_thread(_in_store, site.store_path, alert_id, close), "in the store; the daemon applies it at start"


def _in_store(path: Path, alert_id: str, close: bool) -> Alert:
    with Store(path) as store:
        alert = store.alert(alert_id)
        if alert is None:
            raise MonitorError(f"no alert {alert_id}; list them with `monitor alerts`")
        if alert.state is AlertState.CLOSED:
            raise MonitorError(f"alert {alert_id} is already closed")
        changed = dataclasses.replace(
            alert, state=AlertState.CLOSED if close else AlertState.ACKNOWLEDGED, time=datetime.now(UTC)
        )
        store.record_alerts([changed])
        return changed
