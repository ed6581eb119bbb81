"""Fault drills for the OPC UA path: the daemon as a process against our simulated OPC UA CNC.

The simulated cell (scenario ``tool_wear``, one machine ``vmc-01``, seeded) is served by our asyncua
simulator in this process, behind a TCP proxy that a drill can cut; the daemon is
``python -m monitor run`` in its own process, reading the simulator through the proxy. Drills:

- ``soak``: no fault, a long batch at high speed;
- ``sigkill`` / ``sigterm``: the daemon is killed (or stopped) when the controller's counter reaches
  ``--at`` and started again ``--down`` seconds later while the machine goes on;
- ``outage``: the proxy drops every byte for ``--down`` seconds (connections reset after).

``--history N`` makes the simulator keep the last N values of every node (HistoryRead).

Afterwards every counter value the controller moved through is accounted for from the store: a
stored part (complete / incomplete), a recorded gap (``not_observed`` placeholder) or missing.
Prints one JSON object: the accounting (``accounted``: counter values by how they are stored;
``missing_counters``; ``numbers_follow_counter``: part number - counter is constant), the parts that
are not complete with their notes, the seconds after the machine went quiet until every part was
stored, and the daemon's log lines about asyncua tracebacks and gaps. (An accounting, not a speed
figure: there is no ratio against a baseline.)

Run (the machine is shared: nice):
``nice -n 10 .venv/bin/python bench/opcua_drills.py sigkill --speed 100 --parts 60 --at 20`` (~80 s);
``soak --speed 200 --parts 1200`` takes 12 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from monitor.sim import SimCell, SimEvent, load_scenario, run_cell
from monitor.sim.opcua_server import OpcUaSimServer, shapes_for, signal_map
from tests.opcua.drill import DaemonProcess, account, site_document, stored
from tests.opcua.proxy import FaultProxy

DRILLS = ("soak", "sigkill", "sigterm", "outage")


def log_summary(log: Path) -> dict[str, int]:
    text = log.read_text(errors="replace")
    lines = text.splitlines()
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "asyncua_publish_crash_lines": sum(1 for line in lines if "Publish iteration crashed" in line),
        "asyncua_recreated_stale_subscription": text.count("is stale; recreating"),
        "data_gap_alert_lines": sum(1 for line in lines if "ALERT" in line and ("not observed" in line or "data lost" in line)),
        "silent_subscription": text.count("did not deliver"),
    }


async def drill(
    kind: str,
    *,
    speed: float,
    parts: int,
    at: int,
    down_s: float,
    seed: int,
    history: int,
    workdir: Path,
    diagnose: bool = False,
) -> dict[str, Any]:
    cell = SimCell(load_scenario("tool_wear"), seed=seed, parts=parts)
    counters = sorted(
        {int(e.value) for e in cell.events() if e.signal == "part.count" and isinstance(e.value, float) and e.value}
    )
    db, log = workdir / "monitor.db", workdir / "daemon.log"
    published: Counter[str] = Counter()
    (shape,) = shapes_for(cell.machines)
    async with (
        OpcUaSimServer([shape], history=history) as server,
        FaultProxy("127.0.0.1", server.port) as proxy,
    ):
        signals = {k: v for k, v in signal_map(shape).items() if k in cell.machines[0].signals or k.startswith("probe.")}
        site = workdir / "site.yaml"
        site.write_text(yaml.safe_dump(site_document(proxy.endpoint, db, speed, signals), sort_keys=False))
        daemon = DaemonProcess(site, log, diagnose=diagnose)
        await daemon.start()
        await daemon.connected()
        fault = asyncio.Event()

        async def publish(event: SimEvent) -> None:
            await server.publish_event(event)
            published[event.signal] += 1
            if event.signal == "part.count" and event.value == float(at):
                fault.set()

        async def inject() -> None:
            if kind == "soak":
                return
            await fault.wait()
            if kind in ("sigkill", "sigterm"):
                await daemon.stop(signal.SIGKILL if kind == "sigkill" else signal.SIGTERM)
                await asyncio.sleep(down_s)  # the daemon is down this long while the machine goes on
                await daemon.start()
            else:
                proxy.cut()
                await asyncio.sleep(down_s)  # the network is down this long
                await proxy.restore()

        t_start = time.monotonic()
        injector = asyncio.create_task(inject())
        await run_cell(cell, publish, speed=speed)
        await injector
        # the machine is quiet now: every part must be stored within its grace window, by the wall clock
        quiet = time.monotonic()
        while len([r for r in stored(db) if r["status"] != "aborted"]) < len(counters) and time.monotonic() - quiet < 60:  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # polling another process's store: there is no event to wait on
        settled_s = time.monotonic() - quiet
        await daemon.stop()
        elapsed = time.monotonic() - t_start
    return {
        "drill": kind,
        "speed": speed,
        "parts": parts,
        "history": history,
        "fault_at_counter": None if kind == "soak" else at,
        "down_s": None if kind == "soak" else down_s,
        "wall_s": round(elapsed, 1),
        "stored_within_s_of_quiet": round(settled_s, 1),
        **account(stored(db), counters),
        "log": log_summary(log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drill", choices=DRILLS)
    parser.add_argument("--speed", type=float, default=100.0)
    parser.add_argument("--parts", type=int, default=60)
    parser.add_argument("--at", type=int, default=20, help="counter value at which the fault starts")
    parser.add_argument("--down", type=float, default=None, help="seconds down (default 10 for restarts, 20 for the outage)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--history", type=int, default=0, help="values of history the simulator keeps per node (0 = none)")
    parser.add_argument("--diagnose", action="store_true", help="show asyncua's own warnings in the daemon's log")
    parser.add_argument("--keep", type=Path, default=None, help="work in this (emptied) folder and keep it: store, log")
    args = parser.parse_args()
    down = args.down if args.down is not None else (20.0 if args.drill == "outage" else 10.0)

    async def go(workdir: Path) -> dict[str, Any]:
        return await drill(
            args.drill, speed=args.speed, parts=args.parts, at=args.at, down_s=down, seed=args.seed,
            history=args.history, workdir=workdir, diagnose=args.diagnose,
        )  # fmt: skip

    if args.keep is not None:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        result = asyncio.run(go(args.keep))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(go(Path(tmp)))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
