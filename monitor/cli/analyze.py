"""``monitor analyze``: replay a measurements CSV through the drift detectors, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monitor.cli._app import (
    CAPABILITY_COLUMNS,
    app,
    capability_text,
    console,
    emit_json,
    emit_rows,
    err_console,
    print_stability_notes,
)
from monitor.errors import ConfigError, ConfigIssue, MonitorError

__all__ = ["analyze"]


@app.command()
def analyze(
    measurements: Annotated[Path, typer.Argument(help="CSV with a part column and one column per probe signal.")],
    program: Annotated[Path, typer.Option("--program", "-p", help="The part-program file (features, detection).")],
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object: alerts, out_of_tolerance, capability, features, skipped_rows."),
    ] = False,
    step: Annotated[
        list[str] | None,
        typer.Option(
            "--step",
            metavar="FEATURE@PART",
            help="A recorded offset change of FEATURE took effect at PART (repeatable): expected, not a drift.",
        ),
    ] = None,
) -> None:
    """Run the same detectors as the daemon over measured parts, in file order.

    Prints the alerts (opened or escalated, with the part that raised them) and a capability
    summary. Rows with missing or non-numeric values are reported on stderr by line and skipped."""
    from monitor.config import load_program

    try:
        steps = _steps(step or [])
        from monitor.analyze import analyze_csv

        result = analyze_csv(measurements, load_program(program), steps=steps)
    except ConfigError as exc:
        err_console.print(f"[bold red]{len(exc.issues)} problem(s):[/]")
        for issue in exc.issues:
            err_console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except MonitorError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for bad in result.bad_rows:
        err_console.print(f"{measurements}:{bad.line}: skipped: {bad.reason}", markup=False, highlight=False)
    if as_json:
        emit_json(result.as_dict())
        return
    emit_rows(
        result.alerts,
        as_json=False,
        title=f"Alerts over {result.parts} parts",
        columns=[("part", "part"), ("feature", "feature"), ("kind", "kind"), ("severity", "severity"), ("message", "message")],
    )
    oot = ", ".join(f"{f}: part {p}" for f, p in result.out_of_tolerance.items() if p is not None)
    console.print(f"First out-of-tolerance part: {oot or 'none'}")
    from monitor.detect.capability import CONFIDENCE

    emit_rows(
        [capability_text({"feature": f, **c}) for f, c in result.capability.items()],
        as_json=False,
        title=f"Capability ({CONFIDENCE:.0%} intervals)",
        columns=[("feature", "feature"), *CAPABILITY_COLUMNS],
    )
    print_stability_notes([{"feature": f, **c} for f, c in result.capability.items()])


def _steps(items: list[str]) -> dict[str, list[int]]:
    """``["hole1_dia@31", ...]`` -> ``{"hole1_dia": [31]}``; raises ConfigError naming a bad item."""
    out: dict[str, list[int]] = {}
    issues = []
    for item in items:
        feature, at, part = item.rpartition("@")[0], "@", item.rpartition("@")[2]
        if not feature or not part.strip().isdigit():
            issues.append(ConfigIssue("--step", None, item, f"expected FEATURE{at}PART, e.g. hole1_dia@31"))
            continue
        out.setdefault(feature, []).append(int(part))
    if issues:
        raise ConfigError(issues)
    return out
