"""The typer application and the rendering every command shares (rich tables or JSON lines).

Start-up is part of every command (``monitor --help`` included): nothing heavy is imported here.
The help is click's plain text (``rich_markup_mode=None``: typer's rich help loads rich's markdown
and traceback machinery, about half of the start-up CPU) and the rich consoles are made on their
first use, so a JSON command or ``--help`` never loads rich's console."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "APP_SETTINGS",
    "CAPABILITY_COLUMNS",
    "app",
    "capability_text",
    "console",
    "emit_json",
    "emit_rows",
    "err_console",
    "escape",
    "print_stability_notes",
    "rich_console",
]


class _Group(TyperGroup):
    """The ``monitor`` group, whose ``--help`` flags (its own and each command's) default to False.

    Typer coerces every option value that is not already a bool through a pydantic ``TypeAdapter``
    (typer 0.2x), and a help flag left out has the value None: so ``monitor parts --help`` (and
    every command run) loaded pydantic and built an adapter for a flag nobody gave, ~0.1 s before
    anything else. With False the flag is a bool and is not coerced."""

    def get_help_option(self, ctx: Any) -> Any:
        return _false_by_default(super().get_help_option(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _false_by_default(command.get_help_option(ctx))
        return command


def _false_by_default(option: Any) -> Any:
    if option is not None and option.default is None:
        option.default = False
    return option


APP_SETTINGS: dict[str, Any] = {
    "name": "monitor",
    "cls": _Group,
    "help": (
        "CNC process monitor for small-batch production: reads spindle, tool and probe data over "
        "OPC UA and MTConnect, ties it to parts, and flags drift in hole positions and sizes while "
        "parts are still in tolerance."
    ),
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}
"""The settings of :data:`app` (and of the one-command application :func:`monitor.cli.main` runs)."""

app = typer.Typer(**APP_SETTINGS)


@cache
def rich_console(stderr: bool = False) -> Console:
    """The one rich console of standard output (of standard error with ``stderr``), made on first
    use; what rich's progress bars take (they want the console itself, not :data:`console`)."""
    from rich.console import Console

    return Console(stderr=stderr)


class _LazyConsole:
    """Stands for :func:`rich_console`: every attribute is the real console's, made on first use."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(rich_console(self._stderr), name)


console = cast("Console", _LazyConsole(stderr=False))
err_console = cast("Console", _LazyConsole(stderr=True))


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


def escape(text: str) -> str:
    """``text`` with rich's markup escaped (:func:`rich.markup.escape`, loaded when first needed)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


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
    from rich.table import Table

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
