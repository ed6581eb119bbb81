"""Fault drills with the daemon as a process, short versions of ``bench/opcua_drills.py``.

Our simulated OPC UA CNC runs in the test, behind a TCP proxy; ``python -m monitor run`` reads it.
The daemon is killed with SIGKILL and started again, or the proxy is cut, while the machine goes
on making parts. Every counter value the controller moved through must end up stored: as a part,
or as a ``not_observed`` placeholder that says why and when; part numbers follow the counter; with
history on the server nothing is missing at all. The machine stops at the end of the batch, and
its last parts must be stored without newer data arriving (the re-ordering window is hundreds of
seconds of controller time at this speed).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from monitor.sim import SimCell, SimEvent, load_scenario, run_cell
from monitor.sim.opcua_server import OpcUaSimServer, shapes_for, signal_map
from tests.opcua.drill import DaemonProcess, account, site_document, stored
from tests.opcua.proxy import FaultProxy

SPEED = 100.0
PARTS = 16


async def _all_stored(db: Path, n: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while len([r for r in stored(db) if r["status"] != "aborted"]) < n:
        assert time.monotonic() < deadline, f"parts stored: {[(r['counter'], r['status']) for r in stored(db)]}"
        await asyncio.sleep(0.2)  # polling another process's store


def _positions(db: Path) -> list[str]:
    """The sources whose position the daemon saved for vmc-01."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [s for (s,) in con.execute("SELECT source FROM adapter_positions WHERE machine = 'vmc-01'")]
    finally:
        con.close()


@pytest.mark.parametrize("history", [False, True], ids=["no-history", "history"])
@pytest.mark.parametrize("fault", ["sigkill", "outage"])
async def test_every_counter_value_is_accounted_for(tmp_path: Path, fault: str, history: bool) -> None:
    cell = SimCell(load_scenario("tool_wear"), seed=5, parts=PARTS)
    counters = list(range(1, PARTS + 1))
    (shape,) = shapes_for(cell.machines)
    db, log = tmp_path / "monitor.db", tmp_path / "daemon.log"
    async with (
        OpcUaSimServer([shape], history=5000 if history else 0) as server,
        FaultProxy("127.0.0.1", server.port) as proxy,
    ):
        signals = {k: v for k, v in signal_map(shape).items() if k in cell.machines[0].signals or k.startswith("probe.")}
        site = tmp_path / "site.yaml"
        doc = site_document(proxy.endpoint, db, SPEED, signals, request_timeout_s=1.0, reconnect_max_s=1.0)
        site.write_text(yaml.safe_dump(doc))
        daemon = DaemonProcess(site, log)
        await daemon.start()
        try:
            await daemon.connected()
            third = asyncio.Event()

            async def publish(event: SimEvent) -> None:
                await server.publish_event(event)
                if event.signal == "part.count" and event.value == 4.0:
                    third.set()

            async def fault_drill() -> None:
                await third.wait()
                if fault == "sigkill":
                    await daemon.stop(signal.SIGKILL)
                    await asyncio.sleep(2.5)  # the machine goes on: with the restart, about five parts
                    await daemon.start()
                else:
                    proxy.cut()
                    await asyncio.sleep(2.5)
                    await proxy.restore()

            drill = asyncio.create_task(fault_drill())
            await run_cell(cell, publish, speed=SPEED)
            await drill
            # the daemon reads the machine again (a restart took 25-38 s on a loaded machine, the cell was
            # over by then); the machine is quiet now: its last parts must not wait for newer data that
            # never comes (one wrongly stamped value held the last one for its half-hour age)
            await daemon.connected()
            await _all_stored(db, PARTS, within_s=60)
        finally:
            await daemon.stop()
    records = stored(db)
    acc = account(records, counters)
    assert acc["accounted"].get("missing", 0) == 0 and "duplicated" not in acc["accounted"], acc
    assert acc["number_minus_counter"] == [0], acc  # part numbers follow the counter
    if history:
        assert acc["accounted"] == {"complete": PARTS}, acc
        return
    unseen = [r for r in records if r["status"] == "not_observed"]
    assert unseen, acc
    why = "the monitor was not reading" if fault == "sigkill" else "lost"
    assert all(why in r["notes"][0] and "source clock" in r["notes"][0] for r in unseen), unseen
    assert all(r["measurements"] == {} for r in unseen)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        alerts = [json.loads(d) for (d,) in con.execute("SELECT data FROM alerts WHERE kind = 'data_gap'")]
    finally:
        con.close()
    (alert,) = alerts
    assert alert["severity"] == "warning" and alert["evidence"]["parts_not_observed"] == len(unseen)
    assert "not observed" in alert["message"]
    assert "Traceback" not in log.read_text()


async def test_a_restart_that_reads_back_parts_already_stored_numbers_none_twice(tmp_path: Path) -> None:
    """The daemon saves where its OPC UA source stands (the end of the last stored part) a moment
    after storing the part; killed in between, it reads back from history parts it already stored.
    Here the saved position is set back to the start of the batch, the widest such window: the parts
    read again must be recognised as stored, and the parts after them keep numbers that follow the
    counter, all complete (the server keeps history)."""
    cell = SimCell(load_scenario("tool_wear"), seed=3, parts=PARTS)
    (shape,) = shapes_for(cell.machines)
    db, log = tmp_path / "monitor.db", tmp_path / "daemon.log"
    async with OpcUaSimServer([shape], history=5000) as server:
        signals = {k: v for k, v in signal_map(shape).items() if k in cell.machines[0].signals or k.startswith("probe.")}
        site = tmp_path / "site.yaml"
        site.write_text(yaml.safe_dump(site_document(server.endpoint, db, SPEED, signals)))
        daemon = DaemonProcess(site, log)
        await daemon.start()
        try:
            await daemon.connected()
            sixth = asyncio.Event()

            async def publish(event: SimEvent) -> None:
                await server.publish_event(event)
                if event.signal == "part.count" and event.value == 6.0:
                    sixth.set()

            async def rewind() -> None:
                await sixth.wait()
                await _all_stored(db, 5, within_s=60)
                while not _positions(db):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # polling another process's store: saved at its next tick
                await daemon.stop(signal.SIGKILL)
                con = sqlite3.connect(db)
                try:
                    (source,) = _positions(db)
                    rewound = json.dumps({"time": (cell.start - timedelta(seconds=1)).isoformat()})
                    con.execute("UPDATE adapter_positions SET position = ? WHERE source = ?", (rewound, source))
                    con.commit()
                finally:
                    con.close()
                await daemon.start()

            drill = asyncio.create_task(rewind())
            await run_cell(cell, publish, speed=SPEED)
            await drill
            await _all_stored(db, PARTS, within_s=60)
        finally:
            await daemon.stop()
    acc = account(stored(db), list(range(1, PARTS + 1)))
    assert acc["accounted"] == {"complete": PARTS} and acc["number_minus_counter"] == [0], acc
    assert "Traceback" not in log.read_text()
