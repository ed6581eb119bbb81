"""The ``monitor`` command line. Each command parses arguments, calls one library function and
renders the result; the commands live in the modules imported below, one concern each."""

from __future__ import annotations

import importlib

from monitor.cli._app import app

__all__ = ["app", "main"]

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
    app()
