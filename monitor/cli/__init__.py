"""The ``monitor`` command line. Each command parses arguments, calls one library function and
renders the result; the commands live in the modules imported below, one concern each."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import typer

from monitor.cli._app import APP_SETTINGS, app

__all__ = ["app", "app_for", "main"]

_COMMAND_MODULES = [
    "monitor.cli.core",
    "monitor.cli.actions",
    "monitor.cli.offsets",
    "monitor.cli.demo",
    "monitor.cli.status",
    "monitor.cli.discover",
    "monitor.cli.opcua",
    "monitor.cli.report",
    "monitor.cli.tune",
    "monitor.cli.analyze",
    "monitor.cli.service",
    "monitor.cli.store",
    "monitor.cli.grafana",
    "monitor.cli.inspection",
]
for _name in _COMMAND_MODULES:
    importlib.import_module(_name)


def main() -> None:
    """Console-script entry point (``monitor`` and ``python -m monitor``): this process is the command,
    which ``monitor run`` may execute again with a tuned allocator (:mod:`monitor.allocator`); a
    program that calls :data:`app` itself is never replaced."""
    from monitor import allocator

    allocator.own_process = True
    app_for(sys.argv[1:])()


def app_for(args: Sequence[str]) -> typer.Typer:
    """The application that runs ``args``: :data:`app` with only the command (or command group)
    ``args`` names, when they start with one (none for ``--version``); else :data:`app` itself
    (``--help``, no command, or a name that is none: the list and click's "did you mean" need
    every command).

    Typer builds the options of every registered command on each call (~50 ms for 25 commands),
    and a command's run needs its own only. The one-command application has :data:`app`'s
    settings and callback, so its usage lines, help and errors are the same."""
    name = args[0] if args else ""
    commands = [c for c in app.registered_commands if _command_name(c) == name]
    groups = [g for g in app.registered_groups if _group_name(g) == name]
    if name != "--version" and not (commands or groups):  # --version prints before any command is looked at
        return app
    one = typer.Typer(**APP_SETTINGS)
    one.registered_callback = app.registered_callback
    one.registered_commands = commands
    one.registered_groups = groups
    return one


def _command_name(command: typer.models.CommandInfo) -> str:
    """The name typer gives a registered command: its own, or its function's with - for _."""
    if command.name:
        return command.name
    return command.callback.__name__.lower().replace("_", "-") if command.callback else ""


def _group_name(group: typer.models.TyperInfo) -> str:
    """The name typer gives a command group: the one given to ``add_typer``, else its own app's."""
    for name in (group.name, group.typer_instance.info.name if group.typer_instance else None):
        if isinstance(name, str):
            return name
    return ""
