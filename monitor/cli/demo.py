"""``monitor demo`` and ``monitor sim``: the simulated cell, with and without the daemon."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from monitor.cli._app import app, console, emit_json, emit_rows, err_console, escape, rich_console
from monitor.errors import MonitorError

if TYPE_CHECKING:  # asyncio, the simulation, the servers and the daemon load when a command runs, not for --help
    import asyncio

    from monitor.demo import DemoOptions, DemoResult
    from monitor.events import HubEvent

__all__ = ["demo", "sim"]

ScenarioOption = Annotated[str, typer.Option(help="Scenario name (see `monitor sim --list`) or a scenario YAML file.")]


@app.command()
def demo(
    scenario: ScenarioOption = "demo",
    parts: Annotated[int | None, typer.Option(help="Parts per batch (default: the scenario's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulation; the same seed gives the same run.")] = 0,
    speed: Annotated[float, typer.Option(help="Time compression: simulated seconds per real second.")] = 400.0,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Keep servers, daemon and dashboard up after the batch.")
    ] = False,
    dashboard_port: Annotated[int, typer.Option(help="Dashboard port (0 = any free port).")] = 0,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the demo's site file and store here (default: a temporary folder).")
    ] = None,
    mqtt: Annotated[str | None, typer.Option(help="Also publish alerts to the MQTT broker at HOST:PORT.")] = None,
    closed_loop: Annotated[
        bool,
        typer.Option(
            "--closed-loop",
            help="Serve every machine over secure OPC UA with writable offsets and let the daemon apply the advice "
            "(offset.auto_apply); the end table compares parts out of tolerance with and without the loop.",
        ),
    ] = False,
    webhook: Annotated[list[str] | None, typer.Option(help="Also POST alerts to this URL (repeatable).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with the result at the end, nothing else.")
    ] = False,
) -> None:
    """Run two simulated machines making a batch, behind real OPC UA and MTConnect servers on
    loopback, watched by the real daemon. Prints progress and each alert as it fires, then per
    drifting feature: where it was flagged, the first out-of-tolerance part and the lead in parts."""
    import asyncio
    import logging
    import tempfile

    if mqtt is not None and not mqtt.rpartition(":")[2].isdigit():
        err_console.print(f"--mqtt: expected HOST:PORT, got {mqtt!r}")
        raise typer.Exit(2)
    from monitor.demo import DemoOptions

    options = DemoOptions(
        scenario,
        seed,
        parts,
        speed,
        keep_running,
        dashboard_port,
        mqtt=mqtt,
        webhooks=tuple(webhook or ()),
        closed_loop=closed_loop,
    )
    # the demo prints alerts itself; library warnings would only clutter the progress display
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.ExitStack() as stack:
        folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitor-demo-")))
        folder.mkdir(parents=True, exist_ok=True)
        try:
            result = asyncio.run(_demo(options, folder, as_json))
        except MonitorError as exc:
            err_console.print(f"[bold red]demo failed:[/] {exc}")
            raise typer.Exit(1) from None
    if as_json:
        emit_json(result.as_dict())
        return
    console.print(f"\n[bold]{result.parts}[/] parts, [bold]{result.alerts}[/] alert changes")
    if result.not_connected:
        console.print(
            "[yellow]the daemon was not connected to every simulated machine when the batch started[/] "
            "(their first parts may be missing): " + escape(", ".join(result.not_connected))
        )
    if result.not_read:
        console.print(
            f"[yellow]the daemon had not read everything the simulated servers published[/] "
            f"({len(result.not_read)} signals): " + escape("; ".join(result.not_read[:5]))
        )
    rows = [f.as_dict() for f in result.features if f.drift_starts is not None or f.first_out_of_tolerance is not None]
    emit_rows(
        rows,
        as_json=False,
        columns=[
            ("machine", "machine"),
            ("program", "program"),
            ("feature", "feature"),
            ("drift_starts", "drift starts at part"),
            ("flagged_at", "flagged at part"),
            ("first_out_of_tolerance", "first part out of tolerance"),
            ("lead", "lead (parts)"),
        ],
        title="drifting features: detection against the simulation's ground truth",
    )
    if result.closed_loop is not None:
        loop = result.closed_loop
        console.print(
            f"parts out of tolerance: without the loop [bold]{loop['out_of_tolerance_without']}[/], with it "
            f"[bold]{loop['out_of_tolerance_with']}[/] ({loop['offsets_applied']} offsets applied on the controllers, "
            f"{loop['offsets_refused']} refused; `monitor actions` lists them)"
        )


async def _demo(options: DemoOptions, folder: Path, quiet: bool) -> DemoResult:
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from monitor.daemon import install_signal_handlers
    from monitor.demo import run_demo

    stop = asyncio.Event()
    install_signal_handlers(stop)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=rich_console(),
        disable=quiet,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(per_machine: dict[str, int], totals: dict[str, int]) -> None:
        for machine, n in per_machine.items():
            if machine not in tasks:
                tasks[machine] = progress.add_task(f"{machine} parts", total=totals.get(machine))
            progress.update(tasks[machine], completed=n)

    def on_event(event: HubEvent) -> None:
        if quiet or event.kind != "alert":
            return
        a = event.data
        colour = {"watch": "yellow", "warning": "dark_orange", "critical": "red"}.get(a["severity"], "white")
        text = escape(f"{a['state']:12} {a['machine']} {a['program']} part {a['part_number']}: {a['message']}")
        progress.console.print(
            f"[{colour}]{a['severity'].upper():8}[/] {text}",
            highlight=False,
            markup=True,
        )

    def on_started(url: str | None) -> None:
        if url and not quiet:
            keep = "" if options.keep_running else " (until the batch ends; --keep-running keeps it up)"
            progress.console.print(f"dashboard: {url}{keep}")

    with progress:
        return await run_demo(options, folder, on_event=on_event, on_progress=on_progress, on_started=on_started, stop=stop)


@app.command()
def sim(
    scenario: ScenarioOption = "demo",
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 0,
    parts: Annotated[int | None, typer.Option(help="Parts per batch (default: the scenario's).")] = None,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 10.0,
    opcua_port: Annotated[int, typer.Option(help="Port of the simulated OPC UA CNC.")] = 4840,
    mtconnect_port: Annotated[int, typer.Option(help="Port of the MTConnect agent.")] = 5000,
    wait: Annotated[
        bool, typer.Option("--wait", help="Start the batch only when a line arrives on standard input (Enter).")
    ] = False,
    shdr_replay: Annotated[
        Path | None, typer.Option(help="Instead of the simulated cell: replay this SHDR log through our MTConnect agent.")
    ] = None,
    device_file: Annotated[
        Path | None, typer.Option(help="With --shdr-replay: the MTConnect Devices document (probe XML) of the logged machine.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="With --shdr-replay: which device of the Devices document (default: the first).")
    ] = None,
    max_gap: Annotated[
        float,
        typer.Option(
            help="With --shdr-replay: wait at most this many seconds of log time between two lines (a log with a "
            "gap of days goes on); 0 = wait for every gap."
        ),
    ] = 60.0,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
) -> None:
    """Run the simulated cell alone behind its protocol servers until stopped (Ctrl-C), so that
    `monitor run -c configs/site.yaml` or any OPC UA / MTConnect client can read it."""
    import asyncio

    from monitor.demo import SimOptions, serve_cell, serve_shdr
    from monitor.sim import list_scenarios, load_scenario

    if list_:
        for name in list_scenarios():
            console.print(
                f"{name}: {load_scenario(name).description.strip().splitlines()[0] if load_scenario(name).description else ''}"
            )
        return
    try:
        if shdr_replay is not None:
            if device_file is None:
                err_console.print("--shdr-replay needs --device-file: the Devices document that describes the logged data items")
                raise typer.Exit(2)
            log_file, devices = shdr_replay, device_file
            asyncio.run(
                _with_stop(
                    lambda stop: serve_shdr(log_file, devices, device, speed, mtconnect_port, max_gap, stop=stop, say=_say)
                )
            )
            return
        options = SimOptions(scenario, seed, parts, speed, opcua_port, mtconnect_port, wait)
        asyncio.run(_with_stop(lambda stop: serve_cell(options, stop=stop, say=_say)))
    except MonitorError as exc:
        err_console.print(f"[bold red]sim failed:[/] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err_console.print(f"[bold red]sim failed:[/] {exc}; choose other ports with --opcua-port/--mtconnect-port")
        raise typer.Exit(1) from None


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False)


async def _with_stop(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``serve`` until it ends or SIGINT/SIGTERM sets its stop event."""
    import asyncio

    from monitor.daemon import install_signal_handlers

    stop = asyncio.Event()
    install_signal_handlers(stop)
    await serve(stop)
