"""How long a reload takes in the real daemon, against the cost of loading the same files.

A daemon runs the demo cell (two simulated machines as replay sources, their batch already stored,
so the engine holds every feature's history); then, timed from the request to the answer:

- ``unchanged``: SIGHUP with nothing changed (load, compare, nothing to apply);
- ``program_changed``: one feature's limits changed in one program file (its plans are solved
  again: EWMA/CUSUM limits for the program's ARL budget; the other features keep their state);
- ``machine_added``: a third machine added to the site file (a tracker and a source started).

``baseline_load_s`` is ``load_site`` alone on the same files in the same process; ``ratio`` is each
reload over it. Prints one JSON object. Run: ``python3 bench/reload.py [--parts 100] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from monitor.codec import observation_to_dict
from monitor.config import load_site
from monitor.sim import SimCell, load_scenario
from monitor.sim.process import PROGRAMS_DIR
from tests.daemons import running_daemon


def write_cell(folder: Path, parts: int) -> Path:
    cell = SimCell(load_scenario("demo"), seed=1, parts=parts)
    shutil.copytree(PROGRAMS_DIR, folder / "programs")
    machines = []
    for machine in cell.machines:
        replay = folder / f"{machine.id}.jsonl"
        lines = [json.dumps(observation_to_dict(e.observation())) for e in cell.events() if e.machine == machine.id]
        replay.write_text("\n".join(lines) + "\n")
        machines.append({"id": machine.id, "source": {"type": "replay", "path": str(replay)}})
    site = folder / "site.yaml"
    site.write_text(
        yaml.safe_dump({"site": "bench", "programs": "programs", "dashboard": {"enabled": False}, "machines": machines})
    )
    return site


def widen(program: Path, upper: float) -> None:
    doc = yaml.safe_load(program.read_text())
    doc["features"]["hole1_dia"]["upper"] = upper
    program.write_text(yaml.safe_dump(doc))


def add_machine(site_path: Path, machine: str) -> None:
    site = yaml.safe_load(site_path.read_text())
    extra = site_path.parent / f"{machine}.jsonl"
    extra.write_text("")
    site["machines"].append({"id": machine, "source": {"type": "replay", "path": str(extra)}})
    site_path.write_text(yaml.safe_dump(site))


async def measure(site_path: Path, parts: int, repeat: int) -> dict[str, Any]:
    timings: dict[str, list[float]] = {"unchanged": [], "program_changed": [], "machine_added": []}
    async with running_daemon(load_site(site_path)) as running:
        daemon = running.daemon
        await running.parts(2 * parts, timeout_s=300)
        program = site_path.parent / "programs" / "O1001.yaml"
        for i in range(repeat):
            started = time.perf_counter()
            assert (await daemon.reload())["ok"]
            timings["unchanged"].append(time.perf_counter() - started)
            widen(program, 10.015 + 0.001 * (i + 1))
            started = time.perf_counter()
            assert (await daemon.reload())["programs_changed"] == ["O1001"]
            timings["program_changed"].append(time.perf_counter() - started)
            add_machine(site_path, f"extra-{i}")
            started = time.perf_counter()
            assert len((await daemon.reload())["sources_added"]) == 1
            timings["machine_added"].append(time.perf_counter() - started)
    load = []
    for _ in range(repeat):
        started = time.perf_counter()
        load_site(site_path)
        load.append(time.perf_counter() - started)
    baseline = statistics.median(load)
    out: dict[str, Any] = {"parts_stored": 2 * parts, "repeat": repeat, "baseline_load_s": round(baseline, 4)}
    for name, values in timings.items():
        out[f"{name}_s"] = round(statistics.median(values), 4)
        out[f"{name}_ratio"] = round(statistics.median(values) / baseline, 1)
    return out


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the demo's alerts are not what is measured
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=100, help="parts per machine stored before the reloads")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = write_cell(Path(tmp), args.parts)
        print(json.dumps(asyncio.run(measure(site, args.parts, args.repeat))))


if __name__ == "__main__":
    main()
