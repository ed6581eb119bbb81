"""`monitor demo` end to end: simulated machines behind real OPC UA and MTConnect servers, the real
daemon, and a result that agrees with the simulation's ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from monitor.sim import SimCell, load_scenario
from monitor.store import SqliteStore

ROOT = Path(__file__).resolve().parents[1]


def test_demo_json_reports_detection_against_ground_truth(tmp_path: Path) -> None:
    parts, seed = 60, 2
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--parts", str(parts), "--seed", str(seed), "--speed", "600",
         "--json", "--workdir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    (line,) = run.stdout.strip().splitlines()  # --json prints one object and nothing else
    result = json.loads(line)
    cell = SimCell(load_scenario("demo"), seed=seed, parts=parts)
    assert result["parts"] == len(cell.parts()) == 2 * parts

    truth = {(g.machine, g.program, g.feature): g for g in cell.ground_truth()}
    assert {(f["machine"], f["program"], f["feature"]) for f in result["features"]} == set(truth)
    with SqliteStore(tmp_path / "demo.db") as store:
        stored = store.parts()
        changes = store.alert_events(limit=100_000)
    assert len(stored) == 2 * parts
    assert result["alerts"] == len(changes)
    for f in result["features"]:
        g = truth[(f["machine"], f["program"], f["feature"])]
        assert f["drift_starts"] == g.drift_starts
        assert f["first_out_of_tolerance"] == g.first_out_of_tolerance
        opened = [a.part_number for _, a in changes if a.feature == f["feature"] and a.machine == f["machine"]
                  and a.kind.value in ("forecast", "ewma", "cusum", "run_rule", "out_of_tolerance")]  # fmt: skip
        assert f["flagged_at"] == (min(opened) if opened else None)
        if f["flagged_at"] is not None and f["first_out_of_tolerance"] is not None:
            assert f["lead"] == f["first_out_of_tolerance"] - f["flagged_at"]
    # the tool-wear drift of hole 1's diameter leaves tolerance within the batch and is flagged ahead of it
    hole1 = next(f for f in result["features"] if f["feature"] == "hole1_dia")
    assert hole1["first_out_of_tolerance"] is not None and hole1["lead"] is not None and hole1["lead"] > 0
    # every measured value the daemon stored came over the protocols, tied to the right part
    measured = {(p.machine, p.part_number): p.measurements for p in stored if p.status.value == "complete"}
    sim_parts = {(p.machine, p.part): p for p in cell.parts()}
    for key, values in measured.items():
        for signal, value in values.items():
            expected = sim_parts[key].measured[signal]
            assert expected is not None and abs(value - expected) < 1e-9


async def test_demo_sends_its_alerts_to_a_webhook(tmp_path: Path) -> None:
    from aiohttp import web

    from monitor.demo import DemoOptions, run_demo

    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        options = DemoOptions(parts=40, speed=2000, seed=1, webhooks=(f"http://127.0.0.1:{port}/hook",))
        result = await run_demo(options, tmp_path)
    finally:
        await runner.cleanup()
    assert result.alerts > 0
    assert len(received) == result.alerts  # every alert change, delivered once before the demo ended
    assert all(r["schema"] == "monitor.condition/1" and r["site"] == "demo-cell" and r["text"] for r in received)


async def test_demo_keep_running_stores_the_last_parts_while_it_runs(tmp_path: Path) -> None:
    """The batch ends, the machines go quiet, the demo keeps running: every part must be stored by
    then (by the wall clock), not only when the demo stops (it held the last 7 of 100 for minutes)."""
    import asyncio

    from monitor.demo import DemoOptions, run_demo

    stop, everything = asyncio.Event(), asyncio.Event()

    def progress(per_machine: dict[str, int], totals: dict[str, int]) -> None:
        if all(per_machine.get(m, 0) >= n for m, n in totals.items()):
            everything.set()

    options = DemoOptions(parts=12, speed=800, seed=3, keep_running=True)
    runner = asyncio.create_task(run_demo(options, tmp_path, on_progress=progress, stop=stop))
    try:
        await asyncio.wait_for(everything.wait(), 90)  # while the demo still runs
        assert not runner.done()
    finally:
        stop.set()
        result = await runner
    assert result.parts == 24


async def test_the_demo_waits_until_the_daemon_has_read_what_the_servers_published(tmp_path: Path) -> None:
    """The demo stops its daemon only once the daemon has read the last update the simulated servers
    published of every signal it reads (not after a quiet spell, which a loaded machine can exceed
    before the servers are drained); a server the daemon cannot read is named, signal by signal."""
    import asyncio
    import socket
    from datetime import UTC, datetime

    import pytest
    import yaml

    from monitor.config import load_site
    from monitor.daemon import Daemon, open_core
    from monitor.demo import CellServers, _settle, _wait_connected, _wait_started
    from monitor.errors import MonitorError
    from monitor.model import CONNECTION_SIGNAL
    from monitor.sim import run_cell

    parts = 6
    cell = SimCell(load_scenario("demo"), seed=1, parts=parts)
    async with CellServers(cell, ("opcua", "mtconnect")) as servers:
        document = servers.site_document(store=tmp_path / "demo.db", speed=2000, dashboard_port=None)
        read = {(m["id"], signal) for m in document["machines"] for signal in m["signals"]}
        with socket.socket() as closed:  # the second machine's agent is somewhere nothing listens
            closed.bind(("127.0.0.1", 0))
            document["machines"][1]["source"]["url"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
        async with open_core(load_site(tmp_path / "site.yaml")) as core:
            daemon, stop = Daemon(core, health_every_s=3600, track_reads=True), asyncio.Event()
            before = datetime.now(UTC)
            runner = asyncio.create_task(daemon.run(stop))
            try:
                await _wait_started(daemon, runner)
                # the batch starts once the daemon reads the OPC UA server (it would miss the first
                # part otherwise); the agent nobody serves keeps the daemon from being all connected
                await asyncio.wait_for(daemon.wait_read({("vmc-01", CONNECTION_SIGNAL): before}), 120)
                assert daemon.not_connected() == ["vmc-02"]
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(daemon.wait_connected(), 0.2)
                # the demo's wait is bounded and names what is missing; Ctrl-C ends it at once
                assert await _wait_connected(daemon, runner, asyncio.Event(), timeout_s=0.2) == ["vmc-02"]
                ctrl_c = asyncio.Event()
                ctrl_c.set()
                assert await asyncio.wait_for(_wait_connected(daemon, runner, ctrl_c, timeout_s=3600), 30) == ["vmc-02"]
                await run_cell(cell, servers.publish, speed=2000)
                published = {key: at for key, at in servers.published().items() if key in read}
                assert {m for m, _ in published} == {"vmc-01", "vmc-02"}
                first = {key: at for key, at in published.items() if key[0] == "vmc-01"}
                await asyncio.wait_for(daemon.wait_read(first), 120)
                assert daemon.unread(first) == {}
                missing = await _settle(daemon, servers, read, asyncio.Event(), asyncio.Event(), timeout_s=0.2)
            finally:
                stop.set()
                await runner
            with pytest.raises(MonitorError, match="daemon stopped before it connected"):  # a dead daemon ends it too
                await asyncio.wait_for(_wait_connected(daemon, runner, asyncio.Event(), timeout_s=3600), 30)
    unread = {(m, s) for m, s in published if m == "vmc-02"}
    assert len(missing) == len(unread) > 0
    assert {line.split(":")[0] for line in missing} == {f"{m} {s}" for m, s in unread}
    assert all(line.endswith("read nothing") for line in missing)
    with SqliteStore(tmp_path / "demo.db") as store:  # what was read of vmc-01 is every part it made
        made = [p.part_number for p in store.parts() if p.machine == "vmc-01" and p.status.value == "complete"]
    assert sorted(made) == list(range(1, parts + 1))


async def test_a_servers_placeholder_does_not_count_as_reading_the_controllers_updates(tmp_path: Path) -> None:
    """An agent shows every item UNAVAILABLE, stamped with its own clock, until the machine publishes:
    a daemon connected before the first publish reads those placeholders, and they must not count as
    having read the controller's later updates (a simulated cell's clock lies far behind the agent's).
    Otherwise the demo stops its daemon before it read the last part, which the agent still holds."""
    import asyncio

    import yaml

    from monitor.config import load_site
    from monitor.daemon import Daemon, open_core
    from monitor.demo import CellServers, _wait_started
    from monitor.sim import run_cell

    parts = 2
    cell = SimCell(load_scenario("demo"), seed=1, parts=parts)
    async with CellServers(cell, ("mtconnect",)) as servers:
        document = servers.site_document(store=tmp_path / "demo.db", speed=2000, dashboard_port=None)
        read = {(m["id"], signal) for m in document["machines"] for signal in m["signals"]}
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
        async with open_core(load_site(tmp_path / "site.yaml")) as core:
            daemon, stop = Daemon(core, health_every_s=3600, track_reads=True), asyncio.Event()
            runner = asyncio.create_task(daemon.run(stop))
            try:
                await _wait_started(daemon, runner)
                await asyncio.wait_for(daemon.wait_connected(), 120)  # it read the agent's placeholders
                servers.mtconnect.agent.stall()  # the stream delivers nothing of what follows
                await run_cell(cell, servers.publish, speed=0)
                published = {key: at for key, at in servers.published().items() if key in read}
                assert ("vmc-02", "part.count") in published
                assert daemon.unread(published).keys() == published.keys()
                servers.mtconnect.agent.stall(False)
                await asyncio.wait_for(daemon.wait_read(published), 120)
                assert daemon.unread(published) == {}
            finally:
                stop.set()
                await runner
    with SqliteStore(tmp_path / "demo.db") as store:  # read, so stored: every part of both machines
        stored = sorted((p.machine, p.part_number, p.counter, p.status.value) for p in store.parts())
    assert stored == [(m, n, n, "complete") for m in ("vmc-01", "vmc-02") for n in range(1, parts + 1)]
