"""Benchmark of the InfluxDB sink against a local victoria-metrics (``/api/v2/write``).

Prints one JSON object:

- ``sink_points_per_s``: points per second written sustained through our ``RunningSink`` +
  ``InfluxSink`` (async client, batches of ``batch_size``, spool enabled), counted until the sink
  reports every point written;
- ``bare_points_per_s``: influxdb-client's own batching writer (``WriteApi`` with
  ``WriteOptions(batch_size=...)``) used bare on the same points, handed as ready line-protocol
  strings (its best case: our side's time includes encoding the events), counted until its
  ``close()`` returned (every batch flushed);
- ``ratio``: sink / bare; ``ratio_vs_bare_encoding`` against the bare writer fed influxdb-client
  ``Point`` objects built in the timed region (encoding included on both sides);
- ``outage_peak_mb``: peak Python memory (tracemalloc) while the server is down and
  ``outage_points`` points are offered and spooled to disk, with ``outage_spool_mb`` the size of
  the spool they occupy and ``outage_dropped`` what was lost (expected 0).

Both writers' points are read back through ``/api/v1/export`` and counted (``*_stored``).

Run: ``python3 bench/influx_sink.py [--points 100000]`` (needs the victoria-metrics binary).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point as _ClientPoint
from influxdb_client.client.write_api import WriteOptions

from monitor.model import Observation
from monitor.retry import Backoff
from monitor.sinks.base import RunningSink
from monitor.sinks.influx import InfluxSink, PointEncoder, time_ns
from tests.servers.victoria import VictoriaMetrics

ClientPoint: Any = _ClientPoint  # influxdb-client's Point is untyped
BATCH = 1000
BUFFER = 10_000
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def observations(machine: str, n: int) -> Iterator[Observation]:
    for i in range(n):
        yield Observation(machine, "spindle.load", BASE + timedelta(milliseconds=i), float(i % 100))


async def until(cond: Callable[[], bool], every_s: float) -> None:
    """Poll a condition of the sink (the bench has no event to wait on; the poll period is tiny)."""
    while not cond():  # noqa: ASYNC110
        await asyncio.sleep(every_s)


async def feed(running: RunningSink, events: Iterator[Observation]) -> None:
    """Offer as fast as the sink keeps up: wait (polling) while memory is near the spool threshold."""
    for count, event in enumerate(events, 1):
        running.offer(event)
        if count % BATCH == 0:
            await until(lambda: running.status()["backlog_memory"] <= BUFFER // 2 - BATCH, 0.001)


async def through_sink(url: str, n: int, spool: Path, machine: str) -> float:
    sink = InfluxSink(url=url, org="bench", bucket="bench", token="bench-token")
    running = RunningSink(sink, queue_size=BUFFER, batch_size=BATCH, flush_interval_s=0.2, spool_dir=spool)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        await feed(running, observations(machine, n))
        await until(lambda: running.written >= n, 0.002)
        elapsed = time.perf_counter() - started
        task.cancel()
    await running.aclose()
    return elapsed


def bare_client(url: str, n: int, machine: str) -> float:
    encoder = PointEncoder()
    lines = [encoder.encode(o) for o in observations(machine, n)]
    started = time.perf_counter()
    with InfluxDBClient(url=url, token="bench-token", org="bench") as client:
        write_api = client.write_api(write_options=WriteOptions(batch_size=BATCH, flush_interval=200))
        for line in lines:
            write_api.write(bucket="bench", org="bench", record=line)
        write_api.close()  # flushes every pending batch
    return time.perf_counter() - started


def bare_client_points(url: str, n: int, machine: str) -> float:
    """The bare writer again, this time encoding too: influxdb-client ``Point`` objects built in the timed region."""
    started = time.perf_counter()
    with InfluxDBClient(url=url, token="bench-token", org="bench") as client:
        write_api = client.write_api(write_options=WriteOptions(batch_size=BATCH, flush_interval=200))
        for o in observations(machine, n):
            point = (
                ClientPoint("signal")
                .tag("machine", o.machine)
                .tag("signal", o.signal)
                .field("value", o.number)
                .field("available", o.value is not None)
                .time(time_ns(o.time), "ns")
            )
            write_api.write(bucket="bench", org="bench", record=point)
        write_api.close()
    return time.perf_counter() - started


async def outage(n: int, spool: Path) -> dict[str, Any]:
    sink = InfluxSink(url="http://127.0.0.1:9", org="bench", bucket="bench", token="bench-token", timeout_s=1.0)
    running = RunningSink(
        sink,
        queue_size=BUFFER,
        batch_size=BATCH,
        flush_interval_s=0.2,
        spool_dir=spool,
        backoff=Backoff(initial_s=0.5, max_s=5.0),
        close_timeout_s=0.5,
    )
    tracemalloc.start()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        await feed(running, observations("bench-outage", n))
        await until(lambda: running.status()["backlog_disk"] >= n or running.dropped > 0, 0.01)
        _, peak = tracemalloc.get_traced_memory()
        status = running.status()
        task.cancel()
    tracemalloc.stop()
    await running.aclose()
    return {
        "outage_points": n,
        "outage_peak_mb": round(peak / 1e6, 2),
        "outage_spooled": status["backlog_disk"],
        "outage_spool_mb": round(status["backlog_disk_bytes"] / 1e6, 2),
        "outage_dropped": status["dropped"],
        "outage_state": status["state"],
    }


def stored(server: VictoriaMetrics, machine: str) -> int:
    rows = server.export(f'{{__name__="signal_value",machine="{machine}"}}')
    return sum(len(r["values"]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    args = parser.parse_args()
    n = args.points
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = VictoriaMetrics(root / "vm")
        server.start()
        try:
            # Best of two rounds each, interleaved: the machine is shared, so take each side's best.
            bare_s = bare_points_s = sink_s = float("inf")
            for round_ in range(2):
                bare_s = min(bare_s, bare_client(server.url, n, f"bench-bare-{round_}"))
                sink_s = min(sink_s, asyncio.run(through_sink(server.url, n, root / "spool-sink", f"bench-sink-{round_}")))
                bare_points_s = min(bare_points_s, bare_client_points(server.url, n, f"bench-bare-points-{round_}"))
            sink_stored = [stored(server, f"bench-sink-{r}") for r in range(2)]
            bare_stored = [stored(server, f"bench-bare-{r}") for r in range(2)]
            bare_points_stored = [stored(server, f"bench-bare-points-{r}") for r in range(2)]
        finally:
            server.stop()
        result: dict[str, Any] = {
            "benchmark": "influx_sink",
            "points": n,
            "batch_size": BATCH,
            "sink_points_per_s": round(n / sink_s),
            "bare_points_per_s": round(n / bare_s),
            "ratio": round(bare_s / sink_s, 3),
            "bare_encoding_points_per_s": round(n / bare_points_s),
            "ratio_vs_bare_encoding": round(bare_points_s / sink_s, 3),
            "sink_stored": sink_stored,
            "bare_stored": bare_stored,
            "bare_encoding_stored": bare_points_stored,
        }
        result.update(asyncio.run(outage(n, root / "spool-outage")))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
