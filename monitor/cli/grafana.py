"""``monitor grafana``: dashboards and provisioning files for Grafana, ready to import or provision."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from monitor.cli._app import app, console, err_console

__all__ = ["grafana"]


@app.command()
def grafana(
    out: Annotated[Path, typer.Option(help="Folder to write dashboards/ and provisioning/ into.")] = Path("grafana"),
    influx_url: Annotated[str, typer.Option(help="URL of the InfluxDB the sink writes to.")] = "http://localhost:8086",
    org: Annotated[str, typer.Option(help="InfluxDB organisation.")] = "plant",
    bucket: Annotated[str, typer.Option(help="InfluxDB bucket (sinks.influx.bucket).")] = "cnc",
    prometheus_url: Annotated[
        str, typer.Option(help="URL of a victoria-metrics (PromQL) that receives the same points.")
    ] = "http://localhost:8428",
    dashboards_path: Annotated[
        str, typer.Option(help="Where Grafana will find the dashboards (the provider's options.path).")
    ] = "/var/lib/grafana/dashboards/cnc-monitor",
) -> None:
    """Write Grafana dashboards for the points the InfluxDB sink writes (one for InfluxDB with Flux,
    one for victoria-metrics with PromQL) and the provisioning files for both data sources.

    Import a dashboard JSON in Grafana's UI (it asks for the data source), or copy
    provisioning/ into /etc/grafana/provisioning and dashboards/ to --dashboards-path.
    See docs/grafana.md."""
    from monitor.grafana import provisioning_files

    files = provisioning_files(
        dashboards_path=PurePosixPath(dashboards_path),
        influx_url=influx_url,
        influx_org=org,
        influx_bucket=bucket,
        prometheus_url=prometheus_url,
    )
    try:
        for relative, text in files.items():
            path = out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            console.print(f"wrote {path}", highlight=False)
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] cannot write into {out}: {exc}", highlight=False)
        raise typer.Exit(1) from None
