"""What the CLI (and the dashboard API) show, as plain rows: one place computes the numbers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.codec import action_text, action_to_dict, alert_to_dict, part_to_dict
from monitor.config import ProgramConfig, Site, load_site
from monitor.dburl import redact
from monitor.errors import ConfigError, MonitorError
from monitor.model import (
    Action,
    Alert,
    AlertKind,
    AlertState,
    ConditionState,
    Feature,
    PartRecord,
    PartStatus,
    Severity,
    out_of_tolerance,
)
from monitor.store import Store, StoreReader, open_store

if TYPE_CHECKING:
    from monitor.capcache import CapabilityCache

__all__ = [
    "action_row",
    "action_text",
    "alert_row",
    "capability_rows",
    "cell_machines",
    "check_summary",
    "follow_alerts",
    "open_site_store",
    "parse_since",
    "part_row",
    "plant_rows",
    "site_part_row",
    "site_part_rows",
    "stored_alert_row",
    "stored_part_rows",
]


def check_summary(path: Path) -> dict[str, Any]:
    """Load and validate a site (and what the daemon would meet on connecting, see
    :func:`monitor.preflight.offline_issues`); the summary of what a daemon on it would watch."""
    from monitor.preflight import offline_issues

    site: Site = load_site(path)
    issues = offline_issues(site)
    if issues:
        raise ConfigError(issues)
    machines = []
    for machine_id in site.machine_ids():
        sources = [m for m in site.config.machines if m.id == machine_id]
        machines.append(
            {
                "machine": machine_id,
                "sources": [_source_text(m.source) for m in sources],
                "signals": sorted(s for m in sources for s in m.signals),
            }
        )
    programs = [
        {
            "program": name,
            "file": str(site.program_files[name]),
            "part_end": p.part_end,
            "features": [f.name for f in p.feature_models()],
        }
        for name, p in site.programs.items()
    ]
    sinks = site.config.sinks
    return {
        "site": site.config.site,
        "store": redact(str(site.store_location)),
        "machines": machines,
        "programs": programs,
        "sinks": [n for n, v in (("influx", sinks.influx), ("mqtt", sinks.mqtt)) if v] + ["webhook"] * len(sinks.webhooks),
        "dashboard": f"http://{site.config.dashboard.bind}:{site.config.dashboard.port}/"
        if site.config.dashboard.enabled
        else None,
    }


def _source_text(source: Any) -> str:
    for attr in ("endpoint", "url", "path"):
        value = getattr(source, attr, None)
        if value is not None:
            return f"{source.type} {value}"
    return str(source.type)


def site_part_row(site: Site, part: PartRecord) -> dict[str, Any]:
    """:func:`part_row` with what the site knows: the machine's probe and the program's limits."""
    program = site.programs.get(part.program)
    features = program.feature_models() if program is not None else ()
    return part_row(part, site.probe_tools(part.machine), features)


def site_part_rows(site: Site, parts: Iterable[PartRecord]) -> list[dict[str, Any]]:
    """:func:`site_part_row` of each part (see :func:`stored_part_rows`)."""
    return stored_part_rows(site, (part_to_dict(part) for part in parts))


def stored_part_rows(site: Site, parts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`site_part_row` of each part as the store keeps it (``StoreReader.part_data``: no
    :class:`PartRecord` built), the site's probe and features looked up once per machine and
    program (a list of 100 parts is not 100 builds of the program's feature models)."""
    probes: dict[str, frozenset[str]] = {}
    features: dict[str, list[Feature]] = {}
    rows = []
    for part in parts:
        machine, program = part["machine"], part["program"]
        probe = probes.get(machine)
        if probe is None:
            probe = probes[machine] = site.probe_tools(machine)
        models = features.get(program)
        if models is None:
            config = site.programs.get(program)
            models = features[program] = config.feature_models() if config is not None else []
        rows.append(_stored_row(part, probe, models))
    return rows


def part_row(part: PartRecord, probe_tools: frozenset[str] = frozenset(), features: Iterable[Feature] = ()) -> dict[str, Any]:
    """One part as a flat row; measurements are listed under their probe signal names. ``tool`` is the
    last cutting tool: the machine's probe (``probe_tools``) is not one. ``out_of_tolerance``: the
    ``features`` whose limits the part's measurements break (a bad part, whatever its status)."""
    return _stored_row(part_to_dict(part), probe_tools, features)


def _stored_row(part: dict[str, Any], probe_tools: frozenset[str], features: Iterable[Feature]) -> dict[str, Any]:
    """:func:`part_row` of a part as :func:`~monitor.codec.part_to_dict` writes it: the values
    :func:`~monitor.codec.part_from_dict` would give (defaults included) read from it directly."""
    last = None
    for use in reversed(part.get("tools", ())):
        if use["tool"] not in probe_tools:
            last = use
            break
    spindle = part.get("spindle", {})
    end = part["end"]  # datetime.isoformat's text: to the second already unless it has a fraction
    measurements = {k: float(v) for k, v in part.get("measurements", {}).items()}
    return {
        "machine": part["machine"],
        "program": part["program"],
        "part": int(part["part_number"]),
        "status": _member(PartStatus, _PART_STATUSES, part["status"]),
        "end": end if end[19:20] != "." else datetime.fromisoformat(end).isoformat(timespec="seconds"),
        "counter": part.get("counter"),
        "tool": last["tool"] if last is not None else None,
        "tool_life": last.get("life_end") if last is not None else None,
        "mean_load": spindle.get("mean_load"),
        "cutting_s": round(spindle.get("cutting_time", 0.0), 1),
        "measurements": measurements,
        "missing": list(part.get("missing", ())),
        "notes": list(part.get("notes", ())),
        "part_id": part.get("part_id"),
        "flags": list(part.get("flags", ())),
        "key": part["key"],
        "out_of_tolerance": out_of_tolerance(features, measurements),
    }


def alert_row(alert: Alert) -> dict[str, Any]:
    """An alert as the CLI and the dashboard list it: the stored record plus ``level`` (the condition,
    or a machine alert's severity) and ``parts``, the parts it spans ("25-100")."""
    return stored_alert_row(alert_to_dict(alert))


def stored_alert_row(alert: dict[str, Any]) -> dict[str, Any]:
    """:func:`alert_row` of an alert as the store keeps it (``StoreReader.alert_data``: no
    :class:`Alert` built): the values :func:`~monitor.codec.alert_from_dict` and
    :func:`~monitor.codec.alert_to_dict` would give, read from it directly (its ``time`` is
    ``datetime.isoformat``'s text, which they give back unchanged)."""
    condition = alert.get("condition")
    last = alert.get("last_part")
    row = {
        "id": alert["id"],
        "machine": alert["machine"],
        "program": alert["program"],
        "feature": alert["feature"],
        "kind": _member(AlertKind, _KINDS, alert["kind"]),
        "severity": _member(Severity, _SEVERITIES, alert["severity"]),
        "state": _member(AlertState, _STATES, alert["state"]),
        "part_number": int(alert["part_number"]),
        "message": alert["message"],
        "time": alert["time"],
        "evidence": dict(alert.get("evidence") or {}),
        "part_key": alert.get("part_key"),
        "condition": _member(ConditionState, _CONDITIONS, condition) if condition else None,
        "last_part": None if last is None else int(last),
    }
    first, last = row["part_number"], row["last_part"]
    span = f"{first}-{last}" if last is not None and last != first else str(first)
    return {**row, "level": row["condition"] or row["severity"], "parts": span}


_PART_STATUSES = frozenset(str(s) for s in PartStatus)
_KINDS = frozenset(str(k) for k in AlertKind)
_SEVERITIES = frozenset(str(s) for s in Severity)
_STATES = frozenset(str(s) for s in AlertState)
_CONDITIONS = frozenset(str(c) for c in ConditionState)


def _member(kind: Any, values: frozenset[str], value: Any) -> str:
    """``str(kind(value))`` (what the codec's round trip gives), the enum made only for a value that
    is not one of its members' text (which it refuses, or maps)."""
    return value if type(value) is str and value in values else str(kind(value))


def action_row(action: Action) -> dict[str, Any]:
    """An action as the CLI, the dashboard and the report list it (``text``: the one line to read)."""
    return {**action_to_dict(action), "text": action_text(action)}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``2h``, ``30m``, ``7d`` ago, or an ISO time (UTC if no zone).

    >>> parse_since("2h", datetime(2026, 1, 1, 12, tzinfo=UTC)).isoformat()
    '2026-01-01T10:00:00+00:00'
    """
    if text is None:
        return None
    now = now or datetime.now(UTC)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(**{units[text[-1]]: float(text[:-1])})
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def capability_rows(
    site: Site,
    store: StoreReader,
    *,
    machine: str | None = None,
    program: str | None = None,
    cache: CapabilityCache | None = None,
) -> list[dict[str, Any]]:
    """Capability of every feature per machine and program over the stored complete parts:
    :func:`monitor.report.stored_capability`, the numbers the report and the dashboard show (read
    from the store's measurement series, no part record decoded), the parts out of tolerance and
    the verdict by the program's ``report`` rule. Go/no-go features have no index and are left
    out (the report counts them). With a ``cache`` (:class:`monitor.capcache.CapabilityCache`,
    loaded before: the store's stamps are read before any value), a group whose stored values and
    program are those its kept rows were computed from is not read again; the others are, and
    kept; the cache file is written at the end."""
    rows: list[dict[str, Any]] = []
    groups = store.part_groups()
    for machine_id, program_name in groups:
        if (machine is not None and machine_id != machine) or (program is not None and program_name != program):
            continue
        config = site.programs.get(program_name)
        if config is None:
            continue
        kept = cache.rows((machine_id, program_name), config) if cache is not None else None
        if kept is None:
            kept = _group_capability(store, machine_id, program_name, config)
            if cache is not None:
                cache.keep((machine_id, program_name), config, kept)
        rows += kept
    if cache is not None:
        cache.save(groups)
    return rows


def _group_capability(store: StoreReader, machine: str, program: str, config: ProgramConfig) -> list[dict[str, Any]]:
    """The rows of one group (none when its parts measured nothing): loads the report's numbers
    (numpy) only when a group is computed."""
    from monitor.model import AttributeFeature
    from monitor.report.stored import stored_verdict

    group: list[dict[str, Any]] = []
    for feature in config.feature_models():
        if isinstance(feature, AttributeFeature):
            continue  # a proportion, in the report; no capability index
        result, bad, verdict = stored_verdict(store, machine, config, feature)
        summary = {**(result.as_dict() if result is not None else {"n": 0}), "out_of_tolerance": bad, **verdict.as_dict()}
        group.append({"machine": machine, "program": program, "feature": feature.name, **summary})
    return group if any(row["n"] for row in group) else []  # a group whose parts measured nothing is not listed


def open_site_store(site_path: Path) -> Store:
    """The store a site's daemon writes, opened read-only for the CLI (works on a read-only mount,
    on a full disk, and for a user who may only read it)."""
    return open_store(load_site(site_path).store_location, read_only=True)


def follow_alerts(
    store: StoreReader, *, machine: str | None = None, program: str | None = None, poll_s: float = 0.5
) -> Iterator[Alert]:
    """Every alert change stored from now on (of ``machine``/``program`` when given), as it is
    stored: what ``monitor alerts --follow`` prints. Polls the store's change history (another
    process writes it), so it blocks between changes; stop it by leaving the loop."""
    seq = store.last_alert_event()
    while True:
        time.sleep(poll_s)
        for seq, alert in store.alert_events(seq):  # noqa: B020, B007 - seq advances the cursor
            if (machine and alert.machine != machine) or (program and alert.program != program):
                continue
            yield alert


def cell_machines(store: StoreReader, site: Site, cell: str) -> list[str]:
    """The machines of ``cell`` in the site's store: from the machines' leases in a shared store,
    and this site's own machines when ``cell`` is this site. Raises MonitorError naming the cells
    there are when there is no such cell."""
    owners = store.machine_owners()
    machines = {o["machine"] for o in owners if o["cell"] == cell}
    if cell == site.config.site:
        machines.update(site.machine_ids())
    if not machines:
        cells = sorted({o["cell"] for o in owners} | {site.config.site})
        raise MonitorError(f"no cell {cell!r} in the store; the cells are {', '.join(cells)}")
    return sorted(machines)


def plant_rows(store: StoreReader, site: Site, status: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every machine of every cell the store holds, with its owning daemon and its health: the
    plant view (``monitor plant``, the dashboard's /plant). ``status`` is this daemon's own machine
    status (the dashboard has it live). A SQLite store shows this site's cell only."""
    owners = {o["machine"]: o for o in store.machine_owners()}
    machines = sorted(set(owners) | set(site.machine_ids()), key=lambda m: (owners.get(m, {}).get("cell", site.config.site), m))
    open_by_machine: dict[str, Counter[str]] = {}
    for alert in store.alerts(open_only=True, machines=machines):
        open_by_machine.setdefault(alert.machine, Counter())[str(alert.severity)] += 1
    rows = []
    for machine in machines:
        owner = owners.get(machine, {})
        own = status.get(machine) if status is not None else None
        counts = open_by_machine.get(machine, Counter())
        rows.append(
            {
                "cell": owner.get("cell", site.config.site),
                "machine": machine,
                "owner": owner.get("owner"),
                "host": owner.get("host"),
                "live": owner.get("live", own is not None),
                "heartbeat_age_s": owner.get("heartbeat_age_s"),
                "generation": owner.get("generation"),
                "health": owner.get("status"),
                "dashboard": owner.get("dashboard"),
                "connection": own.get("connection") if own else None,
                "parts": store.part_count(machine=machine),
                "open_alerts": {str(s): counts.get(str(s), 0) for s in reversed(Severity)},
            }
        )
    return rows
