"""A cell of N simulated machines through the real daemon over MTConnect: CPU, memory, per-part cost.

Per cell size (``--machines 10,25,50``) three processes run side by side, so ``/proc`` gives the
CPU of each one alone (process CPU time, all threads, never wall time):

- the **feeder** (this script with ``--serve``): the product's simulation of N machines (the demo
  cell's two mills, repeated, starts staggered), each machine behind its own MTConnect agent (ours,
  on loopback), published in real time at about ``--obs-per-s`` observations per second per machine
  (spindle load sampled while cutting, tool, program, execution, counter, probes, tool life as
  CuttingTool assets) and one part every ``--part-every-s`` seconds per machine;
- the **daemon**: ``python -m monitor run -c site.yaml`` of ``--daemon-root`` (this checkout by
  default; point it at an older tree to measure that one with the same method), reading every
  agent's ``/sample`` stream (``--interval-ms``), tracking parts, detecting, storing (SQLite), with
  its dashboard and ``/metrics`` (where the observations it received are counted);
- the **bare reader** (``--read``): the same streams read the cheapest way that still reads them,
  HTTP + multipart framing + an lxml parse and walk of every element, no tracking: the baseline.

Every ``--window-s`` the CPU time of daemon and reader is read from ``/proc/<pid>/stat`` and divided
by the observations each received in the window: ``cpu_share_per_kobs`` is the share of one core
per 1,000 observations per second (median and range over the windows after the first, so the
spread says how much the shared machine disturbed it), ``us_per_obs`` the same per observation,
``ratio`` = daemon / bare reader. Resident memory (VmRSS) of the daemon at 1 and 10 minutes and at
the end. ``machine`` says how busy the two cores were meanwhile (load average, and the share of both
cores used by processes other than these three).

The **per-part cost** (tracking context + detection + engine state + store, one transaction) is
measured in this process on the daemon's own :class:`~monitor.pipeline.Pipeline` with a real
SQLite store, for a cell of ``--part-cost-machines`` machines: every machine makes 110 parts and the
first one goes on to part 5,010; the thread CPU time of the ``observe`` call that completes each
part is that part's cost (the tracking of that one observation included, a few microseconds;
the garbage collector set as ``monitor run`` sets it once started),
reported around part 100 and part 5,000, with the engine state bytes written per part and the
cost by piece (``ms_by_piece``: detection, the engine state's shares and their diff, the store's
transaction with its encoding, the rest: tracking and glue; each timed around its call). The long
batch is looked after as a real one: its tools are changed and its clamp creep corrected every 140
parts (``m01_renewed_every``), so part 5,000 is 100 parts into a tool's life with the creep of part
100, the same state detection is in at part 100 (it wore thousands of tolerances off before).

Prints one JSON object. Run: ``nice -n 10 python bench/cell.py`` (about 20 minutes: 3 + 3 + 11
minutes of live cells, then the per-part cost); ``--machines 50 --minutes 2`` for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import yaml
from lxml import etree

from monitor.sim import SimCell, load_scenario
from monitor.sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_BASE_SAMPLE_S = 0.05


# ------------------------------------------------------------------------------ the simulated cell
def cell_scenario(
    machines: int, parts: int, sample_s: float, *, first_parts: int | None = None, renew_every: int | None = None
) -> Scenario:
    """The demo cell's two mills repeated to ``machines`` (ids m01, m02, ...), starts staggered
    over one part period so parts end evenly spread; ``first_parts`` gives m01 a longer batch.

    ``renew_every``: m01 is looked after as a real cell is over a long batch, in cycles of that many
    parts: every tool is replaced after that many cuts and the clamp creep is corrected by an offset
    edit of what it crept in one cycle (:func:`_renewals`). Without it a long batch wears on for
    thousands of parts: by part 5,000 the demo's bores read millimetres off, more than 1,000
    tolerance widths, and are skipped as implausible probe readings."""
    base = load_scenario("demo")
    period = base.machines[0].cycle_s + base.machines[0].idle_s
    specs = []
    for i in range(machines):
        model = base.machines[i % len(base.machines)]
        n = first_parts if (i == 0 and first_parts is not None) else parts
        spec = model.model_dump()
        spec.update(
            id=f"m{i + 1:02d}",
            start_s=period * i / machines,
            breaks=[],
            programs=[{"program": run.program, "parts": n} for run in model.programs],
        )
        if i == 0 and renew_every is not None:
            _renewals(spec, renew_every, n)
        specs.append(spec)
    doc = base.model_dump()
    doc.update(name=f"cell-{machines}", parts=parts, sample_s=sample_s, machines=specs)
    return Scenario.model_validate(doc)


def _renewals(spec: dict[str, Any], every: int, parts: int) -> None:
    """Tool changes and creep corrections every ``every`` parts (in place, on a machine's spec).

    Each tool's life is ``every`` cuts (a sister tool takes over: wear starts again), and at parts
    ``1 + k * every`` an offset edit takes back what each creep step moved its positions in one
    cycle; from the creep's start on, part ``n + k * every`` then has the mean of part ``n``. Neither
    is announced to the daemon (no offset observation, no action): detection sees the steps in the
    values, as it would when an operator acts without the monitor knowing."""
    from monitor.config import PositionFeatureConfig
    from monitor.sim.process import PROCESSES, load_programs

    programs = load_programs()
    for run in spec["programs"]:
        for tool in PROCESSES[run["program"]].tools():
            spec["tools"].setdefault(tool, {})["life_parts"] = every
    corrections = []
    for step in spec["steps"]:
        if step["kind"] != "creep":
            continue
        names = [run["program"] for run in spec["programs"]] if step.get("program") is None else [step["program"]]
        for name in names:
            program = programs[name]
            features = step.get("features") or [f for f, c in program.features.items() if isinstance(c, PositionFeatureConfig)]
            for feature in features:
                config = program.features[feature]
                for axis, rate in (("x", step.get("dx_um_per_part", 0.0)), ("y", step.get("dy_um_per_part", 0.0))):
                    if rate:
                        signal = getattr(config, axis).signal
                        edit = {"kind": "offset", "program": step.get("program"), "signal": signal, "um": -rate * every}
                        corrections += [{**edit, "at_part": at} for at in range(1 + every, parts + 1, every)]
    spec["steps"] = [*spec["steps"], *corrections]


def renewal_period(at: Sequence[int], window: int) -> int | None:
    """The cycle (:func:`cell_scenario`'s ``renew_every``) that puts every part of ``at`` at the phase
    of the first: the shortest that divides every distance from it and renews nothing within
    ``window`` parts of it (None when ``at`` holds one part, or no cycle does)."""
    first = min(at)
    gaps = [n - first for n in at if n != first]
    if not gaps:
        return None
    g = math.gcd(*gaps)
    return next((p for p in range(first + window + 1, g + 1) if g % p == 0), None)


def _rate(sample_s: float) -> tuple[float, float]:
    """(events per simulated second, simulated seconds per part) of one machine at ``sample_s``."""
    cell = SimCell(cell_scenario(1, 6, sample_s), seed=1)
    events = sum(1 for _ in cell.events())
    span = (cell.end - cell.start).total_seconds()
    return events / span, span / 6


def calibrate(obs_per_s: float, part_every_s: float) -> tuple[float, float]:
    """(sample_s, speed) that give ``obs_per_s`` per machine and one part every ``part_every_s``.

    Events per simulated second are ``a / sample_s + b`` (load samples while cutting, plus the rest);
    two short simulations give a and b."""
    r1, period = _rate(_BASE_SAMPLE_S)
    r2, _ = _rate(_BASE_SAMPLE_S * 4)
    a = (r1 - r2) / (1 / _BASE_SAMPLE_S - 1 / (_BASE_SAMPLE_S * 4))
    b = r1 - a / _BASE_SAMPLE_S
    speed = period / part_every_s
    per_sim_s = obs_per_s / speed
    if per_sim_s <= b:
        raise SystemExit(f"--obs-per-s {obs_per_s} is below what one machine publishes without load samples")
    return a / (per_sim_s - b), speed


# ------------------------------------------------------------------------------ --serve: the feeder
async def serve(machines: int, parts: int, sample_s: float, speed: float, ready: Path, seed: int) -> None:
    """Every machine behind its own agent, published in real time until SIGTERM."""
    from monitor.sim.mtconnect_agent import SimAgentBinding

    cell = SimCell(cell_scenario(machines, parts, sample_s), seed=seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        agents: dict[str, SimAgentBinding] = {}
        for spec in cell.machines:
            agents[spec.id] = await stack.enter_async_context(SimAgentBinding([spec]))
        info = {m: {"url": a.url, "signals": a.signal_map(m)} for m, a in agents.items()}
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(ready)
        events = cell.events()
        wall0, sim0 = loop.time(), cell.start
        pending = next(events, None)
        while pending is not None and not stop.is_set():
            horizon = (loop.time() - wall0) * speed
            while pending is not None and (pending.time - sim0).total_seconds() <= horizon:
                agents[pending.machine].publish(pending)
                pending = next(events, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
        await stop.wait()


# ------------------------------------------------------------------------------ --read: the baseline
async def _read_stream(session: aiohttp.ClientSession, url: str, device: str, interval_ms: int, counts: list[int]) -> None:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    async with session.get(f"{url}/{device}/current") as resp:
        root = etree.fromstring(await resp.read(), parser)
    header = next(el for el in root.iter() if isinstance(el.tag, str) and el.tag.endswith("Header"))
    nxt = header.get("nextSequence")
    path = f"{url}/{device}/sample?from={nxt}&count=1000&interval={interval_ms}&heartbeat=10000"
    async with session.get(path, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        content = resp.content
        while True:
            line = await content.readline()
            if not line:
                return
            if not line.startswith(b"--"):
                continue
            length = 0
            while True:
                head = (await content.readline()).strip()
                if not head:
                    break
                name, _, value = head.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await content.readexactly(length)
            root = etree.fromstring(body, parser)
            n = 0
            for el in root.iter():
                if el.get("sequence") is not None:
                    n += 1
            counts[0] += n
            counts[1] += 1


async def read(urls: Path, interval_ms: int, out: Path) -> None:
    """Read every machine's stream; write the observations and documents received to ``out`` every second."""
    info: dict[str, Any] = json.loads(urls.read_text())  # noqa: ASYNC240 - before anything runs
    counts = [0, 0]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_read_stream(session, m["url"], machine, interval_ms, counts)) for machine, m in info.items()]
        while not stop.is_set():
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"observations": counts[0], "documents": counts[1]}))
            tmp.replace(out)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        for task in tasks:
            task.cancel()


# ------------------------------------------------------------------------------ measuring processes
def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


_METRIC = re.compile(r"^(cnc_monitor_source_observations_total|cnc_monitor_parts_total)\{[^}]*\} ([0-9.e+]+)$", re.M)


def daemon_counts(metrics_url: str) -> tuple[float, float]:
    """(observations received, parts stored) from the daemon's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    obs = parts = 0.0
    for name, value in _METRIC.findall(text):
        if name.startswith("cnc_monitor_source"):
            obs += float(value)
        else:
            parts += float(value)
    return obs, parts


@dataclass
class Sample:
    t: float
    daemon_cpu: float
    reader_cpu: float
    feeder_cpu: float
    daemon_obs: float
    reader_obs: float
    parts: float
    rss_mb: float
    busy: tuple[float, float]
    load: float


@dataclass
class LiveRun:
    machines: int
    samples: list[Sample] = field(default_factory=list)
    rss_at: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _spread(values: Sequence[float], digits: int = 4) -> dict[str, float]:
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def summarise(run: LiveRun, window_s: float) -> dict[str, Any]:
    """Per window: CPU shares, rates and the ratio; then median and range over the windows."""
    windows = list(zip(run.samples, run.samples[1:], strict=False))[1:]  # the first window warms up
    d_share, r_share, d_us, r_us, ratio, rate, others, loads, feeder = [], [], [], [], [], [], [], [], []
    for a, b in windows:
        dt = b.t - a.t
        d_obs, r_obs = b.daemon_obs - a.daemon_obs, b.reader_obs - a.reader_obs
        if d_obs <= 0 or r_obs <= 0:
            continue
        d_cpu, r_cpu, f_cpu = b.daemon_cpu - a.daemon_cpu, b.reader_cpu - a.reader_cpu, b.feeder_cpu - a.feeder_cpu
        d_share.append(d_cpu / dt / (d_obs / dt / 1000))
        r_share.append(r_cpu / dt / (r_obs / dt / 1000))
        d_us.append(d_cpu / d_obs * 1e6)
        r_us.append(r_cpu / r_obs * 1e6)
        ratio.append(d_share[-1] / r_share[-1])
        rate.append(d_obs / dt)
        busy = (b.busy[0] - a.busy[0]) / (b.busy[1] - a.busy[1]) * (os.cpu_count() or 1)
        others.append(busy - (d_cpu + r_cpu + f_cpu) / dt)
        loads.append(b.load)
        feeder.append(f_cpu / dt)
    last, first = run.samples[-1], run.samples[0]
    span = last.t - first.t
    daemon_core = (last.daemon_cpu - run.samples[1].daemon_cpu) / (last.t - run.samples[1].t) if len(run.samples) > 2 else None
    return {
        "machines": run.machines,
        "minutes": round(span / 60, 1),
        "windows": len(d_share),
        "window_s": window_s,
        "obs_per_s": _spread(rate, 0),
        "parts_stored": int(last.parts),
        "daemon": {
            "core_share": None if daemon_core is None else round(daemon_core, 4),
            "cpu_share_per_kobs": _spread(d_share),
            "us_per_obs": _spread(d_us, 1),
            "rss_mb": {k: round(v, 1) for k, v in run.rss_at.items()},
        },
        "bare_reader": {"cpu_share_per_kobs": _spread(r_share), "us_per_obs": _spread(r_us, 1)},
        "ratio": _spread(ratio, 2),
        "feeder_core_share": _spread(feeder, 3),
        "machine": {"loadavg": _spread(loads, 2), "cores_used_by_others": _spread(others, 2)},
        "notes": run.notes,
    }


def run_live(args: argparse.Namespace, machines: int, minutes: float, sample_s: float, speed: float, work: Path) -> LiveRun:
    """One cell size: feeder, daemon and bare reader; samples every window until ``minutes`` pass."""
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.iterdir():  # a kept folder of an earlier run: its agents, counts and store are gone
        if stale.is_file():
            stale.unlink()
    run = LiveRun(machines)
    parts = int(minutes * 60 / args.part_every_s) + 6
    ready = work / "agents.json"
    me = [sys.executable, str(Path(__file__).resolve())]
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], name: str, **kw: Any) -> subprocess.Popen[bytes]:
        log = (work / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
        procs.append(proc)
        return proc

    try:
        serve_args = ["--serve", str(machines), "--parts", str(parts), "--sample-s", str(sample_s), "--speed", str(speed)]
        feeder = start([*me, *serve_args, "--ready", str(ready), "--seed", str(args.seed)], "feeder")
        _wait_for(lambda: ready.exists(), 120, "the feeder's agents", procs)
        agents: dict[str, Any] = json.loads(ready.read_text())
        store = work / "cell.db"
        site = {
            "site": f"bench-cell-{machines}",
            "store": {"path": str(store)},
            "programs": str(ROOT / "monitor" / "sim" / "programs"),
            "dashboard": {"enabled": True, "port": 0},
            "machines": [
                {
                    "id": m,
                    "source": {"type": "mtconnect", "url": a["url"], "device": m, "interval_ms": args.interval_ms},
                    "signals": a["signals"],
                }
                for m, a in agents.items()
            ],
        }
        site_file = work / "site.yaml"
        site_file.write_text(yaml.safe_dump(site, sort_keys=False))
        root = Path(args.daemon_root).resolve()
        env = {**os.environ, "PYTHONPATH": str(root)}
        started = time.monotonic()
        daemon = start([sys.executable, "-m", "monitor", "run", "-c", str(site_file)], "daemon", cwd=root, env=env)
        runtime = Path(f"{store}.daemon.json")
        _wait_for(lambda: runtime.exists() and "dashboard_url" in runtime.read_text(), 120, "the daemon", procs)
        dashboard = json.loads(runtime.read_text())["dashboard_url"]
        metrics = dashboard.rstrip("/") + "/metrics"
        counts_file = work / "reader.json"
        reader = start([*me, "--read", str(ready), "--interval-ms", str(args.interval_ms), "--out", str(counts_file)], "reader")
        _wait_for(counts_file.exists, 60, "the bare reader", procs)

        def sample() -> Sample:
            obs, stored = daemon_counts(metrics)
            reader_obs = float(json.loads(counts_file.read_text())["observations"])
            return Sample(
                time.monotonic(),
                cpu_s(daemon.pid),
                cpu_s(reader.pid),
                cpu_s(feeder.pid),
                obs,
                reader_obs,
                stored,
                rss_mb(daemon.pid),
                machine_busy(),
                loadavg(),
            )

        end = started + minutes * 60
        marks = {"1min": started + 60, "10min": started + 600}
        next_window = time.monotonic()
        while time.monotonic() < end:
            now = time.monotonic()
            for name, at in list(marks.items()):
                if now >= at:
                    run.rss_at[name] = rss_mb(daemon.pid)
                    del marks[name]
            if now >= next_window:
                run.samples.append(sample())
                next_window += args.window_s
                _progress(run, machines)
            for proc in procs:
                if proc.poll() is not None:
                    raise SystemExit(f"a process of the bench ended early ({proc.args!r}); see {work}")
            time.sleep(min(1.0, max(0.05, min(next_window, *marks.values(), end) - time.monotonic())))
        run.samples.append(sample())
        run.rss_at["end"] = rss_mb(daemon.pid)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                run.notes.append(f"{proc.args!r} did not stop within 30 s of SIGTERM; killed")
    return run


def _progress(run: LiveRun, machines: int) -> None:
    s = run.samples[-1]
    print(
        f"[cell {machines}] t={len(run.samples)} daemon cpu {s.daemon_cpu:.1f}s obs {s.daemon_obs:.0f} "
        f"reader obs {s.reader_obs:.0f} parts {s.parts:.0f} rss {s.rss_mb:.0f} MB load {s.load:.2f}",
        file=sys.stderr,
    )


def _wait_for(ready: Any, timeout_s: float, what: str, procs: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{what}: a process ended early ({proc.args!r})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready within {timeout_s:g} s")
        time.sleep(0.2)


# ------------------------------------------------------------------------------ per-part cost
def part_cost(machines: int, seed: int, at: Sequence[int], work: Path) -> dict[str, Any]:
    """Per-part CPU of the daemon's pipeline (thread time of the observe call that completes the
    part) around each part number of ``at``, in a cell of ``machines`` machines on a real store."""
    from monitor.cli.core import _settle_garbage_collector
    from monitor.config import load_site
    from monitor.pipeline import Pipeline, _encoded
    from monitor.store import SqliteStore

    window = 10
    last = max(at) + window
    others = min(at) + window
    # m01's long batch gets tool changes and creep corrections, so that every part of ``at`` finds
    # detection in the state of the first (the same wear, creep and conditions), not a batch worn
    # thousands of tolerances off; parts up to the first are unchanged by it
    renew = renewal_period(at, window)
    cell = SimCell(cell_scenario(machines, others, 0.5, first_parts=last, renew_every=renew), seed=seed)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("part-cost.db*"):
        stale.unlink()
    (work / "empty.jsonl").write_text("")
    site_file = work / "site.yaml"
    site_file.write_text(
        yaml.safe_dump(
            {
                "site": "bench-part-cost",
                "store": {"path": "part-cost.db"},
                "programs": str(ROOT / "monitor" / "sim" / "programs"),
                "machines": [{"id": m.id, "source": {"type": "replay", "path": "empty.jsonl"}} for m in cell.machines],
            }
        )
    )
    site = load_site(site_file)
    state_bytes: list[int] = []
    clock = time.thread_time
    inside: dict[str, float] = {}
    """Thread time of the observe call under way, by piece (store, detection, state): the breakdown."""

    def timed(run: Any, piece: str) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            t = clock()
            try:
                return run(*args, **kw)
            finally:
                inside[piece] = inside.get(piece, 0.0) + clock() - t

        return call

    class CountingStore(SqliteStore):
        """The real store; counts the bytes of engine state each part writes. Each state is encoded
        here, once, and handed on as the JSON text the store would have made of it (the store writes
        text as it is): counting them must not encode them a second time inside the measured call."""

        def record_part(self, part: Any, alerts: Any = (), states: Any = (), refreshed: Any = ()) -> bool:
            t = clock()
            states = [(name, _encoded(state)) for name, state in states]
            state_bytes.append(sum(_state_size(s) for name, s in states if name.startswith("drift-engine:")))
            try:
                return super().record_part(part, alerts, states, refreshed)
            finally:
                inside["store"] = inside.get("store", 0.0) + clock() - t

    costs: dict[int, list[float]] = {n: [] for n in at}
    sizes: dict[int, list[int]] = {n: [] for n in at}
    by_program: dict[int, dict[str, list[float]]] = {n: {} for n in at}
    pieces: dict[int, dict[str, list[float]]] = {n: {k: [] for k in _PIECES} for n in at}
    with CountingStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        # the collector as the running daemon has it (monitor run settles it once started: what
        # start-up built is frozen, young collections every 10,000 allocations, not 700)
        _settle_garbage_collector()
        engine = pipeline.engine
        engine.assess = timed(engine.assess, "detection")  # type: ignore[method-assign]
        pipeline._engine_writes = timed(pipeline._engine_writes, "state")  # type: ignore[method-assign]
        started = time.process_time()
        for event in cell.events(include_spindle_samples=False):
            obs = event.observation()
            inside.clear()
            t = clock()
            changes = pipeline.observe([obs])
            spent = clock() - t
            for part in changes.parts:
                for n in at:
                    if abs(part.part_number - n) <= window and part.status == "complete":
                        costs[n].append(spent / len(changes.parts))
                        named = {k: inside.get(k, 0.0) for k in _PIECES if k != "rest"}
                        for k, v in {**named, "rest": spent - sum(named.values())}.items():
                            pieces[n][k].append(v / len(changes.parts))
                        sizes[n].append(state_bytes[-1])
                        by_program[n].setdefault(part.program or "", []).append(spent / len(changes.parts))
        pipeline.close()
        total = time.process_time() - started
        stored = store.part_count()
    return {
        "machines": machines,
        "parts_stored": stored,
        "m01_renewed_every": renew,
        "seconds_cpu": round(total, 1),
        **{
            f"at_part_{n}": {
                "ms": _spread([1000 * c for c in costs[n]], 3),
                # the long machine runs one of the cell's two programs: compare part 5,000 with its
                # own program's parts around part 100 (the other program has fewer features)
                "ms_by_program": {name: _spread([1000 * c for c in v], 3) for name, v in sorted(by_program[n].items())},
                "engine_state_bytes": _spread([float(b) for b in sizes[n]], 0),
                "ms_by_piece": {k: _spread([1000 * c for c in v], 3) for k, v in pieces[n].items()},
            }
            for n in at
        },
    }


_PIECES = ("detection", "state", "store", "rest")
"""The per-part cost's breakdown (thread time of each, per part): the engine's assessment of the
part; the engine state's shares built and diffed (Pipeline._engine_writes); the store's transaction
with its encoding (record_part); the rest (tracking the observation, the pipeline's glue)."""


def _state_size(state: Any) -> int:
    """Bytes of JSON a state write stores (whole, or what changed: a StateDelta where the store has it)."""
    change = getattr(state, "change", state)
    return len(change if isinstance(change, str) else json.dumps(change))


# ------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--machines", default="10,25,50", help="cell sizes, comma-separated")
    ap.add_argument("--minutes", type=float, default=11.0, help="live minutes of the largest cell")
    ap.add_argument("--short-minutes", type=float, default=3.0, help="live minutes of the smaller cells")
    ap.add_argument("--window-s", type=float, default=60.0, help="CPU is measured over windows this long")
    ap.add_argument("--obs-per-s", type=float, default=100.0, help="observations per second per machine")
    ap.add_argument("--part-every-s", type=float, default=40.0, help="one part per machine this often")
    ap.add_argument("--interval-ms", type=int, default=500, help="/sample streaming interval of daemon and reader")
    ap.add_argument("--daemon-root", default=str(ROOT), help="checkout whose daemon runs (default: this one)")
    ap.add_argument("--part-cost-machines", type=int, default=50)
    ap.add_argument("--part-cost-at", default="100,5000")
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--skip-part-cost", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", help="keep the work files (site, store, logs) in this folder")
    # the child processes
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--parts", type=int, default=40, help=argparse.SUPPRESS)
    ap.add_argument("--sample-s", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--speed", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    ap.add_argument("--read", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.parts, args.sample_s, args.speed, Path(args.ready), args.seed))
        return
    if args.read is not None:
        asyncio.run(read(Path(args.read), args.interval_ms, Path(args.out)))
        return
    sizes = [int(x) for x in args.machines.split(",") if x]
    with _workdir(args.keep) as work:
        sample_s, speed = calibrate(args.obs_per_s, args.part_every_s)
        out: dict[str, Any] = {
            "benchmark": "cell",
            "daemon_root": str(Path(args.daemon_root).resolve()),
            "setup": {
                "obs_per_s_per_machine": args.obs_per_s,
                "part_every_s": args.part_every_s,
                "interval_ms": args.interval_ms,
                "sample_s": round(sample_s, 5),
                "speed": round(speed, 3),
                "cores": os.cpu_count(),
            },
            "runs": [],
        }
        if not args.skip_live:
            for n in sizes:
                minutes = args.minutes if n == max(sizes) else args.short_minutes
                live = run_live(args, n, minutes, sample_s, speed, work / f"cell-{n}")
                out["runs"].append(summarise(live, args.window_s))
                print(json.dumps(out["runs"][-1]), file=sys.stderr)
        if not args.skip_part_cost:
            at = [int(x) for x in args.part_cost_at.split(",")]
            out["part_cost"] = part_cost(args.part_cost_machines, args.seed, at, work / "part-cost")
        out["targets"] = {
            "daemon_core_share_50_machines": 0.10,
            "daemon_us_per_obs": 15,
            "rss_mb_max": 300,
            "rss_growth_after_1min": 0.10,
            "part_cost_ms": 1.0,
            "engine_state_bytes_per_part": 10_000,
        }
        print(json.dumps(out))


@contextlib.contextmanager
def _workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bench-cell-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    main()
