"""``monitor tune``: chart limits for a target in-control ARL, and the ARL of given limits."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from monitor.cli._app import app, console, emit_json, err_console
from monitor.errors import DetectionError

__all__ = ["Chart", "tune"]


class Chart(StrEnum):
    """Charts ``monitor tune`` can size."""

    EWMA = "ewma"
    CUSUM = "cusum"


@app.command()
def tune(
    chart: Annotated[Chart, typer.Option("--chart", help="ewma or cusum (both two-sided, on standardized values).")],
    lam: Annotated[float, typer.Option("--lambda", help="EWMA weight of the newest value, in (0, 1].")] = 0.2,
    k: Annotated[float, typer.Option("--k", help="CUSUM reference value k, in sigmas.")] = 0.5,
    arl0: Annotated[float | None, typer.Option("--arl0", help="Target in-control ARL: solve the limit for it.")] = None,
    limit: Annotated[float | None, typer.Option("--limit", help="EWMA width L (asymptotic sigmas) to evaluate.")] = None,
    h: Annotated[float | None, typer.Option("--h", help="CUSUM decision interval h (sigmas) to evaluate.")] = None,
    fir: Annotated[bool, typer.Option("--fir", help="CUSUM with fast initial response (h/2 head start).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the limit that gives an in-control ARL (--arl0), or the ARLs of a given limit (--limit/--h).

    Zero-state ARLs from a Markov-chain approximation (Lucas & Saccucci 1990 for EWMA, Brook &
    Evans 1972 for CUSUM), for mean shifts in sigmas."""
    from monitor.detect.arl import arl_table

    given = limit if chart is Chart.EWMA else h
    wrong = h if chart is Chart.EWMA else limit
    if wrong is not None:
        err_console.print(f"[bold red]error:[/] use {'--limit' if chart is Chart.EWMA else '--h'} with --chart {chart.value}")
        raise typer.Exit(2)
    try:
        table = arl_table(chart.value, lam=lam, k=k, limit=given, arl0=arl0, fir=fir)
    except DetectionError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        emit_json(table)
        return
    _render(table)


def _render(table: dict[str, Any]) -> None:
    from rich.table import Table

    if table["chart"] == "ewma":
        head = f"EWMA  lambda = {table['lambda']:g}   L = {table['L']:.4f}   in-control ARL = {table['arl0']:.1f}"
    else:
        fir = "  (FIR head start h/2)" if table.get("fir") else ""
        head = f"CUSUM  k = {table['k']:g}   h = {table['h']:.4f}   in-control ARL = {table['arl0']:.1f}{fir}"
    out = Table(title=head, header_style="bold")
    out.add_column("shift (sigma)", justify="right")
    out.add_column("ARL (parts)", justify="right")
    for shift, arl in table["arl"].items():
        out.add_row(shift, f"{arl:.2f}")
    console.print(out)
