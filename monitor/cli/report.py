"""``monitor report``: the batch report of one program as one self-contained HTML file (and a CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monitor.cli._app import app, console, emit_json, escape
from monitor.cli.core import _DEFAULT_SITE, CellOption, ConfigOption, JsonOption, _fail
from monitor.errors import MonitorError

__all__ = ["report"]


@app.command()
def report(
    program: Annotated[str, typer.Option("--program", "-p", help="Program name, as in its program file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (opens offline, charts embedded).")],
    config: ConfigOption = _DEFAULT_SITE,
    machine: Annotated[str | None, typer.Option("--machine", "-m", help="Only parts made on this machine.")] = None,
    cell: CellOption = None,
    first: Annotated[int | None, typer.Option("--from", help="First part number of the batch.")] = None,
    last: Annotated[int | None, typer.Option("--to", help="Last part number of the batch.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write every measurement of every source as CSV.")] = None,
    measurements_out: Annotated[
        Path | None,
        typer.Option(
            "--measurements-csv", help="Also write every measurement (probe, CMM, gauges; re-measurements too), one row each."
        ),
    ] = None,
    lot: Annotated[str | None, typer.Option("--lot", help="Lot or batch id printed in the header.")] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="Customer (overrides report.customer).")] = None,
    customer_part: Annotated[
        str | None, typer.Option("--customer-part", help="Customer part number (overrides report.customer_part_number).")
    ] = None,
    drawing: Annotated[str | None, typer.Option("--drawing", help="Drawing number (overrides report.drawing).")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Drawing revision (overrides report.revision).")] = None,
    index: Annotated[
        str | None, typer.Option("--index", help="Judge features by ppk or cpk (overrides report.required_index).")
    ] = None,
    required: Annotated[
        float | None, typer.Option("--required", min=0.01, help="The index each feature must reach, e.g. 1.33 or 1.67.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the batch report a first-article or PPAP review reads: the part, drawing and lot; per
    feature (by balloon number) every measurement source (probe, CMM, gauge) with its resolution and
    repeatability study, the probe-vs-CMM bias, run chart with tolerance and control limits,
    histogram, capability (Cp, Cpk, Pp, Ppk with 95% intervals, normality, stability) and a verdict
    against the required Ppk or Cpk; out-of-tolerance parts with their disposition, alerts and
    what was done, tools, sign-off lines. Prints to a clean PDF from any browser."""
    from monitor.config import load_site
    from monitor.queries import cell_machines
    from monitor.store import open_store

    try:
        from monitor.report import summary, write_report

        site = load_site(config)
        with open_store(site.store_location, read_only=True) as store:
            result = write_report(
                site,
                store,
                program,
                out,
                machine=machine,
                cell=(cell, cell_machines(store, site, cell)) if cell else None,
                first_part=first,
                last_part=last,
                csv_out=csv_out,
                measurements_out=measurements_out,
                lot=lot,
                customer=customer,
                customer_part_number=customer_part,
                drawing=drawing,
                revision=revision,
                required_index=index,
                required=required,
            )
    except MonitorError as exc:
        raise _fail(exc) from None
    if as_json:
        emit_json({**summary(result), "html": str(out), "csv": str(csv_out) if csv_out else None})
        return
    counts = result.status_counts()
    oot = sum(len(f.out_of_tolerance) for f in result.features)
    console.print(
        f"report for program [bold]{escape(result.program)}[/] written to {escape(str(out))}: {len(result.parts)} parts "
        f"({counts['complete']} complete), {len(result.features)} features, {oot} out-of-tolerance values, "
        f"{len(result.alerts)} alerts" + (f"; CSV {escape(str(csv_out))}" if csv_out else ""),
        markup=True,
        highlight=False,
        soft_wrap=True,
    )
