"""The dashboard's JSON API and event stream over real HTTP against a real daemon (no browser)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from monitor.cli import app as cli
from monitor.codec import alert_from_dict
from monitor.config import load_site
from monitor.dashboard.server import plotly_js_path
from monitor.dashboard.stream import QUEUE_SIZE
from monitor.model import AlertState
from monitor.queries import site_part_row
from tests.daemons import running_daemon
from tests.dashboard.cell import ENGINEER_TOKEN, OPERATOR_TOKEN, SIM, TOKEN, XSS, XSS_PROGRAM, Cell, start_cell
from tests.streams import batch, write_jsonl, write_site

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cell(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cell]:
    async with start_cell(tmp_path_factory.mktemp("api")) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _get(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def _open_alert(cell: Cell, feature: str) -> str:
    alerts = await cell.daemon.core.read(lambda store: store.alerts(machine=SIM, state=AlertState.OPEN))
    return next(a.id for a in alerts if a.feature == feature)


async def test_parts_and_alerts_show_the_same_numbers_as_the_cli(cell: Cell, http: aiohttp.ClientSession) -> None:
    body = await _get(http, f"{cell.url}/api/parts?machine={SIM}&last=7")
    assert body["total"] == 100
    site_file = cell.fifo.parent / "site.yaml"
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["parts", "--config", str(site_file), "--machine", SIM, "--last", "7", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == body["parts"]
    site = cell.daemon.site
    expected = await cell.daemon.core.read(lambda store: [site_part_row(site, p) for p in store.parts(machine=SIM, last=7)])
    assert all(set(row["out_of_tolerance"]) <= {"hole1_dia", "hole2_dia"} for row in expected)
    assert all(row["out_of_tolerance"] for row in expected)  # the tool_wear run ends with bad parts: they say so
    assert body["parts"] == json.loads(json.dumps(expected))

    # one condition per feature: the tool_wear batch ends with its drifting features' conditions open
    alerts = (await _get(http, f"{cell.url}/api/alerts?machine={SIM}&state=open"))["alerts"]
    assert alerts and all(a["state"] == "open" and a["machine"] == SIM for a in alerts)
    assert len({a["feature"] for a in alerts}) == len(alerts)  # never two open for one feature
    assert [a["time"] for a in alerts] == sorted((a["time"] for a in alerts), reverse=True)  # newest first
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["alerts", "--config", str(site_file), "--json"])
    cli_alerts = {a["id"]: a for a in map(json.loads, result.output.splitlines())}
    for a in alerts:
        assert cli_alerts[a["id"]] == a


async def test_machines_and_feature_series(cell: Cell, http: aiohttp.ClientSession) -> None:
    machines = {m["machine"]: m for m in (await _get(http, f"{cell.url}/api/machines"))["machines"]}
    assert machines[SIM]["parts"] == 100 and machines[SIM]["program"] == "O1001"
    assert machines[XSS]["program"] == XSS_PROGRAM
    assert machines[XSS]["signal_lost"] and machines[XSS]["open_alerts"]["warning"] == 1  # the signal_lost alert
    assert not machines[SIM]["signal_lost"]
    assert sum(machines[SIM]["open_alerts"].values()) > 0
    one = await _get(http, f"{cell.url}/api/machines/{SIM}")
    assert one == machines[SIM]
    await _get(http, f"{cell.url}/api/machines/nope", status=404)

    f = await _get(http, f"{cell.url}/api/features/{SIM}/O1001/hole1_pos")
    assert f["kind"] == "position" and len(f["values"]) == 100
    assert all(set(v["axes"]) == {"x", "y"} and v["value"] >= 0 for v in f["values"])
    cone = f["forecast"]
    assert len(cone["mean"]) == len(cone["lo"]) == len(cone["hi"]) == len(cone["parts"]) > 0
    assert all(lo <= m <= hi for lo, m, hi in zip(cone["lo"], cone["mean"], cone["hi"], strict=True))
    d = await _get(http, f"{cell.url}/api/features/{SIM}/O1001/hole1_dia")
    assert d["limits"]["lower"] == 10.0 and d["limits"]["upper"] == 10.015
    assert d["capability"]["cpk"] is not None and d["evidence"]["evidence"]["advice"]["offsets"][0]["change_mm"] is not None
    assert d["evidence"]["evidence"]["advice"]["offsets"][0]["label"] == "T12 D-wear"  # a bore on a mill: its tool's wear
    err = await _get(http, f"{cell.url}/api/features/{SIM}/O1001/nope", status=404)
    assert "no feature" in err["error"]
    await _get(http, f"{cell.url}/api/features/nope/O1001/hole1_dia", status=404)
    xss = await _get(http, f"{cell.url}/api/features/{XSS}/{quote(XSS_PROGRAM, safe='')}/hole1_dia")
    assert xss["program"] == XSS_PROGRAM and len(xss["values"]) == 6


async def test_acknowledge_and_close_need_the_token(cell: Cell, http: aiohttp.ClientSession) -> None:
    alert_id = await _open_alert(cell, "hole1_dia")
    url = f"{cell.url}/api/alerts/{alert_id}"
    async with http.post(url + "/ack") as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post(url + "/ack", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 403
    assert (await _get(http, url))["state"] == "open"
    good = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with http.post(url + "/ack", headers=good, json={"comment": "seen, measuring the next part by hand"}) as resp:
        assert resp.status == 200
        body = await resp.json()
        acked = alert_from_dict(body["alert"])
    assert acked.id == alert_id and acked.state is AlertState.ACKNOWLEDGED
    action = body["action"]
    assert (action["kind"], action["user"], action["role"], action["source"]) == ("acknowledge", "olga", "operator", "dashboard")
    assert action["comment"] == "seen, measuring the next part by hand" and action["condition_id"] == alert_id
    stored = await _get(http, f"{cell.url}/api/actions?condition={quote(alert_id, safe='')}")
    assert [a["id"] for a in stored["actions"]] == [action["id"]]
    async with http.post(url + "/ack", headers=good) as resp:
        assert resp.status == 404  # no longer an open, unacknowledged alert
    async with http.post(url + "/close", headers=good) as resp:  # an operator may not close by hand
        assert resp.status == 403 and "needs the role engineer" in (await resp.json())["error"]
    async with http.post(url + "/close", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:  # nor the shared token
        assert resp.status == 403
    engineer = {"Authorization": f"Bearer {ENGINEER_TOKEN}"}
    async with http.post(f"{cell.url}/api/alerts/no/such/alert/close", headers=engineer) as resp:
        assert resp.status == 404 and "no open alert" in (await resp.json())["error"]
    async with http.get(f"{cell.url}/api/whoami", headers=engineer) as resp:
        me = await resp.json()
    assert (me["user"], me["role"]) == ("eric", "engineer") and "write_offset" in me["may"]
    async with http.get(f"{cell.url}/api/whoami", headers=good) as resp:
        me = await resp.json()
    assert me["role"] == "operator" and "acknowledge" in me["may"] and "write_offset" not in me["may"]


async def test_event_stream_relays_alert_changes(cell: Cell, http: aiohttp.ClientSession) -> None:
    alert_id = await _open_alert(cell, "hole2_dia")
    async with http.get(f"{cell.url}/api/events") as stream:
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        assert (await stream.content.readuntil(b"\n\n")).startswith(b"retry:")
        async with http.post(
            f"{cell.url}/api/alerts/{alert_id}/close", headers={"Authorization": f"Bearer {ENGINEER_TOKEN}"}
        ) as r:
            assert r.status == 200 and (await r.json())["alert"]["state"] == "closed"
        async with asyncio.timeout(10):
            while True:
                frame = (await stream.content.readuntil(b"\n\n")).decode()
                if frame.startswith("event: alert"):
                    data = json.loads(frame.split("data: ", 1)[1])
                    if data["id"] == alert_id:
                        break
        assert data["state"] == "closed"
        assert cell.daemon.hub.subscribers >= 1
    async with asyncio.timeout(10):  # the server notices the closed client at its next write
        while cell.daemon.hub.subscribers:
            cell.daemon.hub.publish("machine", {"machine": "poke"})
            await asyncio.sleep(0.05)


async def test_pages_are_local_and_carry_security_headers(cell: Cell, http: aiohttp.ClientSession) -> None:
    for path in ("/", f"/machine?id={SIM}", f"/feature?machine={SIM}&program=O1001&feature=hole1_dia", "/alerts"):
        async with http.get(cell.url + path) as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "default-src 'self'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            html = await resp.text()
            assert "http://" not in html and "https://" not in html and "<script>" not in html
    async with http.get(f"{cell.url}/feature?machine={SIM}&program={quote(XSS_PROGRAM, safe='')}&feature=hole1_dia") as resp:
        html = await resp.text()
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html and XSS_PROGRAM not in html
    async with http.get(f"{cell.url}/static/vendor/plotly.min.js") as resp:
        assert resp.status == 200 and len(await resp.read()) == plotly_js_path().stat().st_size
    async with http.get(f"{cell.url}/api/machines") as resp:
        assert resp.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" in resp.headers
    async with http.get(f"{cell.url}/machine?id=nope") as resp:
        assert resp.status == 404
    bad = await _get(http, f"{cell.url}/api/parts?last=many", status=400)
    assert "last" in bad["error"]
    await _get(http, f"{cell.url}/api/alerts?state=sleeping", status=400)
    capped = await _get(http, f"{cell.url}/api/parts?last=999999")
    assert len(capped["parts"]) == capped["total"]  # capped at PARTS_MAX, above the 106 stored


async def test_without_a_token_writes_are_refused_and_shutdown_ends_open_streams(tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(3))
    async with running_daemon(load_site(write_site(tmp_path, replay, dashboard=True))) as running:
        daemon = running.daemon
        assert daemon.dashboard_url is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(daemon.dashboard_url + "api/alerts/x/ack", headers={"Authorization": "Bearer x"}) as r:
                assert r.status == 403
                assert "no users and no dashboard token are configured" in (await r.json())["error"]
            async with http.get(daemon.dashboard_url + "api/events") as stream:
                await stream.content.readuntil(b"\n\n")
                [sub] = [s for s in daemon.hub._subs if s is not running.events]
                assert sub.queue.maxsize == QUEUE_SIZE  # bounded per browser
                t0 = time.monotonic()
                await running.stop(timeout_s=10)
                assert time.monotonic() - t0 < 4.0  # the open stream did not hold the shutdown
                assert daemon.hub.subscribers == 0
                await stream.content.read()  # returns: the server ended the stream
                assert stream.content.at_eof()


async def test_event_streams_are_bounded_503_beyond_and_a_closed_tab_frees_its_slot(tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(3))
    site_file = write_site(tmp_path, replay, dashboard=True)
    text = site_file.read_text(encoding="utf-8").replace("port: 0}", "port: 0, max_event_streams: 3}")
    site_file.write_text(text, encoding="utf-8")
    async with running_daemon(load_site(site_file)) as running, aiohttp.ClientSession() as http:
        url = f"{running.daemon.dashboard_url}api/events"
        streams = []
        for _ in range(3):
            resp = await http.get(url)
            assert resp.status == 200
            await resp.content.readuntil(b"\n\n")  # the stream is served
            streams.append(resp)
        async with http.get(url) as refused:
            assert refused.status == 503
            assert refused.headers["Retry-After"] == "10"
            assert "dashboard.max_event_streams" in await refused.text()
        streams.pop().close()  # a tab closed: its slot is free again (polled with a deadline)
        async with asyncio.timeout(10):
            while True:
                resp = await http.get(url)
                if resp.status == 200:
                    streams.append(resp)
                    break
                resp.release()
                await asyncio.sleep(0.05)
        for resp in streams:
            resp.close()
