"""``monitor status``: machines, sources and sinks of the running daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from monitor.cli._app import app, console, emit_json, emit_rows, err_console
from monitor.cli.core import _DEFAULT_SITE, ConfigOption, JsonOption, _fail
from monitor.errors import MonitorError

__all__ = ["reload", "status"]


@app.command()
def status(config: ConfigOption = _DEFAULT_SITE, as_json: JsonOption = False) -> None:
    """Health of the running daemon: each machine's connection, program and parts; each output's
    backlog in memory and on disk, drops and last error."""
    import asyncio

    from monitor.status import daemon_status

    try:
        body = asyncio.run(daemon_status(config))
    except MonitorError as exc:
        raise _fail(exc) from None
    if as_json:
        emit_json(body)
        return
    machines: list[dict[str, Any]] = []
    for m in body.get("machines", {}).values():
        sources = ", ".join(_source_text(s) for s in m.get("sources", []))
        machines.append({**m, "sources": sources})
    emit_rows(
        machines,
        as_json=False,
        columns=[
            ("machine", "machine"),
            ("connection", "connection"),
            ("sources", "sources"),
            ("program", "program"),
            ("counter", "counter"),
            ("parts", "parts"),
            ("last_part_end", "last part"),
        ],
        title=f"site {body.get('site')}",
    )
    sinks = [{"sink": name, **s} for name, s in body.get("sinks", {}).items()]
    if sinks:
        wanted = ("state", "backlog_memory", "backlog_disk", "written", "dropped", "set_aside", "last_error")
        keys = [k for k in wanted if k in sinks[0]]
        emit_rows(sinks, as_json=False, columns=[("sink", "sink"), *[(k, k) for k in keys]], title="outputs")
    console.print(f"observations waiting: {body.get('queue', 0)}")
    if body.get("from"):
        console.print(f"(read from the daemon's control API at {body['from']})")
    loaded = body.get("config") or {}
    if loaded:
        files = ", ".join(f"{Path(f).name}@{h}" for f, h in loaded.get("files", {}).items())
        console.print(f"configuration loaded {loaded.get('loaded_at')} from {files}", highlight=False, soft_wrap=True)
        last = loaded.get("last_reload")
        if last and not last.get("ok"):
            console.print(f"[red]last reload ({last.get('at')}) refused:[/]", highlight=False)
            for problem in last.get("errors", []):
                console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)


def _source_text(source: dict[str, Any]) -> str:
    """``opcua:failed (... refused the user ...)``; the reason only where the state needs one."""
    text = f"{source.get('type')}:{source.get('state')}"
    reason = source.get("reason")
    if reason and source.get("state") != "connected":
        text += f" ({reason})"
    return text


@app.command()
def reload(config: ConfigOption = _DEFAULT_SITE, as_json: JsonOption = False) -> None:
    """Make the running daemon re-read the site file and every program file (same as SIGHUP or
    `systemctl reload`): program changes apply from the next part, machines added, removed or
    changed are started, stopped or restarted. A configuration with errors is refused (listed
    here with file and line) and the daemon keeps running the one it has."""
    import asyncio

    from monitor.status import reload_daemon

    try:
        result = asyncio.run(reload_daemon(config))
    except MonitorError as exc:
        raise _fail(exc) from None
    if as_json:
        emit_json(result)
        if result.get("ok") is False:
            raise typer.Exit(1)
        return
    if result.get("ok"):
        console.print(f"[green]reloaded[/] in {result['seconds'] * 1000:.0f} ms: {result['summary']}", highlight=False)
    else:
        err_console.print("[bold red]reload refused[/]; the daemon keeps its configuration:")
        for problem in result.get("errors", []):
            err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
