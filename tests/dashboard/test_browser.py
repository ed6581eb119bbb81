"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real daemon.

One daemon (tests/dashboard/cell.py) and one browser serve the whole module; each test opens its
own browser context. Every page load also checks that nothing was requested from another origin
(no CDN) and that the page logged no error (a Content-Security-Policy violation is one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import load_site
from monitor.model import GAP_SIGNAL, AlertState, ConditionState, Observation, PartStatus
from tests.browser import TIMEOUT_MS, screenshot_path
from tests.browser import open_watched as _open
from tests.daemons import running_daemon
from tests.dashboard.cell import LIVE, SIM, TOKEN, XSS, XSS_PROGRAM, Cell, live_stream, start_cell
from tests.requires import need_binary
from tests.streams import T0, batch, write_jsonl, write_site

pytestmark = pytest.mark.asyncio(loop_scope="module")

SCREENSHOT = screenshot_path("screenshot-feature.png")
need_binary("chromium", "chromium", module=True)  # before the module's daemon starts


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cell(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cell]:
    async with start_cell(tmp_path_factory.mktemp("cell")) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Any) -> AsyncIterator[Any]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        await ctx.close()


async def test_cell_page_lists_every_machine(cell: Cell, context: Any) -> None:
    w = await _open(context, cell.url + "/")
    page = w.page
    rows = page.locator("#machines tbody tr")
    await rows.nth(2).wait_for()
    assert await rows.evaluate_all("rs => rs.map(r => r.dataset.machine)") == [SIM, XSS, LIVE]
    assert await daemon_parts(cell, SIM) == 100
    assert await page.locator(f'tr[data-machine="{SIM}"] td.parts').text_content() == "100"
    sim_row = page.locator(f'tr[data-machine="{SIM}"]')
    assert await sim_row.locator("td.program").text_content() == "O1001"
    assert await sim_row.locator('[data-severity="critical"]').count() == 1  # the tool_wear run ends out of tolerance
    assert await sim_row.locator(".badge.lost").count() == 0
    assert await page.locator(f'tr[data-machine="{XSS}"] .badge.lost').text_content() == "⚠ signal lost"
    await page.locator("#live.on").wait_for()  # the event stream is connected
    w.assert_clean(cell.url)


async def daemon_parts(cell: Cell, machine: str) -> int:
    status = (await cell.daemon.status())["machines"][machine]
    return int(status["parts"])


async def test_program_name_with_markup_is_shown_as_text(cell: Cell, context: Any) -> None:
    w = await _open(context, cell.url + "/")
    page = w.page
    program_cell = page.locator(f'tr[data-machine="{XSS}"] td.program')
    await program_cell.wait_for()
    assert await program_cell.text_content() == XSS_PROGRAM
    # the feature page puts the name in the server-rendered heading and in the chart's API URL
    w2 = await _open(context, f"{cell.url}/machine?id={XSS}")
    link = w2.page.locator("#programs a").first
    await link.click()
    await w2.page.wait_for_url("**/feature?**")
    await w2.page.locator('#chart[data-points="6"]').wait_for()
    assert XSS_PROGRAM in (await w2.page.locator(".crumbs").text_content() or "")
    for p in (page, w2.page):
        assert await p.evaluate("window.__xss") is None, "markup in a program name was executed"
        assert await p.locator("main img").count() == 0, "markup in a program name became an element"
    w.assert_clean(cell.url)
    w2.assert_clean(cell.url)


async def test_feature_chart_shows_every_stored_part(cell: Cell, context: Any) -> None:
    parts = await cell.daemon.core.read(lambda store: store.parts(machine=SIM, program="O1001", status=PartStatus.COMPLETE))
    stored = [p.part_number for p in parts if "probe.hole1_dia" in p.measurements]
    w = await _open(context, f"{cell.url}/feature?machine={SIM}&program=O1001&feature=hole1_dia")
    page = w.page
    await page.locator(f'#chart[data-points="{len(stored)}"]').wait_for()
    plotted = await page.evaluate("document.getElementById('chart').data[0].x")
    assert plotted == stored
    names = await page.evaluate("document.getElementById('chart').data.map(t => t.name)")
    assert "trend forecast" in names and "alerts" in names
    markers = await page.evaluate("document.getElementById('chart').data.find(t => t.name === 'alerts').x.length")
    assert markers > 0
    assert await page.locator(".js-plotly-plot .point").count() >= len(stored)  # drawn, not only handed over
    # evidence beneath the chart: attribution and the suggested offset; capability with intervals
    evidence = await page.locator("#evidence").text_content() or ""
    # the condition now: out of tolerance since the run wore the tool, what to do and the offset in the machine's register
    assert "What to do now" in evidence and "quarantine part 100" in evidence
    assert "Offset now" in evidence and "T12 D-wear -0.0" in evidence
    notes = await page.evaluate("document.getElementById('chart').layout.annotations.map(a => a.text)")
    assert "breach ~part" not in " ".join(notes) and any(n.startswith("out of tolerance") for n in notes)
    cpk = await page.locator('#capability tr[data-index="cpk"] td').all_text_contents()
    assert cpk[1] != "–" and "–" in cpk[2]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
    w.assert_clean(cell.url)

    # a position feature: true position on the main chart, the deviation of each axis beneath
    pos = await _open(context, f"{cell.url}/feature?machine={SIM}&program=O1001&feature=hole1_pos")
    await pos.page.locator(f'#chart[data-points="{len(stored)}"]').wait_for()
    await pos.page.locator("#axes-section:not([hidden]) .js-plotly-plot").wait_for()
    axes = await pos.page.evaluate(
        "document.getElementById('axes-chart').data.filter(t => t.mode === 'lines+markers').map(t => [t.name, t.x.length])"
    )
    assert axes == [["X", len(stored)], ["Y", len(stored)]]
    pos.assert_clean(cell.url)


async def test_alert_raised_while_page_is_open_appears_without_reload(cell: Cell, context: Any) -> None:
    alerts = await _open(context, f"{cell.url}/alerts?machine={LIVE}&state=")  # all states: it closes again
    cellpage = await _open(context, cell.url + "/")
    chart = await _open(context, f"{cell.url}/feature?machine={LIVE}&program=O1001&feature=hole1_dia")
    await chart.page.locator('#chart.js-plotly-plot[data-points="0"]').wait_for()
    for w in (alerts, cellpage, chart):
        await w.page.locator("#live.on").wait_for()
        await w.page.evaluate("window.__loaded_once = true")
    assert await alerts.page.locator("#alerts tbody tr").count() == 0
    await cell.feed_live(live_stream(12, oot_at=9))
    # one condition for the feature (it may open on a chart signal); it was out of tolerance at part 9
    row = alerts.page.locator('#alerts tr[data-feature="hole1_dia"]')
    await row.wait_for()
    await cellpage.page.locator(f'tr[data-machine="{LIVE}"] td.parts', has_text="12").wait_for()
    events = await cell.daemon.core.read(lambda store: store.alert_events(limit=100_000))
    history = [(a.last_part, a.condition) for _, a in events if a.machine == LIVE and a.feature == "hole1_dia"]
    assert (9, ConditionState.OUT_OF_TOLERANCE) in history
    assert len({a.id for _, a in events if a.machine == LIVE and a.feature == "hole1_dia"}) == 1
    await alerts.page.locator(f'#alerts tr[data-feature="hole1_dia"][data-level="{history[-1][1]}"]').wait_for()
    assert await row.count() == 1
    await chart.page.locator('#chart[data-points="12"]').wait_for()
    # the out-of-tolerance part is marked (the live stream also sits 6.5 um off nominal from part 1,
    # which the charts flag before it)
    assert await chart.page.evaluate("document.getElementById('chart').data.find(t => t.name === 'out of tolerance').x") == [9]
    assert await chart.page.evaluate("document.getElementById('chart').data.find(t => t.name === 'alerts').x") == [history[0][0]]
    for w in (alerts, cellpage, chart):
        assert await w.page.evaluate("window.__loaded_once") is True, "the page was reloaded"
        w.assert_clean(cell.url)


async def test_acknowledge_works_with_the_token_and_is_refused_without(cell: Cell, context: Any) -> None:
    core = cell.daemon.core
    open_alerts = await core.read(lambda store: store.alerts(machine=SIM, state=AlertState.OPEN))
    target = next(a for a in open_alerts if a.feature == "hole2_dia")
    w = await _open(context, f"{cell.url}/alerts?machine={SIM}&state=open")
    page = w.page
    row = page.locator(f'#alerts tr[data-alert-id="{target.id}"]')
    await row.wait_for()
    notice = page.locator("#notice")

    await row.locator("button.ack").click()
    await notice.filter(has_text="Refused (401)").wait_for()
    await page.fill("#token", "not-the-token")
    await row.locator("button.ack").click()
    await notice.filter(has_text="Refused (403)").wait_for()
    after = await core.read(lambda store: store.alert(target.id))
    assert after is not None and after.state is AlertState.OPEN

    await page.fill("#token", TOKEN)
    await row.locator("button.ack").click()
    await notice.filter(has_text="Acknowledged").wait_for()
    after = await core.read(lambda store: store.alert(target.id))
    assert after is not None and after.state is AlertState.ACKNOWLEDGED
    # filtered on state=open, the acknowledged alert leaves the list
    await row.wait_for(state="detached")
    w.assert_clean(cell.url, expected=("status of 401", "status of 403"))


async def _until(page: Any, expression: str, at_least: int) -> None:
    """Poll ``expression`` in the page until it reaches ``at_least`` (wait_for_function needs eval,
    which the dashboard's CSP forbids)."""
    async with asyncio.timeout(TIMEOUT_MS / 1000):
        while True:
            if await page.evaluate(expression) >= at_least:
                return
            await asyncio.sleep(0.05)


async def test_a_page_left_open_keeps_a_bounded_number_of_rows(cell: Cell, context: Any) -> None:
    """A shift's worth of parts arriving on an open machine page: the table stops at its cap."""
    w = await _open(context, f"{cell.url}/machine?id={SIM}")
    page = w.page
    await page.locator("#parts tbody tr").nth(49).wait_for()  # the 50 most recent stored parts
    await page.locator("#live.on").wait_for()
    delivered = 0
    for chunk in range(3):  # 300 parts, in chunks the per-client event queue (256) can hold
        for i in range(100):
            n = 1000 + chunk * 100 + i
            cell.daemon.hub.publish(
                "part",
                {
                    "key": f"{SIM}/O1001/shift-{n}",
                    "machine": SIM,
                    "program": "O1001",
                    "part_number": n,
                    "status": "complete",
                    "end": "2026-01-05T12:00:00+00:00",
                    "measurements": {"probe.hole1_dia": 10.005},
                    "tools": [{"tool": 12, "life_start": 1.0, "life_end": 2.0, "cutting_time": 60.0}],
                    "spindle": {"mean_load": 40.0},
                },
            )
        delivered += 100
        await _until(page, "Number(document.body.dataset.events || 0)", delivered)
    rows = page.locator("#parts tbody tr")
    assert await rows.count() == 200
    assert await rows.first.get_attribute("data-key") == f"{SIM}/O1001/shift-1299"
    w.assert_clean(cell.url)


async def test_cell_page_shows_the_configuration_and_a_refused_reload(cell: Cell, context: Any) -> None:
    w = await _open(context, cell.url + "/")
    page = w.page
    version = cell.daemon.config_version
    site_hash = version.files[version.site_file]
    config = page.locator("#config")
    await page.locator("#config", has_text=f"site.yaml@{site_hash}").wait_for()
    assert "O1001.yaml@" in (await config.text_content() or "")
    broken = cell.daemon.site.path.parent / "programs" / "broken.yaml"
    broken.write_text("program: O7\nfeatures: {d: {kind: size}}\n")
    try:
        result = await cell.daemon.reload()
        assert result["ok"] is False
        await page.locator("#config.error", has_text="broken.yaml:2").wait_for()  # live, without a page reload
    finally:
        broken.unlink()
        assert (await cell.daemon.reload())["ok"] is True
    await page.locator("#config:not(.error)").wait_for()
    w.assert_clean(cell.url)


async def test_parts_not_observed_are_shown_with_why_in_the_pages_api_and_cli(tmp_path: Path, context: Any) -> None:
    """A machine whose data was lost while its controller went on counting (counter 3 -> 5 inside a
    gap the source reported): the two parts nobody saw are placeholders, visible with why and when in
    `monitor parts` (table and --json), /api/machines, the cell and machine pages and a data_gap alert."""
    stream = batch(3)
    stream.append(
        Observation("m1", GAP_SIGNAL, T0 + timedelta(seconds=70), "connection to the cell lost", end=T0 + timedelta(seconds=130))
    )
    stream += batch(2, start_count=5, t0=120.0)
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "gap.jsonl", stream), dashboard=True))
    async with running_daemon(site) as running:
        await running.parts(7)
        url = (running.daemon.dashboard_url or "").rstrip("/")
        async with aiohttp.ClientSession() as session, session.get(url + "/api/machines") as resp:
            (machine,) = [m for m in (await resp.json())["machines"] if m["machine"] == "m1"]
        assert machine["parts"] == 7 and machine["not_observed"] == 2
        cellpage = await _open(context, url + "/")
        await cellpage.page.locator('tr[data-machine="m1"] td.parts .badge.not_observed', has_text="2 not observed").wait_for()
        w = await _open(context, url + "/machine?id=m1")
        unseen = w.page.locator('#parts tbody tr[data-status="not_observed"]')
        await unseen.nth(1).wait_for()
        assert await unseen.count() == 2
        row = (await unseen.first.text_content()) or ""
        assert "not observed" in row and "connection to the cell lost" in row and "source clock" in row
        alerts = await running.daemon.core.read(lambda store: store.alerts(machine="m1"))
        (gap,) = [a for a in alerts if a.kind == "data_gap"]
        assert gap.state is AlertState.OPEN and gap.evidence["parts_not_observed"] == 2
        for page in (cellpage, w):
            page.assert_clean(url)
    listed = CliRunner().invoke(app, ["parts", "-c", str(site.path), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines() if line.strip()]
    assert [(r["part"], r["counter"], r["status"]) for r in rows] == [
        (1, 1, "complete"), (2, 2, "complete"), (3, 3, "complete"),
        (4, 4, "not_observed"), (5, 5, "not_observed"), (6, 6, "complete"), (7, 7, "complete"),
    ]  # fmt: skip
    table = CliRunner().invoke(app, ["parts", "-c", str(site.path)], env={"COLUMNS": "400"})
    assert table.exit_code == 0, table.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in table.output.splitlines() if line.startswith("│")]
    (fourth,) = [c for c in cells if c[2:4] == ["4", "4"]]
    assert fourth[4] == "not observed" and "connection to the cell lost" in fourth[-1] and "source clock" in fourth[-1]
