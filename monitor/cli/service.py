"""``monitor service``: the systemd unit for a site file, printed or installed."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from monitor.cli._app import app, console, err_console
from monitor.cli.core import _DEFAULT_SITE, ConfigOption, _fail
from monitor.errors import MonitorError

__all__ = ["service"]


def _this_monitor() -> Path:
    """The ``monitor`` script of this installation (the virtual environment's, not a shim on PATH)."""
    script = Path(sys.executable).parent / "monitor"
    if script.exists():
        return script
    found = shutil.which("monitor")
    return Path(found) if found else script


class _SecretsElsewhere(dict[str, str]):
    """The environment, where a variable the site file names but this shell lacks (a token the
    service reads from its environment file) stands in as a placeholder instead of an error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(environ)
        self.missing: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        self.missing.add(key)
        return f"<{key} from the environment file>"


@app.command()
def service(
    config: ConfigOption = _DEFAULT_SITE,
    install: Annotated[
        bool, typer.Option("--install", help="Write the unit and its sysusers.d entry under --root instead of printing.")
    ] = False,
    root: Annotated[Path, typer.Option(help="Install under this folder (a package staging root); default /.")] = Path("/"),
    user: Annotated[str | None, typer.Option(help="System user that runs the daemon (default: the unit's name).")] = None,
    name: Annotated[
        str | None, typer.Option(help="Unit name without .service, also its user and state folder (default: cnc-monitor).")
    ] = None,
    watchdog: Annotated[int, typer.Option(min=5, help="WatchdogSec: restart when the daemon's loop is silent this long.")] = 30,
) -> None:
    """Print (or install) the systemd unit that runs `monitor run -c SITE` as a service.

    The unit runs the daemon as an unprivileged system user with a state directory under
    /var/lib, sandboxed; systemd waits for it to be ready, restarts it when it fails or its
    watchdog goes silent, reloads it with SIGHUP and sends its log to the journal.
    See docs/service.md."""
    from monitor.config import load_site
    from monitor.service.unit import install_service, layout_for_site, render_unit

    environ = _SecretsElsewhere(os.environ)
    try:
        site = load_site(config, environ)
    except MonitorError as exc:
        raise _fail(exc) from None
    try:
        layout = layout_for_site(site, executable=_this_monitor(), user=user, name=name, watchdog_s=watchdog)
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] --name: {exc}", highlight=False)
        raise typer.Exit(2) from None
    notes = list(layout.notes)
    if environ.missing:
        notes.append(f"set {', '.join(sorted(environ.missing))} in {layout.environment_file} (mode 0600) for the service")
    for note in notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if not install:
        sys.stdout.write(render_unit(layout))
        return
    try:
        written = install_service(layout, root=root)
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] cannot install the unit under {root}: {exc}; run as root or choose --root")
        raise typer.Exit(1) from None
    for path in written:
        console.print(f"wrote {path}")
    console.print(
        f"next: systemd-sysusers && systemctl daemon-reload && systemctl enable --now {layout.name}"
        f"   (logs: journalctl -u {layout.name} -f)",
        highlight=False,
        soft_wrap=True,
    )
