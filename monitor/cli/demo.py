"""``monitor demo`` and ``monitor sim``: the simulated cell, with and without the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from monitor.cli._app import app, console, emit_json, emit_rows, err_console
from monitor.daemon import install_signal_handlers
from monitor.demo import CellServers, DemoOptions, DemoResult, run_demo
from monitor.errors import MonitorError
from monitor.events import HubEvent
from monitor.sim import SimCell, list_scenarios, load_scenario, run_cell

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
    webhook: Annotated[list[str] | None, typer.Option(help="Also POST alerts to this URL (repeatable).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with the result at the end, nothing else.")
    ] = False,
) -> None:
    """Run two simulated machines making a batch, behind real OPC UA and MTConnect servers on
    loopback, watched by the real daemon. Prints progress and each alert as it fires, then per
    drifting feature: where it was flagged, the first out-of-tolerance part and the lead in parts."""
    if mqtt is not None and not mqtt.rpartition(":")[2].isdigit():
        err_console.print(f"--mqtt: expected HOST:PORT, got {mqtt!r}")
        raise typer.Exit(2)
    options = DemoOptions(scenario, seed, parts, speed, keep_running, dashboard_port, mqtt=mqtt, webhooks=tuple(webhook or ()))
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


async def _demo(options: DemoOptions, folder: Path, quiet: bool) -> DemoResult:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=quiet
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
            asyncio.run(_shdr(shdr_replay, device_file, device, speed, mtconnect_port, max_gap))
            return
        asyncio.run(_sim(scenario, seed, parts, speed, opcua_port, mtconnect_port, wait))
    except MonitorError as exc:
        err_console.print(f"[bold red]sim failed:[/] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err_console.print(f"[bold red]sim failed:[/] {exc}; choose other ports with --opcua-port/--mtconnect-port")
        raise typer.Exit(1) from None


async def _sim(
    scenario: str, seed: int, parts: int | None, speed: float, opcua_port: int, mtconnect_port: int, wait: bool
) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    cell = SimCell(load_scenario(scenario), seed=seed, parts=parts)
    async with CellServers(cell, opcua_port=opcua_port, mtconnect_port=mtconnect_port) as servers:
        for machine in cell.machines:
            kind = servers.protocol[machine.id]
            where = servers.opcua.endpoint if kind == "opcua" and servers.opcua else getattr(servers.mtconnect, "url", "?")
            console.print(f"{machine.id}: {kind} {where}")
        if wait:
            console.print("servers ready; press Enter to start the batch")
            if not await _line_or_stop(stop):
                return
        console.print(f"simulating scenario {scenario!r} (seed {seed}) at {speed:g}x; Ctrl-C stops")
        await run_cell(cell, servers.publish, speed=speed, stop=stop)
        if not stop.is_set():
            console.print("batch finished; servers stay up until Ctrl-C")
            await stop.wait()


async def _line_or_stop(stop: asyncio.Event) -> bool:
    """Wait for a line on standard input without blocking the loop; False if stopped first.

    Standard input closed or at its end (``< /dev/null``, a service manager, a finished file) can
    never bring a line: the batch starts at once. Only pipes, sockets and terminals can be waited
    on by the event loop; a regular file or ``/dev/null`` is read directly (that never blocks)."""
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, ValueError, OSError):  # no standard input at all
        console.print("standard input is closed; starting the batch now")
        return True
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        line = sys.stdin.buffer.readline(4096)
        if not line:
            console.print("standard input is at its end (e.g. /dev/null); starting the batch now")
        return True
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        line_task = asyncio.ensure_future(reader.readline())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({line_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (line_task, stopped):
            task.cancel()
        if line_task.done() and not line_task.cancelled() and not line_task.result():
            console.print("standard input closed; starting the batch now")
        return not stop.is_set()
    finally:
        transport.close()


async def _shdr(log_file: Path, device_file: Path, device: str | None, speed: float, port: int, max_gap: float) -> None:
    """Serve a recorded SHDR log through our agent, paced by its own timestamps."""
    from adapters.mtconnect.agent import MtConnectAgent
    from adapters.mtconnect.devicemodel import devices_from_xml
    from adapters.mtconnect.shdr import replay_shdr

    stop = asyncio.Event()
    install_signal_handlers(stop)
    devices = devices_from_xml(await asyncio.to_thread(device_file.read_bytes))
    names = [d.name for d in devices]
    if not names or (device is not None and device not in names):
        raise MonitorError(f"{device_file} has devices {names}; choose one of them with --device")
    name = device or names[0]
    async with MtConnectAgent(devices, port=port) as agent:
        console.print(f"{name}: mtconnect {agent.url} (replaying {log_file} at {speed:g}x; Ctrl-C stops)")
        feeder = await replay_shdr(agent, name, log_file, speed=speed, stop=stop, max_gap_s=max_gap)
        if not stop.is_set():
            unknown = sum(feeder.unknown.values())
            console.print(f"log replayed{f' ({unknown} values not understood)' if unknown else ''}; agent stays up until Ctrl-C")
            if unknown:
                named = ", ".join(f"{key} ({n})" for key, n in feeder.unknown.most_common(12))
                more = len(feeder.unknown) - 12
                console.print(
                    f"not in {device_file.name}'s device {name}: {named}{f' and {more} more' if more > 0 else ''}",
                    soft_wrap=True,
                    highlight=False,
                )
            if feeder.capped_gaps:
                console.print(
                    f"{feeder.capped_gaps} idle stretch(es) longer than --max-gap {max_gap:g} s shortened "
                    f"({feeder.skipped_s:,.0f} s of log time not waited for)",
                    highlight=False,
                )
            await stop.wait()
