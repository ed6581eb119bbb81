"""``monitor import`` (CMM and gauge result files into the store, joined to parts) and
``monitor inspections`` (what was imported, and what is still unmatched)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from monitor.cli._app import app, console, emit_json, emit_rows, err_console, escape
from monitor.cli.core import _DEFAULT_SITE, ConfigOption, JsonOption, _fail
from monitor.errors import MonitorError

if TYPE_CHECKING:
    from monitor.inspection.importer import FileOutcome

__all__ = ["import_", "inspections"]


@app.command("import")
def import_(
    files: Annotated[
        list[Path], typer.Argument(help="QIF 3 Results files (.qif) or CSV exports, and any QIF plan they reference.")
    ],
    config: ConfigOption = _DEFAULT_SITE,
    machine: Annotated[str | None, typer.Option("--machine", "-m", help="The machine that made these parts.")] = None,
    program: Annotated[
        str | None, typer.Option("--program", "-p", help="Their program (its inspection.csv reads CSV files).")
    ] = None,
    part: Annotated[int | None, typer.Option("--part", help="The part number, for a file of one part's results.")] = None,
    serial: Annotated[str | None, typer.Option("--serial", help="The serial number, for a file of one part's results.")] = None,
    units: Annotated[
        str | None, typer.Option("--units", help="Length unit of QIF files without FileUnits (QIF says metres), e.g. mm.")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Import a file imported before again, replacing what it brought.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Import inspection results (QIF 3 Results, CSV) and attach each part's results to its part record.

    Results are matched by serial number (the part.id the probing macro wrote), by part number, or
    by time (the part that ended last before the inspection, within inspection.match_window_s);
    what cannot be matched is kept and listed, and tried again later. Importing a file twice changes
    nothing. A file that is malformed, hostile or invalid against inspection.qif_schema is refused
    with its name and the reason (exit code 1); the other files are imported."""
    from monitor.config import load_site
    from monitor.inspection.importer import ImportOptions, import_files
    from monitor.inspection.views import unmatched_rows
    from monitor.store import open_store

    options = ImportOptions(machine=machine, program=program, part=part, serial=serial, units=units, replace=replace)
    try:
        site = load_site(config)
        with open_store(site.store_location) as store:
            summary = import_files(site, store, files, options, progress=None if as_json else _print_file)
            waiting = unmatched_rows(store)
    except MonitorError as exc:
        raise _fail(exc) from None
    if as_json:
        emit_json({**summary.as_dict(), "unmatched": waiting})
    else:
        for r in summary.rematched:
            console.print(f"  earlier results {escape(r.where)} now matched to {escape(r.part or '')}", highlight=False)
        mine = {r.key for f in summary.files for r in f.results if r.part_key is None}
        now = [{**w, "file": Path(w["file"]).name} for w in waiting if w["key"] in mine]
        if now:
            emit_rows(
                now,
                as_json=False,
                columns=[("file", "file"), ("where", "results"), ("serial", "serial"), ("actuals", "actuals"), ("reason", "why")],
                title=f"{len(now)} results of these files not matched to a part (kept, tried again later)",
            )
        if len(waiting) > len(now):
            console.print(f"{len(waiting) - len(now)} earlier results still wait for their part: monitor inspections --unmatched")
        console.print(f"{len(summary.files)} file(s) in {summary.seconds:.2f} s", highlight=False)
    if summary.refused:
        raise typer.Exit(1)


def _print_file(f: FileOutcome) -> None:
    name = escape(f.path)
    if f.state == "refused":
        err_console.print(f"[bold red]refused[/] {escape(f.error or name)}", highlight=False, soft_wrap=True)
        return
    if f.state == "unchanged":
        console.print(f"[dim]unchanged[/] {name}: " + escape("; ".join(f.warnings)), highlight=False, soft_wrap=True)
        return
    if f.state == "plan":
        console.print(f"[green]plan[/] {name}: characteristics kept for results that reference it", highlight=False)
    else:
        methods: dict[str, int] = {}
        for r in f.results:
            if r.method is not None:
                methods[str(r.method)] = methods.get(str(r.method), 0) + 1
        how = ", ".join(f"{n} by {m}" for m, n in methods.items())
        console.print(
            f"[green]imported[/] {name}: {len(f.results)} part results, {f.actuals} actuals ({f.new_actuals} new); "
            f"matched {f.matched}" + (f" ({how})" if how else "") + f", unmatched {len(f.results) - f.matched}",
            highlight=False,
            soft_wrap=True,
        )
        for r in f.results:
            if r.part is not None:
                console.print(f"  {escape(r.where)} -> {escape(r.part)}", highlight=False)
        if f.unmapped:
            shown = ", ".join(f.unmapped[:12]) + (f" and {len(f.unmapped) - 12} more" if len(f.unmapped) > 12 else "")
            console.print(
                f"  [yellow]not mapped to a feature[/] (measured_by in the program file): {escape(shown)}",
                highlight=False,
                soft_wrap=True,
            )
    for w in f.warnings:
        console.print(f"  [yellow]warning[/] {escape(w)}", highlight=False, soft_wrap=True)


@app.command()
def inspections(
    config: ConfigOption = _DEFAULT_SITE,
    machine: Annotated[str | None, typer.Option("--machine", "-m", help="Only parts of this machine.")] = None,
    program: Annotated[str | None, typer.Option("--program", "-p", help="Only parts of this program.")] = None,
    part: Annotated[int | None, typer.Option("--part", help="Only this part number.")] = None,
    unmatched: Annotated[
        bool, typer.Option("--unmatched", help="Instead: results not matched to a part (tried again first), with the reason.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Imported inspection actuals per part (characteristic, feature and source it measures, value,
    limits, verdict, file), or with --unmatched the results still waiting for their part."""
    from monitor.config import load_site
    from monitor.inspection.importer import rematch
    from monitor.inspection.views import actual_rows, inspection_values, unmatched_rows
    from monitor.store import open_store

    try:
        site = load_site(config)
        if unmatched:
            with open_store(site.store_location) as store:
                rematch(site, store)
                rows = unmatched_rows(store)
            n = emit_rows(
                rows,
                as_json=as_json,
                columns=[
                    ("file", "file"),
                    ("where", "results"),
                    ("serial", "serial"),
                    ("part_number", "part"),
                    ("time", "time"),
                    ("actuals", "actuals"),
                    ("reason", "why"),
                ],
                title="results not matched to a part",
            )
            if n == 0 and not as_json:
                console.print("every imported result is matched to a part")
            return
        with open_store(site.store_location, read_only=True) as store:
            parts = store.parts(machine=machine, program=program, first_part=part, last_part=part)
            rows = actual_rows(inspection_values(site, store, parts))
    except MonitorError as exc:
        raise _fail(exc) from None
    n = emit_rows(
        rows,
        as_json=as_json,
        columns=[
            ("machine", "machine"),
            ("program", "program"),
            ("part", "part"),
            ("characteristic", "characteristic"),
            ("feature", "feature"),
            ("source", "source"),
            ("value", "value"),
            ("lower", "lower"),
            ("upper", "upper"),
            ("status", "status"),
            ("in_tolerance", "in tol."),
        ],
        title="inspection results",
    )
    if n == 0 and not as_json:
        console.print("no inspection results imported for these parts (monitor import FILE...)")
