"""Attribution against another OPC UA implementation with its own timing: node-opcua.

tests/opcua/node/foreign_server.js binds every value to a getter, so node-opcua samples each
monitored item on the item's own timer and stamps every sample with the time it took it: the part
counter and the probe results that change together arrive with timestamps up to a sampling interval
apart, in an order chosen by the server's timers. Cycles of 1 s are shorter than the grace window
(the case in which results used to land on the previous part). No execution state is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.opcua.client import OpcUaAdapter
from monitor.config import OpcUaMachine
from monitor.model import Observation, PartRecord, PartStatus
from monitor.tracking import PartTracker
from tests.opcua.foreign import FOREIGN_URI
from tests.opcua.helpers import Collector, connected
from tests.requires import missing
from tests.test_attribution import program, truth

NODE_DIR = Path(__file__).resolve().parent / "node"
NODES = {
    "part.count": "PartCounter",
    "part.id": "Probe.ResultId",
    "program.name": "ActiveProgram",
    "spindle.load": "Spindle.Load",
    "probe.hole1_dia": "Probe.Result1",
    "probe.hole1_x": "Probe.Result2",
    "probe.hole1_y": "Probe.Result3",
}
PARTS = 4


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        missing("node is not installed (Debian package nodejs; scripts/test.sh installs npm)", module=True)
    if not (NODE_DIR / "node_modules" / "node-opcua-server").is_dir():
        missing(f"node-opcua is not installed: npm install --prefix {NODE_DIR} (scripts/test.sh does it)", module=True)
    return path


@contextlib.asynccontextmanager
async def node_server(node: str) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "foreign_server.js"),
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={"CYCLE_MS": "1000", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "node-opcua server ended before listening"
                if line.startswith("PORT "):
                    break
        yield f"opc.tcp://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the server's signal to shut down
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def machine(endpoint: str, keys: list[str]) -> OpcUaMachine:
    return OpcUaMachine.model_validate(
        {
            "id": "m1",
            "source": {
                "type": "opcua",
                "endpoint": endpoint,
                "publishing_interval_ms": 100,
                "sampling_interval_ms": 20,
                "queue_size": 20,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
            },
            "signals": {k: f"nsu={FOREIGN_URI};s=Cnc.{NODES[k]}" for k in keys},
        }
    )


async def parts_for(endpoint: str, keys: list[str]) -> tuple[list[PartRecord], int]:
    config = machine(endpoint, keys)
    adapter = OpcUaAdapter(config, seed=1)
    async with adapter:
        collector = Collector(adapter)
        try:
            await collector.wait(connected, what="connected")
            await collector.wait(lambda items: any(o.signal == "part.count" and o.value for o in items), 30, "a counter")
            first = int(next(o.number or 0 for o in collector.items if o.signal == "part.count" and o.value))
            last = first + PARTS + 1

            def done(items: list[Observation]) -> bool:
                return any(o.signal == "part.count" and o.value == float(last) for o in items)

            await collector.wait(done, within_s=30, what=f"counter {last}")
        finally:
            await collector.aclose()
    tracker = PartTracker("m1", {"O1001": program()}, config.tracking, part_id_mapped="part.id" in keys)
    parts: list[PartRecord] = []
    for obs in collector.items:
        parts += tracker.update(obs)
    return parts + tracker.close(), first


@pytest.mark.parametrize(
    "order",
    [
        ["probe.hole1_dia", "probe.hole1_x", "probe.hole1_y", "part.count"],
        ["part.count", "probe.hole1_dia", "probe.hole1_x", "probe.hole1_y"],
        ["probe.hole1_x", "part.count", "probe.hole1_y", "probe.hole1_dia"],
        ["probe.hole1_y", "part.id", "probe.hole1_dia", "part.count", "probe.hole1_x"],
    ],
)
async def test_every_value_on_its_part_from_node_opcua(node: str, order: list[str]) -> None:
    async with node_server(node) as endpoint:
        parts, first = await parts_for(endpoint, ["spindle.load", *order, "program.name"])
    # the part in progress when we connected is not whole; every one after it must be exact
    whole = [p for p in parts if p.counter is not None and p.counter > first]
    assert len(whole) >= PARTS, [(p.counter, p.status) for p in parts]
    for p in whole:
        assert p.counter is not None
        assert p.status is PartStatus.COMPLETE, (p.counter, p.notes)
        assert p.measurements == pytest.approx(truth(p.counter)), (p.counter, p.measurements)
        assert p.spindle.mean_load is not None and p.spindle.mean_load > 0
        if "part.id" in order:
            assert p.part_id == str(p.counter)
