"""Store maintenance: ``monitor backup`` (a consistent copy while the daemon writes) and
``monitor signals`` (the raw signal history the store keeps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monitor.cli._app import app, console, emit_json, emit_rows, err_console
from monitor.cli.core import _DEFAULT_SITE, ConfigOption, JsonOption, _fail
from monitor.errors import MonitorError

__all__ = ["backup", "signals"]


@app.command()
def backup(
    target: Annotated[Path, typer.Argument(help="The new SQLite file to write, e.g. /backup/cell-3-2026-03-02.db.")],
    config: ConfigOption = _DEFAULT_SITE,
    force: Annotated[bool, typer.Option("--force", help="Replace TARGET if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy the store consistently while the daemon keeps writing (SQLite's online backup).

    The copy is one self-contained file, checked with SQLite's integrity check before it is put
    in place. Restore: stop the daemon, replace the store file with the copy (delete its -wal and
    -shm files), start the daemon."""
    from monitor.config import load_site
    from monitor.store.backup import backup_store

    try:
        site = load_site(config)
        result = backup_store(site.store_path, target, overwrite=force)
    except MonitorError as exc:
        raise _fail(exc) from None
    if as_json:
        emit_json(result.as_dict())
        return
    console.print(
        f"[green]backup[/] {result.target}: {result.parts} parts, {result.alerts} alerts, "
        f"{result.bytes / 1e6:.1f} MB in {result.seconds:.2f} s (integrity ok)",
        highlight=False,
    )


@app.command()
def signals(
    config: ConfigOption = _DEFAULT_SITE,
    machine: Annotated[str | None, typer.Option(help="The machine (omit to list what history is kept).")] = None,
    signal: Annotated[str | None, typer.Option(help="The canonical signal, e.g. spindle.load.")] = None,
    since: Annotated[str | None, typer.Option(help="Only since: 2h, 30m, 7d or an ISO time.")] = None,
    last: Annotated[int, typer.Option(help="At most this many of the most recent values.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Raw signal history kept in the store (the site file's store.signals, for
    store.signal_retention_days): one machine's signal over time, or what is kept."""
    from monitor.config import load_site
    from monitor.queries import open_site_store, parse_since

    try:
        since_t = parse_since(since)
    except ValueError:
        err_console.print(f"--since: expected 2h, 30m, 7d or an ISO time, got {since!r}")
        raise typer.Exit(2) from None
    try:
        with open_site_store(config) as store:
            if machine is None or signal is None:
                kept = [{"machine": m, "signal": s} for m, s in store.signal_names()]
                n = emit_rows(kept, as_json=as_json, columns=[("machine", "machine"), ("signal", "signal")], title="history kept")
                if n == 0 and not as_json:
                    site = load_site(config)
                    console.print("no signal history kept" + ("" if site.config.store.signals else " (store.signals is empty)"))
                return
            history = store.signal_history(machine, signal, since=since_t, last=last)
            rows = [{"time": o.time.isoformat(), "value": o.value} for o in history]
    except MonitorError as exc:
        raise _fail(exc) from None
    emit_rows(rows, as_json=as_json, columns=[("time", "time"), ("value", "value")], title=f"{machine} {signal}")
