"""What `monitor status` shows and `monitor reload` does, through the running daemon's local
control API (dashboard enabled or not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitor.config import load_site, load_site_file
from monitor.errors import MonitorError
from monitor.runtime import RuntimeInfo, read_runtime

__all__ = ["daemon_status", "reload_daemon"]


def _running(site_path: Path, store_path: Path) -> RuntimeInfo:
    info = read_runtime(store_path)
    if info is None:
        raise MonitorError(f"no running daemon found for {site_path}; start it with `monitor run -c {site_path}`")
    return info


async def daemon_status(site_path: Path) -> dict[str, Any]:
    """The running daemon's status, with ``from``: where it was read; a clear error when none runs.
    Only the site file is read, so this works while a program file being edited has errors."""
    from monitor.control import ControlClient, DaemonUnreachable

    info = _running(site_path, load_site_file(site_path).store_path)
    try:
        body = await ControlClient(info.control_url, info.control_token).status()
    except DaemonUnreachable as exc:
        raise MonitorError(f"{exc}; is `monitor run -c {site_path}` running?") from exc
    return {**body, "from": f"{info.control_url} (pid {info.pid})"}


async def reload_daemon(site_path: Path) -> dict[str, Any]:
    """Check the configuration here (a ConfigError with every problem when it is wrong: nothing is
    sent), then ask the running daemon to reload it; its answer (what changed, or why it refused)."""
    from monitor.control import ControlClient, DaemonUnreachable

    site = load_site(site_path)
    info = _running(site_path, site.store_path)
    try:
        return await ControlClient(info.control_url, info.control_token).reload()
    except DaemonUnreachable as exc:
        raise MonitorError(f"{exc}; is `monitor run -c {site_path}` running?") from exc
