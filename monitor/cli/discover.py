"""``monitor discover URL``: list a controller's readable values and the canonical signals they look like."""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import asdict
from typing import Annotated, Any

import typer

from adapters.base import DiscoveredSignal
from monitor.cli._app import app, emit_rows, err_console
from monitor.errors import MonitorError

__all__ = ["discover_command", "discover_signals"]

_COLUMNS = [
    ("path", "component path"),
    ("address", "address (id)"),
    ("name", "name"),
    ("kind", "category"),
    ("data_type", "type"),
    ("units", "units"),
    ("value", "value"),
    ("suggested", "suggested signal"),
]


def discover_signals(url: str, *, device: str | None = None, text: str | None = None) -> list[DiscoveredSignal]:
    """Dispatch on the URL scheme: http(s) -> MTConnect agent, opc.tcp -> OPC UA server."""
    if url.startswith(("http://", "https://")):
        from adapters.mtconnect.discover import discover as mtc_discover

        return asyncio.run(mtc_discover(url, text, device=device))
    if url.startswith("opc.tcp://"):
        try:
            module = importlib.import_module("adapters.opcua.discover")
        except ImportError as exc:
            raise MonitorError(f"OPC UA discovery is not available in this installation ({exc})") from exc
        result: Any = module.discover(url, text)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return list(result)
    raise MonitorError(f"unsupported URL {url!r}: use http://host:port (MTConnect) or opc.tcp://host:port (OPC UA)")


@app.command("discover")
def discover_command(
    url: Annotated[str, typer.Argument(help="http://HOST:PORT of an MTConnect agent, or opc.tcp://HOST:PORT")],
    device: Annotated[str | None, typer.Option(help="MTConnect device name or uuid.")] = None,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    filter: Annotated[str | None, typer.Option(help="Keep rows whose path, id, name, type or suggestion contains this.")] = None,
) -> None:
    """List devices, components and data items (or OPC UA variables) with values and suggested signals."""
    try:
        found = discover_signals(url, device=device, text=filter)
    except MonitorError as exc:
        err_console.print(f"[bold red]discover failed:[/] {exc}")
        raise typer.Exit(2) from exc
    rows = []
    for s in found:
        row = asdict(s)
        extra = row.pop("extra")
        row["name"] = extra.get("name", "")
        row.update({k: v for k, v in extra.items() if k not in row})
        rows.append(row)
    emit_rows(rows, as_json=json, columns=_COLUMNS, title=f"{len(rows)} signals at {url}")
