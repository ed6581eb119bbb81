"""Benchmark of OPC UA ingestion: our adapter (into the part tracker) against a bare asyncua subscription.

Simulated CNC servers (our asyncua simulator) run in separate processes, each changing
``--signals`` variables at ``--rate`` changes per second in total. In this process, on the same
servers and signals, one after the other:

- ``bare``: a plain asyncua client subscription per server (iterator API, the cheapest way to
  receive notifications), counting data-change events;
- ``adapter``: one :class:`~adapters.opcua.client.OpcUaAdapter` per server, every observation
  read from ``adapter.observations()`` and fed to a :class:`~monitor.tracking.PartTracker`.

Prints one JSON object with, per run, notifications per second received and this process's CPU
milliseconds per 1,000 notifications; ``ratio`` = adapter rate / bare rate (target >= 0.8);
Runs alternate (``--rounds``) and the best of each kind counts, because the machine is shared.
``cpu_ratio`` = bare CPU per notification / ours (the figure least disturbed by other load);
``cpu_ratio_without_tracker`` leaves out the time spent in ``PartTracker.update`` (measured
around each call), i.e. the adapter's own overhead.
``restart_to_first_value_s``: one server process is killed and restarted on its port, time from
the new server accepting connections until the adapter delivers its first new value.

Run: ``python3 bench/opcua_ingest.py [--servers 2 --signals 200 --rate 5000 --seconds 3 --rounds 2]`` (about 40 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy

from adapters.opcua.client import OpcUaAdapter
from monitor.config import OpcUaMachine
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL
from monitor.sim.opcua_server import MachineShape, OpcUaSimServer, signal_map
from monitor.tracking import PartTracker

PUBLISHING_MS = 100.0
QUEUE = 100


# ---------------------------------------------------------------------------------------- servers
def _serve(conn: Connection, machine: str, n_signals: int, rate: float, port: int) -> None:
    asyncio.run(_serve_async(conn, machine, n_signals, rate, port))


async def _serve_async(conn: Connection, machine: str, n_signals: int, rate: float, port: int) -> None:
    shape = MachineShape(machine, probes=tuple(f"p{i:04d}" for i in range(n_signals)))
    signals = [f"probe.p{i:04d}" for i in range(n_signals)]
    async with OpcUaSimServer([shape], port=port) as srv:
        conn.send(("ready", srv.port, time.time()))
        loop = asyncio.get_running_loop()
        tick, written, value = 0.01, 0, 0.0
        start = loop.time()
        while not conn.poll():
            due = int((loop.time() - start) * rate)
            now = datetime.now(UTC)
            while written < due:
                value += 1.0
                await srv.publish(machine, signals[written % n_signals], value, now)
                written += 1
                if written % 500 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(tick)
        conn.send(("written", written, loop.time() - start))


class ServerProcess:
    """One simulator in its own process (one asyncua server saturates one core)."""

    def __init__(self, machine: str, n_signals: int, rate: float, port: int = 0) -> None:
        ctx = mp.get_context("spawn")
        self.machine = machine
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, machine, n_signals, rate, port), daemon=True)
        self.proc.start()
        kind, self.port, self.ready_at = self.conn.recv()
        assert kind == "ready"

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self) -> tuple[int, float]:
        self.conn.send("stop")
        _, written, elapsed = self.conn.recv()
        self.proc.join(10)
        self.conn.close()
        return written, elapsed


# ---------------------------------------------------------------------------------------- clients
async def _bare(servers: list[ServerProcess], n_signals: int, warmup: float, seconds: float) -> dict[str, float]:
    clients: list[Client] = []
    counts = [0]
    tasks = []
    try:
        for s in servers:
            c = Client(s.endpoint)
            await c.connect()
            clients.append(c)
            ns = await c.get_namespace_index("urn:cnc-monitor:sim")
            sub = await c.create_subscription(PUBLISHING_MS, None, queue_maxsize=100_000, overflow=OverflowPolicy.DROP_NEWEST)
            nodes = [c.get_node(ua.NodeId(f"{s.machine}.Vendor.Macro.R{500 + i}", ns)) for i in range(n_signals)]
            await sub.subscribe_data_change(nodes, queuesize=QUEUE, sampling_interval=0)

            async def pump(sub: Any = sub) -> None:
                async for ev in sub:
                    if isinstance(ev, DataChangeEvent):
                        counts[0] += 1

            tasks.append(asyncio.create_task(pump()))
        return await _measure(counts, warmup, seconds)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.disconnect()


def _machine(server: ServerProcess, n_signals: int) -> OpcUaMachine:
    shape = MachineShape(server.machine, probes=tuple(f"p{i:04d}" for i in range(n_signals)))
    return OpcUaMachine.model_validate(
        {
            "id": server.machine,
            "source": {
                "type": "opcua",
                "endpoint": server.endpoint,
                "publishing_interval_ms": PUBLISHING_MS,
                "sampling_interval_ms": 0,
                "queue_size": QUEUE,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
            },
            "signals": {k: v for k, v in signal_map(shape).items() if k.startswith("probe.")},
        }
    )


async def _measure(counts: list[int], warmup: float, seconds: float, tracker_cpu: list[float] | None = None) -> dict[str, float]:
    await asyncio.sleep(warmup)
    n0, c0, t0 = counts[0], time.process_time(), time.perf_counter()
    k0 = tracker_cpu[0] if tracker_cpu else 0.0
    await asyncio.sleep(seconds)
    n1, c1, t1 = counts[0], time.process_time(), time.perf_counter()
    n = n1 - n0
    out = {
        "notifications": n,
        "notifications_per_s": round(n / (t1 - t0), 1),
        "cpu_ms_per_1000": round((c1 - c0) * 1e6 / n, 2) if n else float("nan"),
    }
    if tracker_cpu is not None and n:
        out["tracker_cpu_ms_per_1000"] = round((tracker_cpu[0] - k0) * 1e6 / n, 2)
    return out


async def _adapter_run(
    servers: list[ServerProcess], n_signals: int, warmup: float, seconds: float, restart: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    counts = [0]
    tracker_cpu = [0.0]
    first_after_gap: dict[str, float] = {}
    back = asyncio.Event()
    adapters = [OpcUaAdapter(_machine(s, n_signals)) for s in servers]
    trackers = {s.machine: PartTracker(s.machine, {}) for s in servers}

    async def pump(adapter: OpcUaAdapter) -> None:
        tracker = trackers[adapter.machine]
        gap_seen = False
        async for obs in adapter.observations():
            started = time.process_time()
            tracker.update(obs)
            tracker_cpu[0] += time.process_time() - started
            if obs.signal == GAP_SIGNAL:
                gap_seen = True
            elif obs.signal != CONNECTION_SIGNAL:
                counts[0] += 1
                if gap_seen and adapter.machine not in first_after_gap:
                    first_after_gap[adapter.machine] = time.time()
                    back.set()

    tasks = []
    extra: dict[str, Any] = {}
    for a in adapters:
        await a.__aenter__()
        tasks.append(asyncio.create_task(pump(a)))
    try:
        result = await _measure(counts, warmup, seconds, tracker_cpu)
        if restart:
            victim = servers[0]
            victim.kill()
            killed_at = time.time()
            fresh = await asyncio.to_thread(ServerProcess, victim.machine, n_signals, 1000.0, victim.port)
            servers[0] = fresh
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(back.wait(), 30)
            got = first_after_gap.get(victim.machine)
            extra = {
                "restart_to_first_value_s": round(got - fresh.ready_at, 3) if got else None,
                "kill_to_first_value_s": round(got - killed_at, 3) if got else None,
                "gaps_reported": adapters[0].stats.counts["gaps"],
            }
        extra["overflows"] = sum(a.stats.counts["queue_overflow"] + a.stats.counts["client_queue_overflow"] for a in adapters)
        return result, extra
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for a in adapters:
            await a.aclose()


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the highest rate: the machine is shared, so the best run is the least disturbed."""
    return max(runs, key=lambda r: r["notifications_per_s"])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    servers = [ServerProcess(f"bench-{i}", args.signals, args.rate) for i in range(args.servers)]
    bare_runs: list[dict[str, float]] = []
    our_runs: list[dict[str, float]] = []
    extra: dict[str, Any] = {}
    try:
        for i in range(args.rounds):  # alternate, so a busy moment of the machine hits both kinds
            bare_runs.append(await _bare(servers, args.signals, args.warmup, args.seconds))
            last = i == args.rounds - 1
            ours, extra = await _adapter_run(servers, args.signals, args.warmup, args.seconds, restart=last)
            our_runs.append(ours)
    finally:
        written = [s.stop() for s in servers if s.proc.is_alive()]
    bare, ours = _best(bare_runs), _best(our_runs)
    return {
        "bench": "opcua_ingest",
        "servers": args.servers,
        "signals_per_server": args.signals,
        "offered_changes_per_s": args.rate * args.servers,
        "server_written_per_s": [round(w / e, 1) for w, e in written],
        "publishing_interval_ms": PUBLISHING_MS,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "bare": bare,
        "adapter_into_tracker": ours,
        "ratio": round(ours["notifications_per_s"] / bare["notifications_per_s"], 3),
        "cpu_ratio": round(bare["cpu_ms_per_1000"] / ours["cpu_ms_per_1000"], 3),
        "cpu_ratio_without_tracker": round(
            bare["cpu_ms_per_1000"] / (ours["cpu_ms_per_1000"] - ours.get("tracker_cpu_ms_per_1000", 0.0)), 3
        ),
        "runs": {"bare": bare_runs, "adapter": our_runs},
        **extra,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--signals", type=int, default=200)
    p.add_argument("--rate", type=float, default=5000.0, help="changes per second per server")
    p.add_argument("--seconds", type=float, default=2.5)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2, help="alternating bare/adapter measurements; best of each")
    print(json.dumps(asyncio.run(main(p.parse_args()))))
