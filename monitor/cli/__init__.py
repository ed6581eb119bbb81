"""The ``monitor`` command line. Each command parses arguments, calls one library function and
renders the result; the commands live in the modules listed below, one concern each, and a run
imports the module of its command alone (:func:`app_for`)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from monitor.cli import _app

if TYPE_CHECKING:
    from monitor.cli._app import app

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
"""Every module that registers commands, in the order the help lists them."""

_MODULE_OF: dict[str, str] = {
    **dict.fromkeys(("run", "check", "plant", "parts", "alerts", "ack"), "monitor.cli.core"),
    **dict.fromkeys(("act", "actions"), "monitor.cli.actions"),
    "offset": "monitor.cli.offsets",
    **dict.fromkeys(("demo", "sim"), "monitor.cli.demo"),
    **dict.fromkeys(("status", "reload"), "monitor.cli.status"),
    "discover": "monitor.cli.discover",
    "opcua-cert": "monitor.cli.opcua",
    "report": "monitor.cli.report",
    "tune": "monitor.cli.tune",
    "analyze": "monitor.cli.analyze",
    "service": "monitor.cli.service",
    **dict.fromkeys(("backup", "signals", "store"), "monitor.cli.store"),
    "grafana": "monitor.cli.grafana",
    **dict.fromkeys(("import", "inspections"), "monitor.cli.inspection"),
}
"""The module that registers each command and command group (a test holds it to what the modules
register): ``monitor NAME ...`` imports that one alone. The others are ~2,000 lines compiled at every
start where no bytecode is kept, and typer decorates each of their commands."""


def _load_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def __getattr__(name: str) -> Any:
    """:data:`app`, the whole application: every command module loaded first (what ``--help``, the
    tests and a program calling the application want)."""
    if name == "app":
        _load_all()
        return _app.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point (``monitor`` and ``python -m monitor``): this process is the command,
    which ``monitor run`` may execute again with a tuned allocator (:mod:`monitor.allocator`); a
    program that calls :data:`app` itself is never replaced."""
    from monitor import allocator

    allocator.own_process = True
    app_for(sys.argv[1:])()


def app_for(args: Sequence[str]) -> typer.Typer:
    """The application that runs ``args``: :data:`app` with only the command (or command group)
    ``args`` names, when they start with one (none for ``--version``), with only that command's
    module loaded; else :data:`app` itself, every module loaded (``--help``, no command, or a name
    that is none: the list and click's "did you mean" need every command).

    Typer builds the options of every registered command on each call (~50 ms for 25 commands),
    and a command's run needs its own only. The one-command application has :data:`app`'s
    settings and callback, so its usage lines, help and errors are the same."""
    name = args[0] if args else ""
    module = _MODULE_OF.get(name)
    if module is not None:
        importlib.import_module(module)
    elif name != "--version":
        _load_all()
    whole = _app.app
    commands = [c for c in whole.registered_commands if _command_name(c) == name]
    groups = [g for g in whole.registered_groups if _group_name(g) == name]
    if name != "--version" and not (commands or groups):  # --version prints before any command is looked at
        _load_all()
        return whole
    one = typer.Typer(**_app.APP_SETTINGS)
    one.registered_callback = whole.registered_callback
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
