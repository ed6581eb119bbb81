"""Recording and listing what people did: ``monitor act`` and ``monitor actions``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from monitor.cli._app import app, console, emit_json, emit_rows
from monitor.cli.core import _DEFAULT_SITE, ConfigOption, JsonOption, _fail
from monitor.errors import MonitorError

__all__ = ["act", "actions"]

_KINDS = {  # the values of monitor.model.ActionKind (loaded when the command runs, not for --help)
    "offset": "offset_applied",
    "offset_applied": "offset_applied",
    "tool": "tool_changed",
    "tool_changed": "tool_changed",
    "quarantine": "part_quarantined",
    "part_quarantined": "part_quarantined",
    "scrap": "part_scrapped",
    "part_scrapped": "part_scrapped",
    "rework": "part_reworked",
    "part_reworked": "part_reworked",
    "accept": "part_accepted",
    "part_accepted": "part_accepted",
    "comment": "comment",
}
_COLUMNS = [
    ("time", "time"),
    ("machine", "machine"),
    ("program", "program"),
    ("feature", "feature"),
    ("part_number", "part"),
    ("user", "user"),
    ("role", "role"),
    ("text", "what"),
    ("condition_id", "condition"),
]


@app.command()
def act(
    kind: Annotated[
        str,
        typer.Argument(
            help="offset (offset applied), tool (tool changed), comment, or what became of a part: quarantine, scrap, "
            "rework, accept (on concession; engineers)."
        ),
    ],
    config: ConfigOption = _DEFAULT_SITE,
    condition: Annotated[
        str | None, typer.Option("--condition", help="The condition (alert id) it answers; names machine, program, feature.")
    ] = None,
    machine: Annotated[str | None, typer.Option(help="The machine (when no --condition).")] = None,
    program: Annotated[str | None, typer.Option(help="The program (when no --condition).")] = None,
    feature: Annotated[str | None, typer.Option(help="The feature (when no --condition).")] = None,
    change: Annotated[float | None, typer.Option(help="Offset change in mm, signed (offset).")] = None,
    old: Annotated[float | None, typer.Option(help="The register's value before (offset).")] = None,
    new: Annotated[float | None, typer.Option(help="The register's value after (offset).")] = None,
    axis: Annotated[str | None, typer.Option(help="Which axis of a position feature (x, y, z).")] = None,
    tool: Annotated[str | None, typer.Option(help="The tool (T12) whose register changed, or that was changed.")] = None,
    part: Annotated[
        int | None,
        typer.Option(help="The part number it concerns (quarantine, scrap, rework, accept: the latest part of that number)."),
    ] = None,
    part_key: Annotated[
        str | None, typer.Option("--part-key", help="The stored part's key (`monitor parts --json`): names one part exactly.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    comment: Annotated[str, typer.Option("--comment", "-m", help="Free text.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Record what you did: an offset applied, a tool changed, a comment, or what became of a part.

    A part's disposition (quarantine, scrap, rework, accept on concession) is recorded on that part
    and printed by `monitor report` beside each of its out-of-tolerance values:
    "monitor act scrap --machine vmc1 --program O1001 --part 17 --reason 'bore 10.021 over'".
    Operators may quarantine; scrap, rework and accept are engineers' decisions.

    Goes to the running daemon (the one writer; it tells the detectors to expect the step an offset
    or tool change makes), else to the store. An offset applied without --tool or register details
    is on the register the program file names for the feature (or the machine kind's default):
    "monitor act offset --condition ID --change -0.004". Set MONITOR_TOKEN to your token when the site
    names users."""
    import asyncio

    from monitor.acknowledge import TOKEN_ENV, change_alert
    from monitor.commands import RecordAction
    from monitor.config import load_site
    from monitor.model import ActionKind
    from monitor.queries import action_row
    from monitor.users import cli_user

    kind_value = _KINDS.get(kind.replace("-", "_"))
    if kind_value is None:
        raise _fail(MonitorError(f"unknown action {kind!r}; use offset, tool, comment, quarantine, scrap, rework or accept"))
    action_kind = ActionKind(kind_value)
    try:
        site = load_site(config)
        command = RecordAction(
            kind=action_kind,
            user=cli_user(site, os.environ.get(TOKEN_ENV)),
            alert_id=condition,
            machine=machine,
            program=program,
            feature=feature,
            axis=axis,
            change=change,
            old_value=old,
            new_value=new,
            tool=tool,
            part_number=part,
            part_key=part_key,
            reason=reason,
            comment=comment,
        )
        outcome, via = asyncio.run(change_alert(site, command))
    except MonitorError as exc:
        raise _fail(exc) from None
    assert outcome.action is not None
    row = action_row(outcome.action)
    if as_json:
        emit_json({**row, "via": via})
    else:
        console.print(
            f"{row['machine']} {row['feature'] or ''}: {row['text']} by {row['user']} ({row['role']}; {via})", highlight=False
        )


@app.command()
def actions(
    config: ConfigOption = _DEFAULT_SITE,
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    program: Annotated[str | None, typer.Option(help="Only this program.")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature.")] = None,
    condition: Annotated[str | None, typer.Option("--condition", help="Only those answering this condition.")] = None,
    last: Annotated[int, typer.Option(help="The most recent N.", min=1)] = 100,
    as_json: JsonOption = False,
) -> None:
    """List what people did: acknowledgements, offsets applied, tools changed, parts quarantined,
    scrapped, reworked or accepted."""
    from monitor.queries import action_row, open_site_store

    try:
        with open_site_store(config) as store:
            found = store.actions(machine=machine, program=program, feature=feature, condition_id=condition, last=last)
            n = emit_rows((action_row(a) for a in found), as_json=as_json, columns=_COLUMNS, title="actions")
    except MonitorError as exc:
        raise _fail(exc) from None
    if not as_json and n == 0:
        console.print("no actions")
