"""Store maintenance: ``monitor backup`` (a consistent copy while the daemon writes), ``monitor
signals`` (the raw signal history the store keeps) and ``monitor store copy`` (SQLite to PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monitor.cli._app import app, console, emit_json, emit_rows, err_console, rich_console, since_option
from monitor.cli.core import _DEFAULT_SITE, ConfigOption, JsonOption, _fail
from monitor.errors import MonitorError

__all__ = ["backup", "signals", "store_copy"]


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
        if site.config.store.url:
            raise MonitorError(
                "the store is a PostgreSQL database: back it up with the server's tools (pg_dump, or the "
                "server's continuous archiving); `monitor backup` copies a SQLite store"
            )
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
    from monitor.queries import open_site_store

    since_t = since_option(since)
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


store_app = typer.Typer(
    name="store",
    help="The store itself: move a cell's SQLite store into a plant's PostgreSQL store (docs/plant.md).",
    no_args_is_help=True,
)
app.add_typer(store_app)


@store_app.command("copy")
def store_copy(
    source: Annotated[
        Path, typer.Option("--from", help="The cell's SQLite store (its site's store.path), e.g. /var/lib/monitor/monitor.db.")
    ],
    target: Annotated[
        str,
        typer.Option(
            "--to",
            help="The PostgreSQL store: postgresql://USER@HOST:PORT/DATABASE (the password from PGPASSWORD or ~/.pgpass).",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Copy a SQLite store into a PostgreSQL store: parts, measurements, alerts with their history,
    detector states, source positions, signal history, inspection results.

    Safe to run again (after an interruption, or to bring over what the cell stored since): what the
    target holds already is left alone and nothing is stored twice. The source is only read. Every
    part, alert change and actual of the source is checked to be in the target at the end; the
    command fails if one is missing. Stop the cell's daemon before the last run, then point its site
    file's store.url at the target."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from monitor.dburl import check_url
    from monitor.store.copy import copy_store

    try:
        check_url(target)
    except ValueError as exc:
        err_console.print(f"--to: {exc}")
        raise typer.Exit(2) from None
    bar = Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=rich_console(stderr=True),
        disable=as_json,
    )
    tasks: dict[str, TaskID] = {}

    def tell(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bar.add_task(table, total=total)
        bar.update(tasks[table], completed=done)

    try:
        with bar:
            result = copy_store(source, target, progress=tell)
    except MonitorError as exc:
        raise _fail(exc) from None
    if as_json:
        emit_json(result.as_dict())
    else:
        rows = [
            {"table": t, "read": result.read.get(t, 0), "added": result.added.get(t, 0), "missing": result.missing.get(t, "")}
            for t in result.read
        ]
        emit_rows(
            rows,
            as_json=False,
            columns=[("table", "table"), ("read", "in the source"), ("added", "new in the target"), ("missing", "missing after")],
            title=f"{result.source} -> {result.target} ({result.seconds:.1f} s)",
        )
    if any(result.missing.values()):
        err_console.print(f"[bold red]error:[/] not everything is in the target: {result.missing}; run the copy again")
        raise typer.Exit(1)
