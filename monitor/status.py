"""What `monitor status` shows (the running daemon's health, from its API or its runtime file) and
`monitor reload` does (SIGHUP to the running daemon, then its answer from the same status)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from monitor.config import Site, load_site, load_site_file
from monitor.daemon import daemon_api_url, runtime_file
from monitor.errors import MonitorError

__all__ = ["STALE_AFTER_S", "daemon_status", "reload_daemon"]

STALE_AFTER_S = 30.0
"""A runtime file not refreshed for this long belongs to a daemon that is hung or gone."""


async def reload_daemon(site_path: Path, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """Check the configuration here (a ConfigError with every problem when it is wrong: nothing is
    sent), then SIGHUP the running daemon and wait for the ``last_reload`` of its status."""
    site = load_site(site_path)
    try:
        pid = int(json.loads(runtime_file(site).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        raise MonitorError(f"no running daemon found for {site_path}; start it with `monitor run -c {site_path}`") from None
    before = (await daemon_status(site_path)).get("config", {}).get("last_reload")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise MonitorError(f"the daemon of {site_path} (pid {pid}) is not running; start it with `monitor run`") from None
    except PermissionError:
        raise MonitorError(f"not allowed to signal the daemon (pid {pid}); run as its user or use `systemctl reload`") from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # the daemon's answer appears in its status
        after = (await daemon_status(site_path)).get("config", {}).get("last_reload")
        if after is not None and after != before:
            result: dict[str, Any] = after
            return result
    raise MonitorError(f"the daemon (pid {pid}) did not report a reload within {timeout_s:.0f} s; see its log")


async def daemon_status(site_path: Path) -> dict[str, Any]:
    """The daemon's ``/api/status``, or with the dashboard disabled (or not answering) the status the
    daemon writes to its runtime file every second; a clear error when no daemon runs. Only the site
    file is read, so this works while a program file being edited has errors."""
    site = load_site_file(site_path)
    base = daemon_api_url(site)
    failure = None
    if base is not None:
        url = base + "api/status"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(url) as resp,
            ):
                resp.raise_for_status()
                body: dict[str, Any] = await resp.json()
                return body
        except (TimeoutError, aiohttp.ClientError) as exc:
            failure = f"no daemon answers at {url} ({exc})"
    from_file = _runtime_status(site)
    if from_file is not None:
        return from_file
    raise MonitorError(f"{failure or f'no running daemon found for {site_path}'}; start it with `monitor run -c {site_path}`")


def _runtime_status(site: Site) -> dict[str, Any] | None:
    """The status in the runtime file, when its daemon process is alive and wrote it recently."""
    path = runtime_file(site)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    status = body.get("status") if isinstance(body, dict) else None
    pid = body.get("pid") if isinstance(body, dict) else None
    if not isinstance(status, dict) or not isinstance(pid, int) or not _alive(pid):
        return None
    try:
        age = (datetime.now(UTC) - datetime.fromisoformat(str(body.get("updated")))).total_seconds()
    except ValueError:
        return None
    if age > STALE_AFTER_S:
        raise MonitorError(f"the daemon (pid {pid}) has not updated {path} for {age:.0f} s; it may be hung (check its log)")
    return {**status, "from": str(path), "updated": body.get("updated")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
