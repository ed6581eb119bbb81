"""What ``monitor discover`` lists: a controller's readable values and the canonical signal each looks like.

The URL's scheme picks the protocol through the plugin registry (:mod:`monitor.plugins`), so the
command line knows no protocol. A machine's own source settings (OPC UA security policy,
certificates, user; MTConnect timeouts) can be used instead of the protocol's defaults, pointed at
the URL given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.base import DiscoveredSignal
from monitor.config import load_site
from monitor.errors import MonitorError
from monitor.plugins import discoverer, source_for_url, source_title

__all__ = ["discover", "machine_source"]

_ADDRESS_KEYS = ("endpoint", "url", "path")


async def discover(
    url: str,
    *,
    device: str | None = None,
    text: str | None = None,
    source: Any = None,
    warnings: list[str] | None = None,
) -> list[DiscoveredSignal]:
    """The readable values at ``url`` whose path, address, type or suggestion contains ``text``.

    ``source`` (from :func:`machine_source`) replaces the protocol's default settings for ``url``;
    ``device`` chooses one device of an MTConnect agent; ``warnings`` collects what the controller
    answered oddly (an error document instead of values)."""
    if source is None:
        source = source_for_url(url, **({"device": device} if device is not None else {}))
    found: list[DiscoveredSignal] = await discoverer(source.type)(source, text, warnings=warnings)
    return found


def machine_source(site_path: Path, machine: str, url: str) -> Any:
    """The source settings of ``machine`` in the site file, pointed at ``url`` (same protocol)."""
    site = load_site(site_path)
    wanted = source_for_url(url)
    for entry in site.config.machines:
        if entry.id == machine and entry.source.type == wanted.type:
            update = {k: getattr(wanted, k) for k in _ADDRESS_KEYS if k in type(entry.source).model_fields}
            return entry.source.model_copy(update=update)
    raise MonitorError(f"{site_path} has no {source_title(wanted.type)} source for machine {machine!r}")
