"""``monitor demo`` and ``monitor sim``: the simulated cell behind real protocol servers.

The demo starts the seeded cell, puts each machine behind a real server on loopback (the first
behind our simulated OPC UA CNC, the second behind our MTConnect agent), writes a site file that
points the daemon at them, runs the real daemon on it, and compares what the detectors flagged
with the simulation's ground truth: for each drifting feature, the part where it was flagged,
the first out-of-tolerance part and the lead in parts.

With ``closed_loop`` every machine is served over OPC UA with SignAndEncrypt and users, writable
offset registers and a site file whose features ask for ``offset.auto_apply``: the daemon writes
the advice to the simulated controllers, whose physics (:mod:`monitor.sim.closedloop`) moves the
parts cut after each write. The result then counts the parts out of tolerance with and without
the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from monitor.config import load_site
from monitor.daemon import Daemon, open_core
from monitor.errors import MonitorError
from monitor.events import HubEvent
from monitor.model import ActionKind, AlertKind
from monitor.sim import SimCell, SimEvent, load_scenario, run_cell
from monitor.sim.closedloop import ClosedLoop, effects_for
from monitor.sim.opcua_server import OpcUaSimServer, SimSecurity, register_entries, shapes_for
from monitor.sim.opcua_server import signal_map as opcua_signal_map
from monitor.sim.process import PROBE_TOOL_NUMBER, PROGRAMS_DIR
from monitor.store import open_store

__all__ = [
    "CellServers",
    "DemoOptions",
    "DemoResult",
    "FeatureOutcome",
    "SimOptions",
    "run_demo",
    "serve_cell",
    "serve_shdr",
    "wait_for_line",
]

log = logging.getLogger(__name__)

_DETECTION_KINDS = {AlertKind.FORECAST, AlertKind.EWMA, AlertKind.CUSUM, AlertKind.RUN_RULE, AlertKind.OUT_OF_TOLERANCE}


@dataclass(frozen=True)
class DemoOptions:
    """What ``monitor demo`` runs: scenario, seed, parts per batch and time compression."""

    scenario: str = "demo"
    seed: int = 0
    parts: int | None = None
    speed: float = 400.0
    keep_running: bool = False
    dashboard_port: int = 0
    protocols: tuple[str, ...] = ("opcua", "mtconnect")
    """Protocol of each machine, in the scenario's machine order (repeats the last)."""
    mqtt: str | None = None
    """``host:port`` of an MQTT broker that receives the demo's alerts (optional)."""
    webhooks: tuple[str, ...] = ()
    """URLs that receive the demo's alerts as signed JSON POSTs (optional)."""
    closed_loop: bool = False
    """Serve every machine over secure OPC UA with writable offsets and let the daemon apply the advice."""

    def sinks(self) -> dict[str, Any]:
        """The ``sinks:`` section of the demo's site file."""
        out: dict[str, Any] = {}
        if self.mqtt:
            host, _, port = self.mqtt.rpartition(":")
            out["mqtt"] = {"host": host or "127.0.0.1", "port": int(port)}
        if self.webhooks:
            out["webhooks"] = [{"url": url} for url in self.webhooks]
        return out


@dataclass(frozen=True)
class FeatureOutcome:
    """One feature of one machine: ground truth against what the monitor flagged."""

    machine: str
    program: str
    feature: str
    drift_starts: int | None
    flagged_at: int | None
    first_out_of_tolerance: int | None

    @property
    def lead(self) -> int | None:
        if self.flagged_at is None or self.first_out_of_tolerance is None:
            return None
        return self.first_out_of_tolerance - self.flagged_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "program": self.program,
            "feature": self.feature,
            "drift_starts": self.drift_starts,
            "flagged_at": self.flagged_at,
            "first_out_of_tolerance": self.first_out_of_tolerance,
            "lead": self.lead,
        }


@dataclass
class DemoResult:
    """Everything ``monitor demo --json`` prints, measured from the run."""

    parts: int = 0
    alerts: int = 0
    features: list[FeatureOutcome] = field(default_factory=list)
    dashboard_url: str | None = None
    closed_loop: dict[str, int] | None = None
    """With the loop: parts out of tolerance without it and with it, offsets applied and refused."""
    not_read: list[str] = field(default_factory=list)
    not_connected: list[str] = field(default_factory=list)
    """Machines whose sources were not connected when the simulated batch started (normally none:
    their first parts may be missing)."""
    """Signals whose last published updates the daemon had not read when the demo stopped waiting (normally none)."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"parts": self.parts, "alerts": self.alerts, "features": [f.as_dict() for f in self.features]}
        if self.closed_loop is not None:
            out["closed_loop"] = self.closed_loop
        if self.not_read:
            out["not_read"] = self.not_read
        if self.not_connected:
            out["not_connected"] = self.not_connected
        return out


CONNECT_TIMEOUT_S = 60.0
"""How long the demo waits for the daemon to connect to every simulated server before the batch."""
SETTLE_TIMEOUT_S = 120.0
"""How long, after the batch, the demo waits for the daemon to read what the servers published."""
DEMO_LIMITS: dict[str, float] = {"max_change": 0.03, "max_batch_change": 0.12, "auto_max_change": 0.015}
"""The demo's register limits (mm): one write, the batch, one automatic write."""
_READER, _WRITER = "monitor-reader", "monitor-writer"
_ENV = {
    "user": "CNC_DEMO_OPCUA_USER",
    "password": "CNC_DEMO_OPCUA_PASSWORD",
    "writer": "CNC_DEMO_OPCUA_WRITER",
    "writer_password": "CNC_DEMO_OPCUA_WRITER_PASSWORD",
}


@dataclass(frozen=True)
class _Pki:
    """The closed-loop demo's certificates and users: the simulator's, the monitor's, the trust folder."""

    security: SimSecurity
    certificate: Path
    private_key: Path
    trust_dir: Path

    @classmethod
    def create(cls, folder: Path) -> _Pki:
        from adapters.opcua.certs import generate_certificate

        server = generate_certificate(folder / "sim/cert.der", folder / "sim/key.pem", "urn:cnc-monitor:sim")
        client = generate_certificate(folder / "own/cert.der", folder / "own/key.pem", "urn:cnc-monitor:demo")
        trust = folder / "trusted"
        trust.mkdir(parents=True, exist_ok=True)
        (trust / "sim.der").write_bytes(server.certificate.read_bytes())
        passwords = {_READER: secrets.token_urlsafe(12), _WRITER: secrets.token_urlsafe(12)}
        # the daemon runs in this process and reads its OPC UA credentials from the environment
        os.environ.update(
            {
                _ENV["user"]: _READER,
                _ENV["password"]: passwords[_READER],
                _ENV["writer"]: _WRITER,
                _ENV["writer_password"]: passwords[_WRITER],
            }
        )
        security = SimSecurity(server.certificate, server.private_key, users=passwords, writers=frozenset({_WRITER}))
        return cls(security, client.certificate, client.private_key, trust)


class CellServers:
    """The cell's machines behind real protocol servers on loopback, fed from the simulation."""

    def __init__(
        self,
        cell: SimCell,
        protocols: tuple[str, ...] = ("opcua", "mtconnect"),
        *,
        opcua_port: int = 0,
        mtconnect_port: int = 0,
        closed_loop: Path | None = None,
    ) -> None:
        self.cell = cell
        self.protocol = {m.id: protocols[min(i, len(protocols) - 1)] for i, m in enumerate(cell.machines)}
        self._opcua_port = opcua_port
        self._mtconnect_port = mtconnect_port
        self._pki_dir = closed_loop
        self._pki: _Pki | None = None
        self.loop: ClosedLoop | None = None
        """The simulated physics of the registers (closed-loop demo only)."""
        self.opcua: OpcUaSimServer | None = None
        self.mtconnect: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> CellServers:
        opc = [m for m in self.cell.machines if self.protocol[m.id] == "opcua"]
        mtc = [m for m in self.cell.machines if self.protocol[m.id] == "mtconnect"]
        if opc:
            if self._pki_dir is not None:
                self._pki = await asyncio.to_thread(_Pki.create, self._pki_dir)
            security = self._pki.security if self._pki is not None else None
            self.opcua = await self._stack.enter_async_context(
                OpcUaSimServer(machines=shapes_for(opc), port=self._opcua_port, security=security)
            )
            if self._pki is not None:
                programs = self.cell.programs()
                effects = {m.id: effects_for({p: programs[p] for p in m.programs}, "mill") for m in opc}
                self.loop = ClosedLoop(self.opcua, effects)
        if mtc:
            from monitor.sim.mtconnect_agent import SimAgentBinding

            self.mtconnect = await self._stack.enter_async_context(SimAgentBinding(mtc, port=self._mtconnect_port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def published(self) -> dict[tuple[str, str], datetime]:
        """Per (machine, signal), the time of the newest update the servers published that a reader is
        told of (a repeated value is not one): the daemon has read everything once it has read these."""
        out: dict[tuple[str, str], datetime] = {}
        if self.opcua is not None:
            out.update(self.opcua.changed_at)
        if self.mtconnect is not None:
            out.update(self.mtconnect.changed_at)
        return out

    async def publish(self, event: SimEvent) -> None:
        """Write one simulated update into the server that carries its machine."""
        if self.protocol.get(event.machine) == "opcua" and self.opcua is not None:
            if self.loop is not None:
                await self.loop.publish(event)
            else:
                await self.opcua.publish(event.machine, event.signal, event.value, event.time)
        elif self.mtconnect is not None:
            self.mtconnect.publish(event)

    def site_document(
        self, *, store: Path, speed: float, dashboard_port: int | None, sinks: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A site file (as a dict) that points a daemon at these servers."""
        machines: list[dict[str, Any]] = []
        # the adapter passes each publish on in time order; the tracker's window only has to cover
        # the publishing interval (100 ms of wall time): half a second of wall time is plenty
        skew = max(5.0, 0.5 * max(speed, 1.0))
        for m in self.cell.machines:
            if self.protocol[m.id] == "opcua" and self.opcua is not None:
                (shape,) = shapes_for([m])
                signals = {k: v for k, v in opcua_signal_map(shape).items() if k in m.signals or k.startswith("probe.")}
                entry: dict[str, Any] = {
                    "id": m.id,
                    "kind": "mill",
                    "probe_tool": str(PROBE_TOOL_NUMBER),
                    "source": {
                        "type": "opcua",
                        "endpoint": self.opcua.endpoint,
                        "publishing_interval_ms": 100,
                        "sampling_interval_ms": 0,
                        "queue_size": 1000,
                    },
                    "signals": signals,
                    "tracking": {"grace_s": 10.0, "max_skew_s": skew},
                }
                if self._pki is not None and self.loop is not None:
                    entry["source"].update(
                        security_policy="Basic256Sha256",
                        security_mode="SignAndEncrypt",
                        certificate=str(self._pki.certificate),
                        private_key=str(self._pki.private_key),
                        trust_dir=str(self._pki.trust_dir),
                        username_env=_ENV["user"],
                        password_env=_ENV["password"],
                    )
                    registers = sorted(self.loop.registers(m.id))
                    entry["offsets"] = {
                        "username_env": _ENV["writer"],
                        "password_env": _ENV["writer_password"],
                        "registers": register_entries(m.id, registers, **DEMO_LIMITS),
                    }
                machines.append(entry)
            else:
                machines.append(
                    {
                        "id": m.id,
                        "kind": "mill",
                        "probe_tool": str(PROBE_TOOL_NUMBER),
                        "source": {"type": "mtconnect", "url": self.mtconnect.url, "device": m.id, "interval_ms": 50},
                        "signals": self.mtconnect.signal_map(m.id),
                        "tracking": {"grace_s": 10.0},
                    }
                )
        programs = str(PROGRAMS_DIR) if self._pki_dir is None else str(_auto_apply_programs(self._pki_dir.parent / "programs"))
        return {
            "site": "demo-cell",
            "store": {"path": str(store)},
            "programs": programs,
            "machines": machines,
            "dashboard": {"enabled": dashboard_port is not None, "port": dashboard_port or 0},
            "sinks": sinks or {},
        }


def _auto_apply_programs(folder: Path) -> Path:
    """Copies of the packaged program files whose every size and position feature asks for ``offset.auto_apply``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(PROGRAMS_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for feature in doc.get("features", {}).values():
            if feature.get("kind") in ("size", "position"):  # the kinds an offset register corrects
                feature.setdefault("offset", {})["auto_apply"] = True
        (folder / path.name).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return folder


async def run_demo(
    options: DemoOptions,
    workdir: Path,
    *,
    on_event: Callable[[HubEvent], None] | None = None,
    on_progress: Callable[[dict[str, int], dict[str, int]], None] | None = None,
    on_started: Callable[[str | None], None] | None = None,
    stop: asyncio.Event | None = None,
) -> DemoResult:
    """Run the demo cell to the end of its batch (or until ``stop``); returns the measured result."""
    cell = SimCell(load_scenario(options.scenario), seed=options.seed, parts=options.parts)
    expected = len(cell.parts())
    totals: dict[str, int] = {}
    for simulated in cell.parts():
        totals[simulated.machine] = totals.get(simulated.machine, 0) + 1
    stop = stop or asyncio.Event()
    protocols = ("opcua",) if options.closed_loop else options.protocols
    loop_dir = workdir / "closed-loop" / "pki" if options.closed_loop else None
    async with CellServers(cell, protocols, closed_loop=loop_dir) as servers:
        site_path = workdir / "demo-site.yaml"
        document = servers.site_document(
            store=workdir / "demo.db", speed=options.speed, dashboard_port=options.dashboard_port, sinks=options.sinks()
        )
        site_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        site = load_site(site_path)
        async with open_core(site) as core:
            daemon = Daemon(core, health_every_s=3600, track_reads=True)
            sub = daemon.hub.subscribe(100_000)
            daemon_stop = asyncio.Event()
            runner = asyncio.create_task(daemon.run(daemon_stop), name="demo-daemon")
            result = DemoResult()
            per_machine: dict[str, int] = {m.id: 0 for m in cell.machines}
            all_done = asyncio.Event()
            try:
                await _wait_started(daemon, runner)
                result.not_connected = await _wait_connected(daemon, runner, stop)
                result.dashboard_url = daemon.dashboard_url
                if on_started is not None:
                    on_started(daemon.dashboard_url)

                async def consume() -> None:
                    async for event in sub:
                        if event.kind == "demo-end":
                            return
                        if event.kind == "part":
                            result.parts += 1
                            per_machine[event.data["machine"]] = per_machine.get(event.data["machine"], 0) + 1
                            if on_progress is not None:
                                on_progress(per_machine, totals)
                            if result.parts >= expected:
                                all_done.set()
                        elif event.kind == "alert":
                            result.alerts += 1
                        if on_event is not None:
                            on_event(event)

                async with asyncio.TaskGroup() as tg:
                    tg.create_task(consume())
                    await run_cell(cell, servers.publish, speed=options.speed, stop=stop)
                    read = {(m["id"], signal) for m in document["machines"] for signal in m["signals"]}
                    result.not_read = await _settle(daemon, servers, read, all_done, stop)
                    if options.keep_running and not stop.is_set():
                        await stop.wait()
                    # the clean stop releases the parts still waiting in a grace or re-ordering window
                    daemon_stop.set()
                    await runner
                    daemon.hub.publish("demo-end", {})
            finally:
                sub.close()
                daemon_stop.set()
                await runner
        if servers.loop is not None:
            result.closed_loop = _loop_figures(cell, servers.loop, site.store_path)
    result.features = _outcomes(cell, site.store_path)
    return result


def _loop_figures(cell: SimCell, loop: ClosedLoop, store_path: Path) -> dict[str, int]:
    """Parts out of tolerance without and with the loop; offsets the daemon wrote and refused."""
    with open_store(store_path, read_only=True) as store:
        kinds = [a.kind for a in store.actions()]
    return {
        "out_of_tolerance_without": ClosedLoop.out_of_tolerance_without(cell),
        "out_of_tolerance_with": loop.out_of_tolerance(cell),
        "offsets_applied": kinds.count(ActionKind.OFFSET_APPLIED),
        "offsets_refused": kinds.count(ActionKind.OFFSET_REFUSED),
    }


async def _settle(
    daemon: Daemon,
    servers: CellServers,
    read: set[tuple[str, str]],
    all_done: asyncio.Event,
    stop: asyncio.Event,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> list[str]:
    r"""Wait until the daemon has read what the servers published of the signals it ``read``\s (or
    every part is in, or ``stop``), at most ``timeout_s``; what it had not read by then, one line per
    signal (empty when it read everything)."""
    published = {key: at for key, at in servers.published().items() if key in read}
    waits = [asyncio.ensure_future(daemon.wait_read(published)), asyncio.ensure_future(all_done.wait())]
    waits.append(asyncio.ensure_future(stop.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    if all_done.is_set() or stop.is_set():
        return []
    missing = [
        f"{machine} {signal}: published up to {published[(machine, signal)].isoformat()}, read "
        + (f"up to {seen.isoformat()}" if seen is not None else "nothing")
        for (machine, signal), seen in sorted(daemon.unread(published).items())
    ]
    if missing:
        log.warning(
            "after %.0f s the daemon has not read everything the simulated servers published (%d signals): %s",
            timeout_s, len(missing), "; ".join(missing),
        )  # fmt: skip
    return missing


async def _wait_connected(
    daemon: Daemon, runner: asyncio.Task[None], stop: asyncio.Event, timeout_s: float = CONNECT_TIMEOUT_S
) -> list[str]:
    """Start the batch once the daemon reads every server (else it misses what is published while it
    connects: the first part of a machine behind a SignAndEncrypt session); bounded, then said. Ends
    early when the daemon stops (raising what stopped it) or the demo is stopped (Ctrl-C). Returns
    the machines whose sources were not connected when the batch started (normally none)."""
    connected = asyncio.ensure_future(daemon.wait_connected())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({connected, stopped, runner}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        connected.cancel()
        stopped.cancel()
    if runner.done():
        runner.result()  # raises what stopped the daemon
        raise MonitorError("the demo's daemon stopped before it connected to the simulated machines")
    missing = daemon.not_connected()
    if missing and not stop.is_set():
        log.warning(
            "after %.0f s the daemon is not connected to %s; starting the batch anyway: the first parts may not be read",
            timeout_s, ", ".join(missing),
        )  # fmt: skip
    return missing


async def _wait_started(daemon: Daemon, runner: asyncio.Task[None]) -> None:
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait({started, runner}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        started.cancel()
        runner.result()  # raises what stopped the daemon


def _outcomes(cell: SimCell, store_path: Path) -> list[FeatureOutcome]:
    """Ground truth per feature against the first detection alert stored for it."""
    with open_store(store_path) as store:
        changes = store.alert_events(limit=1_000_000)
    first: dict[tuple[str, str, str], int] = {}
    for _, alert in changes:  # every change, so the part an alert opened at is seen
        if alert.kind not in _DETECTION_KINDS:
            continue
        key = (alert.machine, alert.program, alert.feature)
        first[key] = min(first.get(key, alert.part_number), alert.part_number)
    outcomes = []
    for truth in cell.ground_truth():
        outcomes.append(
            FeatureOutcome(
                truth.machine,
                truth.program,
                truth.feature,
                truth.drift_starts,
                first.get((truth.machine, truth.program, truth.feature)),
                truth.first_out_of_tolerance,
            )
        )
    return outcomes


@dataclass(frozen=True)
class SimOptions:
    """What ``monitor sim`` serves: scenario, seed, parts, time compression, ports, wait for Enter."""

    scenario: str = "demo"
    seed: int = 0
    parts: int | None = None
    speed: float = 10.0
    opcua_port: int = 4840
    mtconnect_port: int = 5000
    wait: bool = False


async def serve_cell(options: SimOptions, *, stop: asyncio.Event, say: Callable[[str], None]) -> None:
    """What ``monitor sim`` does: the simulated cell behind its protocol servers until ``stop``;
    ``say`` gets each line a person should read (where the servers listen, progress)."""
    cell = SimCell(load_scenario(options.scenario), seed=options.seed, parts=options.parts)
    async with CellServers(cell, opcua_port=options.opcua_port, mtconnect_port=options.mtconnect_port) as servers:
        for machine in cell.machines:
            kind = servers.protocol[machine.id]
            where = servers.opcua.endpoint if kind == "opcua" and servers.opcua else getattr(servers.mtconnect, "url", "?")
            say(f"{machine.id}: {kind} {where}")
        if options.wait:
            say("servers ready; press Enter to start the batch")
            if not await wait_for_line(stop, say):
                return
        say(f"simulating scenario {options.scenario!r} (seed {options.seed}) at {options.speed:g}x; Ctrl-C stops")
        await run_cell(cell, servers.publish, speed=options.speed, stop=stop)
        if not stop.is_set():
            say("batch finished; servers stay up until Ctrl-C")
            await stop.wait()


async def wait_for_line(stop: asyncio.Event, say: Callable[[str], None]) -> bool:
    """Wait for a line on standard input without blocking the loop; False if stopped first.

    Standard input closed or at its end (``< /dev/null``, a service manager, a finished file) can
    never bring a line: the batch starts at once. Only pipes, sockets and terminals can be waited
    on by the event loop; a regular file or ``/dev/null`` is read directly (that never blocks)."""
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, ValueError, OSError):  # no standard input at all
        say("standard input is closed; starting the batch now")
        return True
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        line = sys.stdin.buffer.readline(4096)
        if not line:
            say("standard input is at its end (e.g. /dev/null); starting the batch now")
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
            say("standard input closed; starting the batch now")
        return not stop.is_set()
    finally:
        transport.close()


async def serve_shdr(
    log_file: Path,
    device_file: Path,
    device: str | None,
    speed: float,
    port: int,
    max_gap: float,
    *,
    stop: asyncio.Event,
    say: Callable[[str], None],
) -> None:
    """What ``monitor sim --shdr-replay`` does: a recorded SHDR log served through our agent, paced
    by its own timestamps (idle stretches longer than ``max_gap`` seconds shortened), until ``stop``."""
    from adapters.mtconnect.agent import MtConnectAgent
    from adapters.mtconnect.devicemodel import devices_from_xml
    from adapters.mtconnect.shdr import replay_shdr

    devices = devices_from_xml(await asyncio.to_thread(device_file.read_bytes))
    names = [d.name for d in devices]
    if not names or (device is not None and device not in names):
        raise MonitorError(f"{device_file} has devices {names}; choose one of them with --device")
    name = device or names[0]
    async with MtConnectAgent(devices, port=port) as agent:
        say(f"{name}: mtconnect {agent.url} (replaying {log_file} at {speed:g}x; Ctrl-C stops)")
        feeder = await replay_shdr(agent, name, log_file, speed=speed, stop=stop, max_gap_s=max_gap)
        if not stop.is_set():
            unknown = sum(feeder.unknown.values())
            say(f"log replayed{f' ({unknown} values not understood)' if unknown else ''}; agent stays up until Ctrl-C")
            if unknown:
                named = ", ".join(f"{key} ({n})" for key, n in feeder.unknown.most_common(12))
                more = len(feeder.unknown) - 12
                say(f"not in {device_file.name}'s device {name}: {named}{f' and {more} more' if more > 0 else ''}")
            if feeder.capped_gaps:
                say(
                    f"{feeder.capped_gaps} idle stretch(es) longer than --max-gap {max_gap:g} s shortened "
                    f"({feeder.skipped_s:,.0f} s of log time not waited for)"
                )
            await stop.wait()
