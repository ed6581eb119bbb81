"""``monitor discover URL``: list a controller's readable values and the canonical signals they look like."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from monitor.cli._app import app, console, emit_rows, err_console
from monitor.errors import MonitorError

__all__ = ["discover_command"]

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


@app.command("discover")
def discover_command(
    url: Annotated[str, typer.Argument(help="http://HOST:PORT of an MTConnect agent, or opc.tcp://HOST:PORT")],
    device: Annotated[str | None, typer.Option(help="MTConnect device name or uuid.")] = None,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    filter: Annotated[str | None, typer.Option(help="Keep rows whose path, id, name, type or suggestion contains this.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Site file whose --machine's OPC UA security settings to use.")
    ] = None,
    machine: Annotated[str | None, typer.Option(help="With --config: the OPC UA machine whose source settings to use.")] = None,
) -> None:
    """List devices, components and data items (or OPC UA variables) with values and suggested signals.

    For a secure OPC UA server, give the site file and machine whose source holds the security policy,
    certificates and user: `monitor discover opc.tcp://10.0.0.5:4840 -c site.yaml --machine vmc-01`."""
    import asyncio

    from monitor.discovery import discover, machine_source

    try:
        source = None
        if config is not None or machine is not None:
            if config is None or machine is None:
                raise MonitorError("give both --config and --machine to browse with a machine's source settings")
            source = machine_source(config, machine, url)
        warnings: list[str] = []
        found = asyncio.run(discover(url, device=device, text=filter, source=source, warnings=warnings))
    except MonitorError as exc:
        err_console.print(f"[bold red]discover failed:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
    rows = []
    for s in found:
        row = asdict(s)
        extra = row.pop("extra")
        row["name"] = extra.get("name", "")
        row.update({k: v for k, v in extra.items() if k not in row})
        rows.append(row)
    emit_rows(rows, as_json=json, columns=_COLUMNS, title=f"{len(rows)} signals at {url}")
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    declare = dict(
        entry.split(": ", 1) for row in rows for entry in str(row.get("namespaces") or "").split(", ") if ": " in entry
    )
    if declare and not json:
        entries = ", ".join(f"{p}: {u}" for p, u in declare.items())
        console.print(
            "paths use prefixes of namespaces no companion specification names; add to the machine's source: "
            f"namespaces: {{{entries}}} (or copy the address column)",
            soft_wrap=True,
            highlight=False,
        )
