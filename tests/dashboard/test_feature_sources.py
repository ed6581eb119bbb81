"""The dashboard's feature page with every measurement source of a feature side by side (probe and
CMM per part, the probe-vs-CMM bias) and what became of each out-of-tolerance part, recorded from
the page: over real HTTP against a real daemon, and in a real chromium."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from monitor.cli import app as cli
from monitor.config import load_site
from monitor.model import ActionKind, PartRecord, PartStatus
from monitor.report import build_report
from tests.browser import TIMEOUT_MS, screenshot_path
from tests.browser import open_watched as _open
from tests.daemons import RunningDaemon, running_daemon
from tests.requires import need_binary
from tests.streams import PROGRAM_YAML, cycle, obs, write_jsonl, write_site

pytestmark = pytest.mark.asyncio(loop_scope="module")
need_binary("chromium", "chromium", module=True)  # before the module's daemon starts

OPERATOR, ENGINEER = "olga-7c1e9b2d4a6f", "eric-5d8f3a6c1b9e"
TOKENS = {"MONITOR_TOKEN_OLGA": OPERATOR, "MONITOR_TOKEN_ERIC": ENGINEER}
PARTS = 12
BAD = (4, 5)
FEATURE = "/api/features/m1/O1001/hole1_dia"


@dataclass
class Cmm:
    running: RunningDaemon
    url: str
    site: Path
    parts: dict[int, PartRecord]
    cmm: dict[int, float]
    """The CMM file's value of each part, as written."""


def _site(tmp: Path) -> Path:
    rng = random.Random(16)
    stream = [obs(-10, "program.name", "O1001"), obs(-10, "part.count", 0)]
    for i in range(1, PARTS + 1):
        stream += cycle(i * 20.0, i, dia=10.02 if i in BAD else round(10.001 + rng.gauss(0, 0.001), 4))
    site = write_site(tmp, write_jsonl(tmp / "m1.jsonl", stream), dashboard=True)
    site.write_text(
        site.read_text(encoding="utf-8") + 'users:\n  olga: {role: operator, token: "${MONITOR_TOKEN_OLGA}"}\n'
        '  eric: {role: engineer, token: "${MONITOR_TOKEN_ERIC}"}\n',
        encoding="utf-8",
    )
    (tmp / "programs" / "o1001.yaml").write_text(
        PROGRAM_YAML.replace(
            "    upper: 10.01\n",
            '    upper: 10.01\n    measured_by:\n      cmm: {characteristic: DIA1, system: "CMM Contura", resolution: 0.0001}\n',
            1,
        ),
        encoding="utf-8",
    )
    return site


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cmm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cmm]:
    tmp = tmp_path_factory.mktemp("sources")
    site_file = _site(tmp)
    os.environ.update(TOKENS)
    try:
        site = load_site(site_file)
    finally:
        for k in TOKENS:
            os.environ.pop(k)
    async with running_daemon(site) as running:
        await running.parts(PARTS)
        stored = await running.daemon.core.read(lambda store: store.parts(status=PartStatus.COMPLETE))
        parts = {p.part_number: p for p in stored}
        rng = random.Random(23)
        # the CMM measures every part but the last two, 2 um smaller than the probe reads
        probe = {n: p.measurements["probe.hole1_dia"] for n, p in parts.items() if n <= 10}
        values = {n: round(v - 0.002 + rng.gauss(0, 0.0003), 5) for n, v in probe.items()}
        export = tmp / "cmm.csv"
        export.write_text(
            "part,characteristic,value,machine,program\n" + "".join(f"{n},DIA1,{v},m1,O1001\n" for n, v in values.items()),
            encoding="utf-8",
        )
        args = ["import", str(export), "-c", str(site_file), "--json"]
        result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=TOKENS)
        assert result.exit_code == 0, result.output
        yield Cmm(running, (running.daemon.dashboard_url or "").rstrip("/"), site_file, parts, values)


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _get(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def test_the_api_gives_probe_and_cmm_per_part_and_the_reports_bias(cmm: Cmm, http: aiohttp.ClientSession) -> None:
    body = await _get(http, cmm.url + FEATURE + "/parts")
    assert [(s["source"], s["n"]) for s in body["sources"]] == [("probe", PARTS), ("cmm", 10)]
    assert body["sources"][1]["system"] == "CMM Contura" and body["scope"] == PARTS
    rows = {r["part_number"]: r for r in body["parts"]}
    assert sorted(rows) == list(range(1, PARTS + 1))
    for n, p in cmm.parts.items():
        assert rows[n]["key"] == p.key
        assert rows[n]["values"]["probe"]["value"] == pytest.approx(p.measurements["probe.hole1_dia"])
        assert rows[n]["values"].get("cmm", {}).get("value") == (pytest.approx(cmm.cmm[n]) if n in cmm.cmm else None)
    assert [n for n, r in rows.items() if r["out_of_tolerance"]] == list(BAD)
    assert rows[4]["values"]["probe"]["in_tolerance"] is False and rows[4]["values"]["cmm"]["in_tolerance"] is False
    # the bias, read independently from the data, and as the report computes it on the same parts
    diffs = [cmm.parts[n].measurements["probe.hole1_dia"] - v for n, v in cmm.cmm.items()]
    (b,) = body["bias"]
    assert b["source"] == "cmm" and b["n"] == 10
    assert b["mean"] == pytest.approx(statistics.fmean(diffs)) and b["sd"] == pytest.approx(statistics.stdev(diffs))
    assert b["ci"][0] < 0.002 < b["ci"][1] and b["text"].startswith(
        f"probe − cmm: mean {statistics.fmean(diffs):+.4f} mm over 10 parts"
    )
    site = cmm.running.daemon.site
    report = await cmm.running.daemon.core.read(lambda store: build_report(store, site.programs["O1001"], site="s"))
    (rb,) = next(f for f in report.features if f.name == "hole1_dia").biases
    assert rb.n == b["n"] and rb.mean == pytest.approx(b["mean"]) and rb.sd == pytest.approx(b["sd"])

    assert (await _get(http, cmm.url + FEATURE + "/parts?last=3"))["scope"] == 3
    await _get(http, cmm.url + FEATURE + "/parts?last=x", status=400)
    await _get(http, cmm.url + "/api/features/m1/O1001/nope/parts", status=404)
    await _get(http, cmm.url + "/api/features/m9/O1001/hole1_dia/parts", status=404)


async def test_a_disposition_through_the_api_goes_on_the_part(cmm: Cmm, http: aiohttp.ClientSession) -> None:
    part5 = cmm.parts[5]
    payload = {"kind": "part_scrapped", "machine": "m1", "program": "O1001", "feature": "hole1_dia", "part_key": part5.key}

    async def post(token: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with http.post(cmm.url + "/api/actions", json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()

    status, answer = await post(OPERATOR, payload)
    assert status == 403 and "engineer" in answer["error"]  # scrapping is a material-review decision
    status, answer = await post(ENGINEER, {**payload, "part_key": "m1/O1001/nope"})
    assert status == 400 and "no part with key" in answer["error"]
    status, answer = await post(ENGINEER, {**payload, "reason": "NCR-5"})
    assert status == 200, answer
    assert (answer["action"]["part_key"], answer["action"]["part_number"]) == (part5.key, 5)
    rows = {r["part_number"]: r for r in (await _get(http, cmm.url + FEATURE + "/parts"))["parts"]}
    assert [a["kind"] for a in rows[5]["dispositions"]] == ["part_scrapped"] and rows[4]["dispositions"] == []


async def test_the_feature_page_shows_both_sources_and_records_a_disposition(cmm: Cmm, browser: Any) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        await context.add_init_script(f"sessionStorage.setItem('monitor-token', '{ENGINEER}')")
        w = await _open(context, f"{cmm.url}/feature?machine=m1&program=O1001&feature=hole1_dia")
        page = w.page
        section = page.locator("#sources-section:not([hidden])")
        await section.locator("#sources-table tbody tr").nth(PARTS - 1).wait_for()
        assert await section.get_attribute("data-sources") == "probe,cmm"
        heads = await page.locator("#sources-table thead th").all_text_contents()
        assert heads[:3] == ["Part", "probe", "cmm"]
        row7 = page.locator('#sources-table tbody tr[data-part="7"]')
        assert await row7.locator('td[data-source="cmm"]').text_content() == f"{cmm.cmm[7]:.4f}"
        assert await page.locator('#sources-table tbody tr[data-part="11"] td[data-source="cmm"]').text_content() == "–"
        bias = await page.locator('#bias li[data-source="cmm"]').text_content() or ""
        mean = statistics.fmean(cmm.parts[n].measurements["probe.hole1_dia"] - v for n, v in cmm.cmm.items())
        assert bias.startswith(f"probe − cmm: mean {mean:+.4f} mm over 10 parts")
        traces = await page.evaluate("document.getElementById('sources-chart').data.map(t => [t.name, t.x.length])")
        assert traces == [["probe", PARTS], ["cmm", 10]]
        # part 4 has no disposition yet: accept it on concession from the page
        row4 = page.locator('#sources-table tbody tr[data-part="4"]')
        assert "no disposition recorded" in (await row4.locator("td.disposition").text_content() or "")
        await row4.locator("select.disposition-kind").select_option("part_accepted")
        await row4.locator("input.disposition-reason").fill("concession C-4")
        await row4.locator("button.record-disposition").click()
        await row4.locator("td.disposition .done", has_text="part accepted on concession").wait_for()
        assert await page.locator("#notice.ok").text_content() == (
            "Part 4: part accepted on concession: part 4; concession C-4 (recorded by eric)"
        )
        actions = await cmm.running.daemon.core.read(lambda store: store.actions(machine="m1"))
        accepted = [a for a in actions if a.kind is ActionKind.PART_ACCEPTED]
        assert [(a.part_key, a.user, a.reason, a.source) for a in accepted] == [
            (cmm.parts[4].key, "eric", "concession C-4", "dashboard")
        ]
        shot = screenshot_path("screenshot-feature-sources.png")
        await page.locator("#sources-section").screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        w.assert_clean(cmm.url)
    finally:
        await context.close()
