"""Writing a condition's offset advice to the controller: ``monitor offset apply``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from monitor.cli._app import app, console, emit_json, err_console
from monitor.cli.core import _DEFAULT_SITE, ConfigOption, JsonOption, _fail
from monitor.errors import MonitorError

__all__ = ["apply", "offset_app"]

offset_app = typer.Typer(
    name="offset",
    help="Apply a condition's offset advice on the controller over OPC UA (docs/offsets.md).",
    no_args_is_help=True,
)
app.add_typer(offset_app)


@offset_app.command()
def apply(
    condition: Annotated[str, typer.Argument(help="The condition (alert id) whose advice to apply: `monitor alerts --open`.")],
    config: ConfigOption = _DEFAULT_SITE,
    value: Annotated[
        float | None, typer.Option(help="Apply this change (mm, signed, the advice's convention) instead of the advice.")
    ] = None,
    axis: Annotated[str | None, typer.Option(help="Only this axis of a position's advice (x, y, z).")] = None,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Free text for the record.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Write the condition's current offset advice (or --value) to the machine's register.

    The running daemon re-checks the advice, waits until the machine is between parts, writes the
    register (read, add, write), reads it back and records who did what; a refusal (a limit, the
    machine still running, stale advice, an insecure connection, a read-back that differs) is
    recorded too and leaves the register as it was. Needs the engineer role: set MONITOR_TOKEN to
    your token when the site names users. Exits 1 when any register was refused."""
    import asyncio

    from monitor.acknowledge import apply_offset

    try:
        outcomes = asyncio.run(apply_offset(config, condition, value=value, axis=axis, comment=comment))
    except MonitorError as exc:
        raise _fail(exc) from None
    for outcome in outcomes:
        if as_json:
            emit_json(outcome)
        else:
            _print(outcome)
    if any(not o.get("applied") for o in outcomes):
        raise typer.Exit(1)


def _print(outcome: dict[str, Any]) -> None:
    action = outcome["action"]
    reg = (action.get("register") or {}).get("label", "?")
    if outcome.get("applied"):
        w = outcome["write"]
        console.print(
            f"{action['machine']} {action['feature']}: {reg} {w['change']:+.4f} mm applied: {w['old_value']:.4f} -> "
            f"{w['new_value']:.4f}, read back {w['read_back']:.4f} (part {action.get('part_number')}, "
            f"by {action['user']}, over {w['security']})",
            highlight=False,
        )
    else:
        r = outcome["refused"]
        err_console.print(
            f"{action['machine']} {action['feature']}: {reg} NOT applied ({r['reason']}): {r['message']}", highlight=False
        )
