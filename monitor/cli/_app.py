"""The typer application and the rendering every command shares (rich tables or JSON lines)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = [
    "CAPABILITY_COLUMNS",
    "app",
    "capability_text",
    "console",
    "emit_json",
    "emit_rows",
    "err_console",
    "print_stability_notes",
]

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


CAPABILITY_COLUMNS = [
    ("n", "parts"),
    ("cp_text", "Cp"),
    ("cpk_text", "Cpk"),
    ("pp_text", "Pp"),
    ("ppk_text", "Ppk"),
    ("stable_text", "stable"),
]
"""The capability columns every capability table prints (after its own leading columns)."""


def capability_text(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a :meth:`~monitor.detect.capability.CapabilityResult.as_dict`) with the texts of
    :data:`CAPABILITY_COLUMNS`: each index with its interval, and whether the process was stable
    (the first signal when not: the indices are then not meaningful)."""
    out = dict(row)
    for name in ("cp", "cpk", "pp", "ppk"):
        value, ci = row.get(name), row.get(f"{name}_ci")
        out[f"{name}_text"] = "-" if value is None else f"{value:.2f}" if not ci else f"{value:.2f} ({ci[0]:.2f}-{ci[1]:.2f})"
    out["stable_text"] = "-" if not row.get("n") else "NO: not meaningful" if row.get("signals") else "yes"
    return out


def since_option(text: str | None) -> datetime | None:
    """``--since`` read as :func:`monitor.queries.parse_since` reads it; exit 2 with the forms it
    takes when it is none of them."""
    from monitor.queries import parse_since

    try:
        return parse_since(text)
    except ValueError:
        err_console.print(f"--since: expected 2h, 30m, 7d or an ISO time, got {text!r}")
        raise typer.Exit(2) from None


def print_stability_notes(rows: Iterable[dict[str, Any]], name: str = "feature") -> None:
    """Beneath a capability table: why each process marked not stable is not (the signals)."""
    for row in rows:
        for signal in row.get("signals") or []:
            console.print(f"{row.get(name)}: not stable: {signal}", markup=False, highlight=False, soft_wrap=True)
