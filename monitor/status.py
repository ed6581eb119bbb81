"""What `monitor status` shows: the running daemon's health, read from its dashboard API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from monitor.config import load_site
from monitor.daemon import daemon_api_url
from monitor.errors import MonitorError

__all__ = ["daemon_status"]


async def daemon_status(site_path: Path) -> dict[str, Any]:
    """The daemon's ``/api/status``; a clear error when it is not running or serves no dashboard."""
    site = load_site(site_path)
    base = daemon_api_url(site)
    if base is None:
        raise MonitorError(f"no running daemon found for {site_path}; start it with `monitor run -c {site_path}`")
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
        raise MonitorError(f"no daemon answers at {url} ({exc}); is `monitor run -c {site_path}` running?") from exc
