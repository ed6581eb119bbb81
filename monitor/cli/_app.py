"""The typer application and the rendering every command shares (rich tables or JSON lines)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "console", "emit_json", "emit_rows", "err_console"]

app = typer.Typer(
    name="monitor",
    help=(
        "CNC process monitor for small-batch production: reads spindle, tool and probe data over "
        "OPC UA and MTConnect, ties it to parts, and flags drift in hole positions and sizes while "
        "parts are still in tolerance."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from monitor import __version__

        sys.stdout.write(f"monitor {__version__} (cnc-drift-monitor, Python {sys.version.split()[0]})\n")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """CNC process monitor for small-batch production."""


def emit_json(obj: Any) -> None:
    """One JSON object on one line, for scripts."""
    sys.stdout.write(json.dumps(obj, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def emit_rows(
    rows: Iterable[dict[str, Any]],
    *,
    as_json: bool,
    columns: Sequence[tuple[str, str]],
    title: str | None = None,
) -> int:
    """Print rows as a rich table, or one JSON object per line; returns how many rows were printed."""
    n = 0
    if as_json:
        for row in rows:
            emit_json(row)
            n += 1
        return n
    table = Table(title=title, header_style="bold")
    for _, header in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key, _ in columns))
        n += 1
    console.print(table)
    return n


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
