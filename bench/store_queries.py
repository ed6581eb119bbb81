"""What the CLI and the dashboard cost on a large store: queries that must not grow with it.

Builds stores of ``--sizes`` parts (10,000 and 100,000 by default) through the store's own API
(``record_part``, one transaction per part, as the daemon writes them): ``--machines`` machines
alternating the simulator's two programs (O1001: two positions, two diameters; O2002), seeded
measurements around nominal with a slow drift, tools and spindle figures, and an alert that opens
and closes every 40 parts of each machine. A built store is kept (``--cache``) and reused.

Then, per store, median (and range) over ``--repeat`` runs:

- ``capability_cli``: ``monitor parts -c SITE --capability --json`` as a process: CPU time of the
  child (user + system, from ``getrusage``) and wall time, cold (no capability cache file: every
  group computed, the file written); ``capability_cli_warm`` with the cache valid for every group;
  ``capability_cli_one_group`` with a new part of one group stored before each run (one group of
  20 computed again); each with the hash of its output (the same cold and warm);
  ``capability_in_process`` the rows from :func:`monitor.queries.capability_rows` on an open
  store, without the cache;
- ``feature_api``: ``GET /api/features/<machine>/O1001/hole1_pos`` (and ``hole1_dia``) served by
  the real dashboard on a real core over the store, wall time per request and answer size: the
  dashboard keeps what a chart read from the store until a part of that machine and program is
  stored (what a polling page sees); ``after_part`` the request after a new part of that machine
  and program was stored through the core's store (what a page sees once per part: the chart read
  again, the capability brought up to date); ``uncached`` the same requests with all that was kept
  emptied before each (the first request after a start);
- ``parts_api``: ``GET /api/parts?machine=..&program=..&last=100``; ``alerts_api``:
  ``GET /api/alerts?machine=..&last=100``;
- the baseline, measured in the same run: ``GET /api/alerts/<unknown>`` on the same server (the
  fixed cost of one request: HTTP, the core's thread, one primary-key lookup); every API figure
  has ``ratio`` = its time / the baseline's. The API is served from a copy of the built store (the
  parts ``after_part`` adds are not kept).

``cli_start``: CPU time of ``monitor --help``, ``monitor parts --help`` and ``monitor --version``
as processes, against ``python -c pass`` (the interpreter alone) as the baseline.

Run: ``nice -n 10 python bench/store_queries.py`` (building the 100,000-part store takes a few
minutes the first time). ``--root`` runs the CLI of another checkout (the store it builds must be
one that checkout can open).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import numpy as np
import yaml

from monitor.config import Site, load_site
from monitor.model import (
    Alert,
    AlertKind,
    AlertState,
    PartRecord,
    PartStatus,
    PositionFeature,
    Severity,
    SizeFeature,
    SpindleStats,
    ToolUse,
)
from monitor.store import open_store

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "monitor" / "sim" / "programs"


def _site(folder: Path, store: Path, machines: int) -> Path:
    (folder / "empty.jsonl").write_text("")
    path = folder / f"site-{store.stem}.yaml"
    doc = {
        "site": "bench-queries",
        "store": {"path": str(store)},
        "programs": str(PROGRAMS),
        "dashboard": {"enabled": False},
        "machines": [{"id": f"m{i + 1:02d}", "source": {"type": "replay", "path": "empty.jsonl"}} for i in range(machines)],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def build(site: Site, parts: int, machines: int, seed: int) -> float:
    """Record ``parts`` parts through the store's API; returns the seconds it took."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 1, 5, 6, tzinfo=UTC)
    programs = sorted(site.programs)
    started = time.perf_counter()
    per_machine = parts // machines
    with open_store(site.store_path) as store:
        for n in range(1, per_machine + 1):
            for i in range(machines):
                machine = f"m{i + 1:02d}"
                name = programs[i % len(programs)]
                program = site.programs[name]
                end = t0 + timedelta(seconds=120 * n + 2.3 * i)
                measurements: dict[str, float] = {}
                for feature in program.feature_models():
                    for signal, nominal in _axes(feature):
                        measurements[signal] = round(nominal + 0.000002 * (n % 400) + 0.002 * rng.standard_normal(), 6)
                part = PartRecord(
                    key=f"{machine}/{name}/{end.isoformat()}",
                    machine=machine,
                    program=name,
                    part_number=n,
                    start=end - timedelta(seconds=90),
                    end=end,
                    status=PartStatus.COMPLETE if n % 50 else PartStatus.INCOMPLETE,
                    measurements=measurements,
                    tools=(ToolUse("12", n * 0.3, n * 0.3 + 0.3, 40.0), ToolUse("7", n * 0.1, n * 0.1 + 0.1, 20.0)),
                    spindle=SpindleStats(mean_load=35.0, peak_load=62.0, cutting_time=60.0, energy=2100.0),
                    counter=n,
                )
                alerts: list[Alert] = []
                if n % 40 in (10, 20):
                    watched = program.feature_models()[0].name
                    alerts.append(
                        Alert(
                            id=f"{machine}/{name}/{watched}/ewma/{n - n % 40 + 10}",
                            machine=machine,
                            program=name,
                            feature=watched,
                            kind=AlertKind.EWMA,
                            severity=Severity.WARNING,
                            state=AlertState.OPEN if n % 40 == 10 else AlertState.CLOSED,
                            part_number=n,
                            message=f"{watched} drifting (bench)",
                            time=end,
                            evidence={"ewma": 0.004, "limit": 0.003},
                            part_key=part.key,
                        )
                    )
                store.record_part(part, alerts)
    return time.perf_counter() - started


def _axes(feature: Any) -> list[tuple[str, float]]:
    """(probe signal, nominal) of what the probe measures; none for inspection-only features."""
    if isinstance(feature, PositionFeature):
        return [(axis.signal, axis.nominal) for _, axis in feature.axes]
    if isinstance(feature, SizeFeature) and feature.signal is not None:
        return [(feature.signal, feature.nominal)]
    return []


def _spread(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(
    args: list[str],
    root: Path,
    repeat: int,
    *,
    env: dict[str, str] | None = None,
    before: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """CPU (child rusage) and wall time of a CLI process, ``repeat`` times (``before`` each run, not
    timed)."""
    cpu: list[float] = []
    wall: list[float] = []
    size = 0
    digest = ""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(root)}
    for _ in range(repeat):
        if before is not None:
            before()
        c, w = _child_cpu(), time.perf_counter()
        done = subprocess.run(args, cwd=root, env=env, capture_output=True, check=True)
        wall.append(1000 * (time.perf_counter() - w))
        cpu.append(1000 * (_child_cpu() - c))
        size = len(done.stdout)
        digest = hashlib.sha256(done.stdout).hexdigest()[:16]
    return {"cpu_ms": _spread(cpu, 1), "wall_ms": _spread(wall, 1), "output_bytes": size, "output_sha256": digest}


async def _api(site: Site, requests: dict[str, str], repeat: int) -> dict[str, Any]:
    """Each request ``repeat`` times against the real dashboard on a real core over the store."""
    from monitor.daemon import open_core
    from monitor.dashboard.api import FEATURE_CACHE_KEY
    from monitor.dashboard.server import serve_dashboard

    out: dict[str, Any] = {}
    async with open_core(site) as core:
        runner = await serve_dashboard(core, "127.0.0.1", 0)
        try:
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            async with aiohttp.ClientSession() as session:
                for name, path in requests.items():
                    wall: list[float] = []
                    cpu: list[float] = []
                    size = 0
                    for _ in range(repeat):
                        w, c = time.perf_counter(), time.process_time()
                        async with session.get(base + path) as resp:
                            body = await resp.read()
                        wall.append(1000 * (time.perf_counter() - w))
                        cpu.append(1000 * (time.process_time() - c))
                        size = len(body)
                    out[name] = {"path": path, "wall_ms": _spread(wall), "cpu_ms": _spread(cpu), "bytes": size}
                    if name.startswith("feature_api"):  # what a request costs once a part was stored
                        new_wall: list[float] = []
                        new_cpu: list[float] = []
                        machine, program = path.split("/")[3:5]
                        for _ in range(repeat):
                            await core.read(functools.partial(_store_next_part, machine, program))
                            w, c = time.perf_counter(), time.process_time()
                            async with session.get(base + path) as resp:
                                await resp.read()
                            new_wall.append(1000 * (time.perf_counter() - w))
                            new_cpu.append(1000 * (time.process_time() - c))
                        appended = runner.app[FEATURE_CACHE_KEY].appended  # capabilities brought up to date, so far
                        out[name]["after_part"] = {"wall_ms": _spread(new_wall), "cpu_ms": _spread(new_cpu), "appended": appended}
                    if name.startswith("feature_api"):  # what a request costs when the chart is read afresh
                        cold_wall: list[float] = []
                        cold_cpu: list[float] = []
                        for _ in range(repeat):
                            runner.app[FEATURE_CACHE_KEY].clear()
                            w, c = time.perf_counter(), time.process_time()
                            async with session.get(base + path) as resp:
                                await resp.read()
                            cold_wall.append(1000 * (time.perf_counter() - w))
                            cold_cpu.append(1000 * (time.process_time() - c))
                        out[name]["uncached"] = {"wall_ms": _spread(cold_wall), "cpu_ms": _spread(cold_cpu)}
        finally:
            await runner.cleanup()
    base_ms = out["baseline"]["wall_ms"]["median"]
    for name, entry in out.items():
        if name != "baseline":
            entry["ratio"] = round(entry["wall_ms"]["median"] / base_ms, 1)
    return out


def _store_next_part(machine: str, program: str, store: Any) -> None:
    """Store one more complete part of ``machine``/``program`` (the latest complete one's
    measurements, a minute after the latest part) through the core's own store, as the daemon
    stores a part."""
    latest = store.parts(machine=machine, program=program, last=1)[0]
    complete = store.parts(machine=machine, program=program, status=PartStatus.COMPLETE, last=1)[0]
    end = latest.end + timedelta(minutes=1)
    key = f"{machine}/{program}/{end.isoformat()}"
    store.record_part(dataclasses.replace(complete, key=key, part_number=latest.part_number + 1, start=latest.end, end=end))


def _time(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    wall: list[float] = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        wall.append(1000 * (time.perf_counter() - t))
    return _spread(wall, 1)


def measure(site_path: Path, root: Path, machines: int, repeat: int) -> dict[str, Any]:
    from monitor.queries import capability_rows

    site = load_site(site_path)
    machine = f"m{machines // 2 + 1:02d}"
    program = sorted(site.programs)[(machines // 2) % len(site.programs)]
    o1001 = "m01"
    result: dict[str, Any] = {}
    with open_store(site.store_path):  # a kept store an older checkout built: migrated, as this checkout's daemon does
        pass
    with open_store(site.store_path, read_only=True) as store:
        result["parts"] = store.part_count()
        rows: list[dict[str, Any]] = []

        def cap() -> None:
            rows[:] = capability_rows(site, store)

        result["capability_in_process_ms"] = _time(cap, max(1, repeat // 3))
        result["capability_rows"] = len(rows)
        result["capability_n"] = sum(int(r.get("n") or 0) for r in rows)
    with tempfile.TemporaryDirectory(prefix="store-queries-cache-") as cache_home:
        result.update(_capability_cli(site, site_path, root, max(1, repeat // 3), Path(cache_home), o1001))
    requests = {
        "baseline": "/api/alerts/no-such-alert",
        "feature_api_position": f"/api/features/{o1001}/O1001/hole1_pos",
        "feature_api_size": f"/api/features/{o1001}/O1001/hole1_dia",
        "parts_api": f"/api/parts?machine={machine}&program={program}&last=100",
        "alerts_api": f"/api/alerts?machine={machine}&last=100",
    }
    with tempfile.TemporaryDirectory(prefix="store-queries-") as work:  # the API's writes stay in a copy
        copy = Path(work) / site.store_path.name
        shutil.copyfile(site.store_path, copy)
        served = load_site(_site(Path(work), copy, machines))
        result["api"] = asyncio.run(_api(served, requests, repeat))
    return result


def _capability_cli(site: Site, site_path: Path, root: Path, repeat: int, cache_home: Path, machine: str) -> dict[str, Any]:
    """``monitor parts --capability --json`` as a process, with the capability cache in ``cache_home``
    (``XDG_CACHE_HOME``): ``capability_cli`` cold (no cache file: every group computed, the file
    written), ``capability_cli_warm`` with the file valid for every group, and
    ``capability_cli_one_group`` after a new part of ``machine``/O1001 was stored before each run (in
    a copy of the store, by ``root``'s own store code, so that an older checkout reads it). Each has
    ``output_sha256``: the same answer cold and warm, or the cache is wrong. A checkout without the
    cache computes every run."""
    cli = [sys.executable, "-m", "monitor", "parts", "-c", str(site_path), "--capability", "--json"]
    env = {"XDG_CACHE_HOME": str(cache_home)}
    run_env = {**os.environ, **env, "PYTHONPATH": str(root)}
    out: dict[str, Any] = {}
    cold = functools.partial(shutil.rmtree, cache_home / "monitor", ignore_errors=True)
    out["capability_cli"] = run_cli(cli, root, repeat, env=env, before=cold)
    subprocess.run(cli, cwd=root, env=run_env, capture_output=True, check=True)
    out["capability_cli_warm"] = run_cli(cli, root, repeat, env=env)
    with tempfile.TemporaryDirectory(prefix="store-queries-one-group-") as work:
        copy = Path(work) / site.store_path.name
        shutil.copyfile(site.store_path, copy)
        copied = _site(Path(work), copy, len(site.machine_ids()))
        one = [*cli[:5], str(copied), *cli[6:]]
        script = (  # _store_next_part itself, run by root's store code (an older checkout reads what it wrote)
            "import dataclasses, sys\nfrom datetime import timedelta\nfrom typing import Any\n"
            "from monitor.model import PartStatus\nfrom monitor.store import open_store\n"
            f"{inspect.getsource(_store_next_part)}"
            "with open_store(sys.argv[1]) as store:\n    _store_next_part(sys.argv[2], 'O1001', store)\n"
        )
        store_one = [sys.executable, "-c", script, str(copy), machine]
        subprocess.run(one, cwd=root, env=run_env, capture_output=True, check=True)  # the copy's cache filled

        def next_part() -> None:
            subprocess.run(store_one, cwd=root, env=run_env, capture_output=True, check=True)

        out["capability_cli_one_group"] = run_cli(one, root, repeat, env=env, before=next_part)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sizes", default="10000,100000", help="parts per store, comma-separated")
    ap.add_argument("--machines", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", default="/tmp/bench-store-queries", help="folder that keeps the built stores")
    ap.add_argument("--root", default=str(ROOT), help="checkout whose CLI runs (default: this one)")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"benchmark": "store_queries", "root": str(root), "machines": args.machines, "stores": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        store = cache / f"parts-{size}.db"
        site_path = _site(cache, store, args.machines)
        site = load_site(site_path)
        entry: dict[str, Any] = {}
        if not store.exists():
            print(f"building a {size}-part store at {store} ...", file=sys.stderr)
            entry["build_s"] = round(build(site, size, args.machines, args.seed), 1)
        entry.update(measure(site_path, root, args.machines, args.repeat))
        entry["store_mb"] = round(store.stat().st_size / 2**20, 1)
        out["stores"][str(size)] = entry
        print(json.dumps(entry), file=sys.stderr)
    python = [sys.executable, "-m", "monitor"]
    start = {
        "baseline_python": run_cli([sys.executable, "-c", "pass"], root, args.repeat),
        "monitor_help": run_cli([*python, "--help"], root, args.repeat),
        "monitor_parts_help": run_cli([*python, "parts", "--help"], root, args.repeat),
        "monitor_version": run_cli([*python, "--version"], root, args.repeat),
    }
    base = start["baseline_python"]["cpu_ms"]["median"]
    for entry in start.values():
        entry["ratio"] = round(entry["cpu_ms"]["median"] / base, 1) if base else math.nan
    out["cli_start"] = start
    out["targets"] = {"capability_cli_ms": 1000, "feature_api_ms": 20, "parts_api_ms": 5, "cli_start_cpu_ms": 300}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
