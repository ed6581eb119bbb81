"""List what an MTConnect agent offers, with the canonical signal each item looks like.

``monitor discover http://host:port`` calls :func:`discover` (through the plugin registry): it reads ``/probe`` and
``/current`` and returns one :class:`~adapters.base.DiscoveredSignal` per data item (device,
component path, id, name, category, type, subType, units, current value), enough to write a
machine's ``signals:`` block.
"""

from __future__ import annotations

import aiohttp

from adapters.base import DiscoveredSignal
from adapters.mtconnect.client import AgentClient
from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.documents import StreamsDocument
from adapters.mtconnect.mapping import select_devices, suggest_signal
from monitor.errors import MonitorError

__all__ = ["discover"]


def _text(value: object) -> str:
    if value is None:
        return "UNAVAILABLE"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


async def discover(
    source: MtConnectSource, filter: str | None = None, *, warnings: list[str] | None = None
) -> list[DiscoveredSignal]:
    """Data items of the agent at ``source.url`` (only ``source.device`` if given), keeping those whose
    id, name, type, path or suggested signal contains ``filter`` (case-insensitive).

    The items come from ``/probe``; when ``/current`` cannot be read (an MTConnectError document,
    a malformed answer) they are still listed, without values, and ``warnings`` says why (every
    error the agent named), as it says what the agent sent that a well-formed document would not."""
    url, device = source.url, source.device
    notes = warnings if warnings is not None else []
    async with aiohttp.ClientSession() as session:
        client = AgentClient(url, session)
        probe = await client.probe()
        devices = select_devices(probe, device)
        try:
            current: StreamsDocument | None = await client.current()
        except MonitorError as exc:
            notes.append(f"{url}/current: {exc}; values are not shown")
            current = None
    if current is not None:
        notes.extend(f"{url}/current: {w}" for w in current.warnings)
    values: dict[str, str] = {}
    conditions: dict[str, list[str]] = {}
    for o in current.observations if current is not None else []:
        if o.category == "CONDITION":
            conditions.setdefault(o.data_item_id, []).append(o.level.upper() if o.level else "UNAVAILABLE")
        else:
            values[o.data_item_id] = _text(o.value)
    needle = (filter or "").lower()
    out: list[DiscoveredSignal] = []
    for dev in devices:
        for item in dev.data_items:
            suggested = suggest_signal(item)
            kind_type = item.type + (f":{item.sub_type}" if item.sub_type else "")
            value = values.get(item.id) or ",".join(conditions.get(item.id, [])) or ""
            extra = {
                "device": dev.name,
                "id": item.id,
                "name": item.name or "",
                "category": item.category,
                "type": item.type,
                "subType": item.sub_type or "",
                "representation": item.representation or "",
            }
            haystack = " ".join([item.path_text, item.id, item.name or "", kind_type, suggested or ""]).lower()
            if needle and needle not in haystack:
                continue
            out.append(
                DiscoveredSignal(
                    path=item.path_text,
                    address=item.id,
                    kind=item.category,
                    data_type=kind_type,
                    units=item.units or "",
                    value=value,
                    suggested=suggested,
                    extra=extra,
                )
            )
    return out
