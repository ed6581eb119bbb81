"""Benchmark of what a hostile MTConnect agent costs us: peak memory against a 1 GB answer, and how
often we reconnect to an agent whose probe is valid but whose /sample is garbage.

Prints one JSON object:

- ``memory``: for a 1 GB ``/probe`` answer and a 1 GB plain (non-multipart) ``/sample`` answer,
  both generated on the fly by the hostile server (never stored), the peak RSS of a fresh client
  process (``ru_maxrss``, MiB) that requests it once:
  - ``baseline_peak_mib``: the answer read whole, then checked against the size limit (what the
    client did before: ``await resp.read()``);
  - ``ours_peak_mib``: :meth:`AgentClient.get` (streamed, refused as soon as it passes
    ``max_document_bytes``, default 64 MiB); ``ratio`` = baseline / ours;
  - ``idle_mib``: the same process before the request (interpreter and libraries);
  the hostile server runs in this process, each client in its own, so the figures are the client's.
- ``reconnects``: requests per second that reached ``/sample`` of an agent whose ``/probe`` and
  ``/current`` are valid and whose ``/sample`` is garbage, over ``--seconds`` with the default
  reconnect settings (0.5 s doubling to 30 s, jittered): ``ours`` (the wait grows until data
  flows) against ``baseline`` (the wait started over after every good handshake, as before).

Run: ``python3 bench/hostile_agent.py [--seconds 30]`` (about 2 × seconds + 20 s; 2 GB of free RAM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.client import AgentClient, MtConnectAdapter
from adapters.mtconnect.devicemodel import ComponentSpec, DeviceSpec, ItemSpec
from monitor.config import MtConnectMachine
from monitor.errors import AdapterError
from tests.servers.hostile_agent import HostileAgent

_MIB = 1 << 20


def _device() -> DeviceSpec:
    return DeviceSpec(
        "vmc",
        "vmc-uuid",
        "vmc",
        components=(ComponentSpec("Controller", "ctrl", items=(ItemSpec("vmc_pc", "EVENT", "PART_COUNT"),)),),
    )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _client(url: str, how: str) -> dict[str, Any]:
    """One request in this (fresh) process; its peak RSS."""
    idle = _peak_mib()
    started = time.perf_counter()
    outcome = "accepted"
    async with aiohttp.ClientSession() as session:
        if how == "baseline":
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=120)) as resp:
                body = await resp.read()
            if len(body) > 64 * _MIB:
                outcome = f"refused after reading {len(body) / _MIB:.0f} MiB"
        else:
            client = AgentClient(url.rsplit("/", 1)[0], session)
            try:
                await client.get("/" + url.rsplit("/", 1)[1])
            except AdapterError as exc:
                outcome = f"refused: {exc}"
    return {
        "idle_mib": round(idle, 1),
        "peak_mib": round(_peak_mib(), 1),
        "seconds": round(time.perf_counter() - started, 2),
        "outcome": outcome,
    }


def _measure(url: str, how: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", url, "--how", how], capture_output=True, text=True, timeout=600, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class _OldPolicy(MtConnectAdapter):
    """The reconnect policy before: a good handshake reset the wait, so garbage after it never waited longer."""

    async def _synchronise(self, client: AgentClient) -> None:
        await super()._synchronise(client)
        self._retry.succeeded()


async def _reconnect_rate(hostile: HostileAgent, cls: type[MtConnectAdapter], seconds: float) -> float:
    machine = MtConnectMachine.model_validate(
        {
            "id": "m",
            "source": {"type": "mtconnect", "url": hostile.url("garbage"), "device": "vmc"},
            "signals": {"part.count": "vmc_pc"},
        }
    )
    before = hostile.requests["garbage"]["sample"]
    async with cls(machine) as adapter:

        async def drain() -> None:
            async for _ in adapter.observations():
                pass

        reader = asyncio.create_task(drain())
        await asyncio.sleep(seconds)
        reader.cancel()
    return (hostile.requests["garbage"]["sample"] - before) / seconds


async def _main(seconds: float) -> dict[str, Any]:
    report: dict[str, Any] = {"memory": {}, "reconnects": {}}
    async with MtConnectAgent([_device()]) as agent, HostileAgent(agent.url) as hostile:
        loop = asyncio.get_running_loop()
        for kind, path in (("hugeprobe", "probe"), ("hugesample", "sample")):
            url = f"{hostile.url(kind)}/{path}"
            baseline = await loop.run_in_executor(None, _measure, url, "baseline")
            ours = await loop.run_in_executor(None, _measure, url, "ours")
            report["memory"][f"1GB_{path}"] = {
                "baseline_peak_mib": baseline["peak_mib"],
                "baseline_seconds": baseline["seconds"],
                "ours_peak_mib": ours["peak_mib"],
                "ours_seconds": ours["seconds"],
                "idle_mib": ours["idle_mib"],
                "ratio": round(baseline["peak_mib"] / ours["peak_mib"], 1),
                "ours_outcome": ours["outcome"],
            }
        old = await _reconnect_rate(hostile, _OldPolicy, seconds)
        new = await _reconnect_rate(hostile, MtConnectAdapter, seconds)
        report["reconnects"] = {
            "seconds": seconds,
            "baseline_per_s": round(old, 3),
            "ours_per_s": round(new, 3),
            "ratio": round(old / new, 1) if new else None,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each reconnect run lasts")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--how", choices=("baseline", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(_client(args.client, args.how))))
        return
    print(json.dumps(asyncio.run(_main(args.seconds)), indent=2))


if __name__ == "__main__":
    main()
