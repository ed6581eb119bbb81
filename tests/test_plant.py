"""One plant view: two cells' daemons on one PostgreSQL store; either daemon's dashboard shows both
cells with their machines, owning daemons and health; the CLI and the API filter by cell."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from monitor.config import load_site
from monitor.model import Alert, AlertKind, AlertState, Severity
from monitor.sim import SimCell, load_scenario
from monitor.sim.mtconnect_agent import SimAgentBinding
from monitor.sim.process import PROGRAMS_DIR
from monitor.store import open_store
from tests.daemons import running_daemon
from tests.requires import need_binary

ROOT = Path(__file__).resolve().parents[1]
PARTS = 3


def _site(folder: Path, cell: str, url: str, binding: SimAgentBinding, machine: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    site = folder / "site.yaml"
    site.write_text(yaml.safe_dump({
        "site": cell, "programs": str(PROGRAMS_DIR), "dashboard": {"port": 0}, "store": {"url": url},
        "machines": [{"id": machine, "signals": binding.signal_map(machine), "tracking": {"grace_s": 2},
                      "source": {"type": "mtconnect", "url": binding.url, "device": machine, "interval_ms": 20}}],
    }))  # fmt: skip
    return site


async def _cli(site: Path, *args: str, status: int = 0) -> Any:
    """The CLI as a process, waited for without blocking the daemons running in this loop: its JSON
    lines (its error text when ``status`` is not 0)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", *args, "-c", str(site), "--json",
        cwd=ROOT, env=os.environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == status, err.decode()
    if status:
        return err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_two_cells_on_one_store_show_as_one_plant(tmp_path: Path, pg_url: str) -> None:
    sim = SimCell(load_scenario("stable"), seed=1, parts=PARTS)
    first, second = sim.machines
    async with SimAgentBinding([first, second]) as binding:
        site_1 = _site(tmp_path / "cell-1", "cell-1", pg_url, binding, first.id)
        site_2 = _site(tmp_path / "cell-2", "cell-2", pg_url, binding, second.id)
        async with running_daemon(load_site(site_1)) as one, running_daemon(load_site(site_2)) as two:
            for daemon in (one, two):
                await daemon.until(lambda e: e.kind == "machine" and e.data["connection"] == "connected", timeout_s=60)
            for event in sim.events():
                binding.publish(event)
            await one.parts(PARTS, timeout_s=60)
            await two.parts(PARTS, timeout_s=60)
            url = one.daemon.dashboard_url
            assert url is not None
            async with aiohttp.ClientSession() as session:
                plant = await _get(session, url + "api/plant")
                cell_2_parts = await _get(session, url + "api/parts?cell=cell-2")
                cell_1_alerts = await _get(session, url + "api/alerts?cell=cell-1&state=active")
                async with session.get(url + "api/parts?cell=cell-9") as resp:
                    assert resp.status == 404 and "cell-1, cell-2" in (await resp.json())["error"]
            await _browser_shows(url, {first.id, second.id})
            cli_plant = await _cli(site_2, "plant")
            cli_parts = await _cli(site_2, "parts", "--cell", "cell-1", "--last", "100")
            refused, passed_on = await _offset_from_both_cells(pg_url, site_2, site_1, first.id, first.programs[0])

    assert plant["this_cell"] == "cell-1"
    by_cell = {c["cell"]: c["machines"] for c in plant["cells"]}
    assert [m["machine"] for m in by_cell["cell-1"]] == [first.id] and [m["machine"] for m in by_cell["cell-2"]] == [second.id]
    for machines in by_cell.values():
        [row] = machines
        assert row["live"] and row["owner"] and row["parts"] >= PARTS, row  # each owned by its own daemon
        assert row["health"], row  # the owner's status line, renewed with its lease
    assert by_cell["cell-1"][0]["owner"] != by_cell["cell-2"][0]["owner"]
    assert by_cell["cell-1"][0]["connection"] == "connected"  # this daemon's own machine, live
    assert {p["machine"] for p in cell_2_parts["parts"]} == {second.id} and cell_2_parts["total"] >= PARTS
    assert all(a["machine"] == first.id for a in cell_1_alerts["alerts"])
    assert {(r["cell"], r["machine"]) for r in cli_plant} == {("cell-1", first.id), ("cell-2", second.id)}
    assert {p["machine"] for p in cli_parts} == {first.id} and len(cli_parts) >= PARTS
    # cell-1's register is written by cell-1's daemon only: the command on cell-2's host names it
    assert f"watched by {by_cell['cell-1'][0]['owner']} (cell cell-1)" in refused, refused
    assert "watched by" not in passed_on and "no condition" in passed_on  # its own daemon answered (not an OPC UA machine's)
    # the daemons stopped cleanly: their leases were given up
    released = await _cli(site_1, "plant")
    assert not any(r["live"] for r in released)
    await _report_reads_one_cell(tmp_path, site_1, second.id, second.programs[0])


async def _offset_from_both_cells(url: str, other: Path, own: Path, machine: str, program: str) -> tuple[str, str]:
    """`monitor offset apply` for a condition of ``machine`` (held by ``own``'s daemon) from ``other``'s
    host and from ``own``'s: their error texts."""
    condition = Alert(
        id=f"{machine}/{program}/bore/forecast/1", machine=machine, program=program, feature="bore",
        kind=AlertKind.FORECAST, severity=Severity.WARNING, state=AlertState.OPEN, part_number=1,
        message="bore drifting", time=datetime.now(UTC),
    )  # fmt: skip

    def record() -> None:  # behind the daemons' backs: neither engine knows it
        with open_store(url) as store:
            store.record_alerts([condition])

    await asyncio.to_thread(record)
    args = ("offset", "apply", condition.id, "--value", "0.01")
    return str(await _cli(other, *args, status=1)), str(await _cli(own, *args, status=1))


async def _report_reads_one_cell(tmp_path: Path, site: Path, second: str, program: str) -> None:
    """`monitor report --cell` on the shared store, from another cell's site file: that cell's
    machines only, named as the report's site; without it, every cell's parts of the program."""
    cell_2_parts = [p for p in await _cli(site, "parts", "--cell", "cell-2", "--last", "1000") if p["program"] == program]
    all_parts = [p for p in await _cli(site, "parts", "--last", "1000") if p["program"] == program]
    [cell_2] = await _cli(site, "report", "--program", program, "--out", str(tmp_path / "cell-2.html"), "--cell", "cell-2")
    [whole] = await _cli(site, "report", "--program", program, "--out", str(tmp_path / "plant.html"))
    assert (cell_2["site"], cell_2["machines"], cell_2["parts"]) == ("cell-2", [second], len(cell_2_parts))
    assert cell_2_parts and {p["machine"] for p in cell_2_parts} == {second}
    assert whole["site"] == "cell-1" and whole["parts"] == len(all_parts)
    assert set(whole["machines"]) == {p["machine"] for p in all_parts}
    assert "cell-2" in (tmp_path / "cell-2.html").read_text()
    unknown = await _cli(site, "report", "--program", program, "--out", str(tmp_path / "x.html"), "--cell", "cell-9", status=1)
    assert "no cell 'cell-9'" in unknown and "cell-1, cell-2" in unknown


async def _browser_shows(url: str, machines: set[str]) -> None:
    chromium = shutil.which("chromium") or need_binary("chromium", "chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(url + "plant")
            await page.wait_for_selector("#plant tbody tr[data-live='true'] >> nth=1", timeout=15_000)
            shown = set(await page.locator("#plant tbody tr").evaluate_all("rows => rows.map(r => r.dataset.machine)"))
            assert shown == machines
            assert errors == []
        finally:
            await browser.close()
