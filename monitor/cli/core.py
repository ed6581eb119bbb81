"""Core commands: run, check, parts, alerts, ack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    since_option,
)
from monitor.errors import ConfigError, MonitorError

__all__ = ["CellOption", "ConfigOption", "JsonOption", "ack", "alerts", "check", "parts", "plant", "run"]

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Site file (machines, store, sinks, programs folder).", envvar="MONITOR_CONFIG"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line, for scripts.")]
_DEFAULT_SITE = Path("configs/site.yaml")


def _fail(exc: MonitorError) -> typer.Exit:
    if isinstance(exc, ConfigError):
        err_console.print(f"[bold red]{len(exc.issues)} problem(s) in the configuration:[/]")
        for issue in exc.issues:
            err_console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
    else:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@app.command()
def run(
    config: ConfigOption = _DEFAULT_SITE,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error (default: the site's log_level).")] = None,
) -> None:
    """Run the monitor daemon: read every machine, track parts, detect drift, store and publish.

    Stops cleanly on Ctrl-C or SIGTERM (parts in progress are kept for the next start)."""
    import asyncio

    from monitor.allocator import use_tuned_allocator

    use_tuned_allocator()  # may run this command again in this process, with glibc's cache sized for parsing
    from monitor.config import load_site
    from monitor.daemon import event_loop_factory, run_daemon
    from monitor.logs import setup_logging

    try:
        site = load_site(config)
    except MonitorError as exc:
        raise _fail(exc) from None
    setup_logging(log_level or site.config.log_level, site.config.log_format)

    async def started(daemon: object) -> None:
        _settle_garbage_collector()
        url = getattr(daemon, "dashboard_url", None)
        console.print(
            f"monitor running for site [bold]{site.config.site}[/]: {len(site.machine_ids())} machine(s)"
            + (f", dashboard {url}" if url else "")
        )

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(run_daemon(site, on_start=started))
    except MonitorError as exc:
        raise _fail(exc) from None


_YOUNG_THRESHOLD = 10_000
"""Allocations between young-generation collections in the running daemon (Python's default: 700)."""


def _settle_garbage_collector() -> None:
    """Once the daemon runs: what start-up built (modules, configuration, detector state) moves out
    of the collector's sight, and the young generation is collected less often. At thousands of
    observations a second the default thresholds ran the collector over and over across a large
    heap that holds few cycles (about 1 us per observation in a 50-machine cell, 0.2 us after)."""
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, older, oldest)


@app.command()
def check(
    config: ConfigOption = _DEFAULT_SITE,
    connect: Annotated[
        bool,
        typer.Option("--connect", help="Also connect to every source and resolve every mapped signal; list what is missing."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate the site file and every program file; list every problem with file, line and key.

    Checks what it can without connecting: addresses, browse-path prefixes, the environment variables
    sources name, certificates and trust folders. With --connect it also connects to every source and
    resolves every mapped signal, per machine. Exit code 0 and a summary of what the daemon would
    watch, or 1 and all problems at once."""
    import asyncio

    from monitor.config import load_site
    from monitor.queries import check_summary

    try:
        summary = check_summary(config)
    except MonitorError as exc:
        raise _fail(exc) from None
    sources = []
    if connect:
        from monitor.preflight import connect_check

        sources = [s.as_dict() for s in asyncio.run(connect_check(load_site(config)))]
        summary["connect"] = sources
    if as_json:
        emit_json(summary)
        if any(not s["ok"] for s in sources):
            raise typer.Exit(1)
        return
    if connect:
        _print_connect(sources)
        if any(not s["ok"] for s in sources):
            raise typer.Exit(1)
    console.print(f"[green]OK[/] site [bold]{summary['site']}[/], store {summary['store']}")
    emit_rows(
        ({**m, "sources": ", ".join(m["sources"]), "signals": ", ".join(m["signals"])} for m in summary["machines"]),
        as_json=False,
        columns=[("machine", "machine"), ("sources", "source"), ("signals", "signals")],
        title="machines",
    )
    emit_rows(
        ({**p, "features": ", ".join(p["features"])} for p in summary["programs"]),
        as_json=False,
        columns=[("program", "program"), ("part_end", "part end"), ("features", "features"), ("file", "file")],
        title="programs",
    )
    if summary["sinks"]:
        console.print("sinks: " + ", ".join(summary["sinks"]))
    if summary["dashboard"]:
        console.print(f"dashboard: {summary['dashboard']}")


def _print_connect(sources: list[dict[str, Any]]) -> None:
    """Per source: connected or why not, how many signals resolved, and each missing one with the reason."""
    for s in sources:
        head = f"[bold]{s['machine']}[/] {s['source']}: "
        if s["error"]:
            console.print(head + f"[bold red]cannot connect:[/] {s['error']}", soft_wrap=True, highlight=False)
            continue
        total = len(s["resolved"]) + len(s["missing"])
        colour = "green" if s["ok"] else "bold red"
        console.print(head + f"[{colour}]{len(s['resolved'])} of {total} signals found[/]", highlight=False)
        for signal, why in s["missing"].items():
            console.print(f"  missing {signal}: {why}", soft_wrap=True, highlight=False)


CellOption = Annotated[
    str | None,
    typer.Option(help="Only this cell's machines (a shared PostgreSQL store holds several cells; see `monitor plant`)."),
]


@app.command()
def plant(config: ConfigOption = _DEFAULT_SITE, as_json: JsonOption = False) -> None:
    """Every cell in the store with its machines, the daemon that owns each machine and its health
    (a shared PostgreSQL store; a SQLite store shows this site's cell): who watches what, and whether
    its lease is live."""
    from monitor.config import load_site
    from monitor.queries import open_site_store, plant_rows

    try:
        site = load_site(config)
        with open_site_store(config) as store:
            rows = plant_rows(store, site)
    except MonitorError as exc:
        raise _fail(exc) from None
    if not as_json:
        for row in rows:
            row["alerts"] = " ".join(f"{n} {sev}" for sev, n in row["open_alerts"].items() if n) or "none"
            row["owner"] = row["owner"] or ("this site" if row["cell"] == site.config.site else "nobody")
            row["lease"] = ("live" if row["live"] else "EXPIRED") + (
                f", {row['heartbeat_age_s']:.0f} s ago" if row["heartbeat_age_s"] is not None else ""
            )
    emit_rows(
        rows,
        as_json=as_json,
        columns=[
            ("cell", "cell"),
            ("machine", "machine"),
            ("owner", "owning daemon"),
            ("lease", "lease"),
            ("parts", "parts"),
            ("alerts", "open alerts"),
            ("health", "owner's health"),
        ],
        title="plant",
    )


@app.command()
def parts(
    config: ConfigOption = _DEFAULT_SITE,
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    program: Annotated[str | None, typer.Option(help="Only this program.")] = None,
    last: Annotated[int, typer.Option(help="How many of the most recent parts.")] = 20,
    capability: Annotated[
        bool,
        typer.Option(
            "--capability",
            help="Instead: Cp, Cpk, Pp, Ppk (95% intervals), stability and the verdict (the program file's report rule) "
            "per feature over complete parts.",
        ),
    ] = False,
    cell: CellOption = None,
    as_json: JsonOption = False,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="With --capability: compute every group afresh, not from the rows kept in "
            "$XDG_CACHE_HOME/monitor/ (also: MONITOR_NO_CACHE=1).",
        ),
    ] = False,
) -> None:
    """List recorded parts, newest last, with their status and measurements (or, with
    --capability, the capability of every feature of the batch).

    Every value of the controller's part counter has a row: parts made while their data was lost
    (connection down, monitor stopped) are listed as "not observed" with the reason and when.

    --capability keeps its rows per machine and program in a file of the user's cache folder
    ($XDG_CACHE_HOME/monitor/, ~/.cache/monitor/ when unset) and computes again only the groups
    whose stored values or program file changed since (the store's stamp of each group tells);
    --no-cache or MONITOR_NO_CACHE=1 turns that off."""
    from monitor.config import load_site, load_site_file
    from monitor.queries import cell_machines, open_site_store, stored_part_rows

    if capability:
        _capability(config, machine, program, as_json, use_cache=not no_cache)
        return
    try:
        with open_site_store(config) as store:
            try:
                site = load_site(config)  # the programs' limits mark bad parts
            except ConfigError:
                site = load_site_file(config)  # a program file being edited has errors: list the parts anyway
            machines = cell_machines(store, site, cell) if cell else None
            rows = stored_part_rows(site, store.part_data(machine=machine, program=program, last=last, machines=machines))
    except MonitorError as exc:
        raise _fail(exc) from None
    if not as_json:
        for row in rows:
            row["values"] = "  ".join(f"{k.removeprefix('probe.')}={v:.4f}" for k, v in row["measurements"].items())
            if row["status"] != "complete" and row["notes"]:  # why it is not complete (a gap: when and why)
                row["values"] = "  ".join([row["values"], *row["notes"]]).strip()
            if row["flags"]:  # attributed by rule, id disagreeing with time...: the notes say why
                row["status"] = f"{row['status']} ({', '.join(row['flags'])})"
            row["status"] = row["status"].replace("_", " ")
    n = emit_rows(
        rows,
        as_json=as_json,
        columns=[
            ("machine", "machine"),
            ("program", "program"),
            ("part", "part"),
            ("counter", "counter"),
            ("status", "status"),
            ("end", "ended"),
            ("tool", "tool"),
            ("tool_life", "tool life"),
            ("mean_load", "load %"),
            ("values", "measurements"),
        ],
        title="parts",
    )
    if not as_json and n == 0:
        console.print("no parts recorded yet")


def _capability(config: Path, machine: str | None, program: str | None, as_json: bool, *, use_cache: bool = True) -> None:
    from monitor.capcache import CapabilityCache, cache_disabled, cache_file
    from monitor.config import load_site
    from monitor.queries import capability_rows
    from monitor.store import open_store

    try:
        site = load_site(config)
        with open_store(site.store_location, read_only=True) as store:
            kept = CapabilityCache.load(cache_file(site.store_location), store) if use_cache and not cache_disabled() else None
            rows = capability_rows(site, store, machine=machine, program=program, cache=kept)
    except MonitorError as exc:
        raise _fail(exc) from None
    from monitor.detect.config import CONFIDENCE  # not the capability module: no numpy for a kept answer

    emit_rows(
        rows if as_json else [capability_text(r) for r in rows],
        as_json=as_json,
        columns=[
            ("machine", "machine"),
            ("program", "program"),
            ("feature", "feature"),
            *CAPABILITY_COLUMNS,
            ("verdict", "verdict"),
        ],
        title=f"capability of complete parts, {CONFIDENCE:.0%} intervals (true position and one-sided features: Cpk and Ppk "
        "against their one limit only)",
    )
    if not as_json:
        print_stability_notes(rows)


_ALERT_COLUMNS = [
    ("time", "time"),
    ("machine", "machine"),
    ("program", "program"),
    ("feature", "feature"),
    ("level", "condition"),
    ("state", "state"),
    ("parts", "parts"),
    ("message", "message; what to do"),
    ("id", "id"),
]


@app.command()
def alerts(
    config: ConfigOption = _DEFAULT_SITE,
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    program: Annotated[str | None, typer.Option(help="Only this program.")] = None,
    since: Annotated[str | None, typer.Option(help="Only alerts changed since: 2h, 30m, 7d or an ISO time.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts not yet closed.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing alert changes as they are stored.")] = False,
    cell: CellOption = None,
    as_json: JsonOption = False,
) -> None:
    """List conditions (one per machine, program and feature while not ok) and machine alerts as they
    stand now, with the advice of the last part; with --follow, print every state change as it happens."""
    from monitor.config import load_site
    from monitor.queries import alert_row, cell_machines, follow_alerts, open_site_store

    since_t = since_option(since)
    try:
        with open_site_store(config) as store:
            machines = cell_machines(store, load_site(config), cell) if cell else None
            found = store.alerts(machine=machine, program=program, since=since_t, open_only=open_only, machines=machines)
            rows = [alert_row(a) for a in found]
            n = emit_rows(rows, as_json=as_json, columns=_ALERT_COLUMNS, title="alerts")
            if not as_json and n == 0 and not follow:
                console.print("no alerts")
            if follow:
                for alert in follow_alerts(store, machine=machine, program=program):
                    if machines is not None and alert.machine not in machines:
                        continue
                    row = alert_row(alert)
                    if as_json:
                        emit_json(row)
                    else:
                        console.print(
                            f"{row['time']} [bold]{row.get('condition') or row['severity']}[/] {row['state']} {row['machine']} "
                            f"{row['program']} {row['feature']}: {row['message']}",
                            highlight=False,
                        )
    except MonitorError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        return


@app.command()
def ack(
    alert_id: Annotated[str, typer.Argument(help="The alert id shown by `monitor alerts`.")],
    config: ConfigOption = _DEFAULT_SITE,
    close: Annotated[bool, typer.Option("--close", help="Close the alert instead of acknowledging it (engineers).")] = False,
    comment: Annotated[str, typer.Option("--comment", "-m", help="What you saw or will do; stored with your name.")] = "",
) -> None:
    """Acknowledge (or close) an alert: through the running daemon when it is up, else in the store.

    The acknowledgement is recorded with your user name and role: set MONITOR_TOKEN to your token
    when the site file names users (without users it is recorded as "local")."""
    import asyncio

    from monitor.acknowledge import acknowledge_alert

    try:
        outcome, via = asyncio.run(acknowledge_alert(config, alert_id, close=close, comment=comment))
    except MonitorError as exc:
        raise _fail(exc) from None
    alert, action = outcome.alert, outcome.action
    assert alert is not None
    who = f" by {action.user} ({action.role})" if action is not None else ""
    console.print(f"{alert.id}: {alert.state}{who} ({via})", highlight=False)
