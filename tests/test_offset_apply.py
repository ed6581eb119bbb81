"""``monitor offset apply`` end to end: a daemon reading the secure simulated CNC over TCP, a condition
with advice, the engineer's request through the CLI, the register written on the controller, the
action recorded with who and what, and the refusals recorded too."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from monitor.codec import alert_from_dict
from monitor.commands import ApplyOffset
from monitor.config import load_site
from monitor.model import ActionKind, ConditionState, Role
from monitor.report.data import build_report
from monitor.report.page import render_html
from monitor.sim.closedloop import ClosedLoop
from monitor.sim.opcua_server import OpcUaSimServer
from monitor.users import User
from tests.daemons import running_daemon
from tests.offset_cell import (
    ALICE,
    BOB,
    CONNECTED,
    DWEAR,
    EFFECTS,
    PROGRAM,
    SHAPE,
    T0,
    bore_out_of_tolerance,
    is_condition,
    make_part,
    offset_env,
    offsets_pki,
    write_site,
)
from tests.opcua.helpers import Pki

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return offsets_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def sim(pki: Pki) -> AsyncIterator[OpcUaSimServer]:
    async with OpcUaSimServer([SHAPE], security=pki.server) as srv:
        yield srv


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    with offset_env():
        yield {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def monitor(env: dict[str, str], *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    run_env = dict(env)
    run_env.pop("MONITOR_TOKEN", None)
    if token is not None:
        run_env["MONITOR_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "monitor", *args], env=run_env, capture_output=True, text=True, timeout=120)


async def test_apply_through_the_cli_writes_the_register_and_records_it(
    tmp_path: Path, pki: Pki, sim: OpcUaSimServer, env: dict[str, str]
) -> None:
    site_path = write_site(tmp_path, sim.endpoint, pki)
    site = load_site(site_path)
    await sim.publish(SHAPE.id, "program.name", "O1001", T0)
    await sim.publish(SHAPE.id, "part.count", 0, T0)
    await sim.publish(SHAPE.id, "execution", "READY", T0)
    async with running_daemon(site) as running:
        await running.until(CONNECTED, timeout_s=60)
        loop = ClosedLoop(sim, {SHAPE.id: EFFECTS})
        for n in range(1, 6):
            await make_part(loop, n)
        for n in range(6, 9):  # a new insert cuts 20 um over nominal: out of tolerance, three parts in a row
            await make_part(loop, n, dia=10.02)
        event = await running.until(is_condition("hole1_dia", "out_of_tolerance"), timeout_s=60)
        condition = event.data["id"]
        await running.until(lambda e: e.kind == "part" and e.data["part_number"] == 8, timeout_s=60)
        stored_now = await running.daemon.core.read(lambda store: store.alert(condition))
        assert stored_now is not None and stored_now.last_part == 8
        [advice] = stored_now.evidence["advice"]["offsets"]
        assert advice["label"] == "T12 D-wear" and advice["change_mm"] == pytest.approx(0.02, abs=0.002)
        args = ("offset", "apply", condition, "-c", str(site_path), "--json")

        operator = await asyncio.to_thread(monitor, env, *args, token=BOB)
        assert operator.returncode == 1 and "needs the role engineer" in operator.stderr
        assert sim.register_writes == []

        done = await asyncio.to_thread(monitor, env, *args, "-m", "bore over after the insert change", token=ALICE)
        assert done.returncode == 0, done.stderr
        [outcome] = [json.loads(line) for line in done.stdout.splitlines()]
        write, action = outcome["write"], outcome["action"]
        assert outcome["applied"] and write["old_value"] == 0.0
        assert write["new_value"] == pytest.approx(advice["change_mm"], abs=1e-4) == write["read_back"]
        assert write["security"] == "Basic256Sha256/SignAndEncrypt" and write["opcua_user"] == "engineer"
        assert sim.register_value(SHAPE.id, DWEAR) == pytest.approx(write["new_value"])
        assert [(w.register, w.user) for w in sim.register_writes] == [(DWEAR, "engineer")]
        assert (action["kind"], action["user"], action["role"], action["source"]) == (
            "offset_applied",
            "alice",
            "engineer",
            "controller",
        )
        assert (action["part_number"], action["condition_id"], action["old_value"]) == (8, condition, 0.0)
        assert action["register"]["label"] == "T12 D-wear" and action["comment"] == "bore over after the insert change"

        # the same advice again before a part shows the change: refused, it would correct twice
        again = await asyncio.to_thread(monitor, env, *args, token=ALICE)
        assert again.returncode == 1 and json.loads(again.stdout)["refused"]["reason"] == "pending"
        await make_part(loop, 9, dia=10.02)  # the insert still cuts 10.02; the register brings it back
        await running.until(lambda e: e.kind == "part" and e.data["part_number"] == 9, timeout_s=60)
        # a value past the register's limit: refused, recorded, nothing written
        big = await asyncio.to_thread(monitor, env, *args, "--value", "0.035", token=ALICE)
        assert big.returncode == 1
        [refusal] = [json.loads(line) for line in big.stdout.splitlines()]
        assert refusal["refused"]["reason"] == "limit" and refusal["action"]["kind"] == "offset_refused"
        # the batch limit counts what was applied: 0.019 + 0.025 > 0.04
        batch = await asyncio.to_thread(monitor, env, *args, "--value", "0.025", token=ALICE)
        assert batch.returncode == 1 and json.loads(batch.stdout)["refused"]["reason"] == "batch_limit"
        assert len(sim.register_writes) == 1

        stored = await running.daemon.core.read(lambda store: store.actions(condition_id=condition))
        assert [a.kind for a in stored] == [ActionKind.OFFSET_APPLIED, *[ActionKind.OFFSET_REFUSED] * 3]
        assert (
            stored[1].reason.startswith("pending:")
            and stored[2].reason.startswith("limit:")
            and stored[0].new_value == pytest.approx(write["new_value"])
        )

        # the insert still cuts 10.02; the applied D-wear brings the bore back to size (the simulated
        # machine obeys the register, the detectors expect the step from part 9): the condition
        # recovers, then closes
        for n in range(10, 14):
            await make_part(loop, n, dia=10.02)
        await running.until(
            lambda e: e.kind == "alert" and e.data["id"] == condition and e.data["state"] == "closed", timeout_s=60
        )
        recovering = [a for a in running.alerts if a["id"] == condition and a["condition"] == "recovering"]
        assert recovering[0]["last_part"] == 9 and "no detector signal" in recovering[0]["message"]
        assert [a["condition"] for a in running.alerts if a["id"] == condition][-2:] == ["recovering", "ok"]

        # the batch report's audit trail: the write with who, when, before and after, and the refusals
        report = await running.daemon.core.read(lambda store: build_report(store, site.programs["O1001"], site="t"))
        assert [(a.kind, a.user, a.old_value) for a in report.offsets] == [
            (ActionKind.OFFSET_APPLIED, "alice", 0.0),
            *[(ActionKind.OFFSET_REFUSED, "alice", None)] * 3,
        ]
        page = render_html(report)
        assert "Offsets written to the controllers" in page
        assert f"<td>T12 D-wear</td><td class=num>{write['change']:.4f}</td><td class=num>0.0000</td>" in page
        assert "alice (engineer)</td><td>written, read back" in page and "REFUSED: batch_limit" in page


async def test_a_work_offset_moves_every_feature_it_corrects(
    tmp_path: Path, pki: Pki, sim: OpcUaSimServer, env: dict[str, str]
) -> None:
    """G54 X moves both holes: the detectors of both expect the step, not only the condition's."""
    site = load_site(write_site(tmp_path, sim.endpoint, pki))
    await sim.publish(SHAPE.id, "program.name", "O1001", T0)
    await sim.publish(SHAPE.id, "part.count", 0, T0)
    async with running_daemon(site) as running:
        await running.until(CONNECTED, timeout_s=60)
        loop = ClosedLoop(sim, {SHAPE.id: EFFECTS})
        for n in range(1, 5):
            await make_part(loop, n)
        await make_part(loop, 5, x=25.03)  # hole 1 far off in X: true position 0.06 > 0.05
        event = await running.until(is_condition("hole1_pos", "out_of_tolerance"), timeout_s=60)
        [outcome] = await running.daemon.offsets.apply(ApplyOffset(event.data["id"], User("eve", Role.ENGINEER), axis="x"))
        assert outcome.write is not None and outcome.write.register == "G54.X"
        # G54 X moves hole 2 too (at +1 um): the advice is the mid-range of the two holes, not hole 1's -0.028
        assert outcome.write.change == pytest.approx((-0.028 - 0.001) / 2, abs=0.002)
        assert outcome.write.effective_after == T0 + timedelta(seconds=5 * 20 + 6.5)  # part 5's READY, controller time
        # the step reaches the detectors with the first part that started after the machine came to
        # rest for the write (part 6), on both holes: G54 X moves every feature cut in that setup
        engine = running.daemon.core._pipeline.engine  # the detectors' own view (no public API shows it)
        before = engine.evidence(SHAPE.id, "O1001", "hole2_pos")
        assert before is not None and not before.known_step
        await make_part(loop, 6, x=25.03)  # the clamp is still loose: the work offset moves both holes
        await running.until(lambda e: e.kind == "part" and e.data["part_number"] == 6, timeout_s=60)
        for feature in ("hole1_pos", "hole2_pos"):
            evidence = engine.evidence(SHAPE.id, "O1001", feature)
            assert evidence is not None and evidence.known_step, feature
        dia, hole1 = engine.evidence(SHAPE.id, "O1001", "hole1_dia"), engine.evidence(SHAPE.id, "O1001", "hole1_pos")
        hole2 = engine.evidence(SHAPE.id, "O1001", "hole2_pos")
        assert dia is not None and not dia.known_step and hole1 is not None and hole2 is not None
        x1, x2 = hole1.axes["x"].deviation, hole2.axes["x"].deviation
        assert x1 == pytest.approx(0.030 + outcome.write.change, abs=1e-4)  # what the controller did to the part
        assert x2 == pytest.approx(0.001 + outcome.write.change, abs=1e-4)
        assert abs(x1 + x2) < 0.002  # either side of nominal, equally far: the best one register can do


async def test_the_step_of_a_write_survives_a_restart_before_the_next_part(
    tmp_path: Path, pki: Pki, sim: OpcUaSimServer, env: dict[str, str]
) -> None:
    """G54 X written after part 5, the daemon stopped and started again before part 6: the restarted
    daemon still hands both holes' detectors the step with part 6 (it was stored with the action),
    so the re-centred part is the correction it expected, not an unexplained step."""
    site = load_site(write_site(tmp_path, sim.endpoint, pki))
    await sim.publish(SHAPE.id, "program.name", "O1001", T0)
    await sim.publish(SHAPE.id, "part.count", 0, T0)
    loop = ClosedLoop(sim, {SHAPE.id: EFFECTS})
    async with running_daemon(site) as running:
        await running.until(CONNECTED, timeout_s=60)
        for n in range(1, 5):
            await make_part(loop, n)
        await make_part(loop, 5, x=25.03)  # hole 1 far off in X: out of tolerance
        event = await running.until(is_condition("hole1_pos", "out_of_tolerance"), timeout_s=60)
        condition = event.data["id"]
        [outcome] = await running.daemon.offsets.apply(ApplyOffset(condition, User("eve", Role.ENGINEER), axis="x"))
        assert outcome.write is not None and outcome.write.register == "G54.X"
    # the daemon is stopped here; the write is on the controller, no part carries it yet
    async with running_daemon(site) as running:
        await running.until(CONNECTED, timeout_s=60)
        engine = running.daemon.core._pipeline.engine  # the detectors' own view (no public API shows it)
        await make_part(loop, 6, x=25.03)  # the clamp is still loose: the written work offset moves both holes
        await running.until(lambda e: e.kind == "part" and e.data["part_number"] == 6, timeout_s=60)
        for feature in ("hole1_pos", "hole2_pos"):
            evidence = engine.evidence(SHAPE.id, "O1001", feature)
            assert evidence is not None and evidence.known_step, feature
        hole1 = engine.evidence(SHAPE.id, "O1001", "hole1_pos")
        assert hole1 is not None and hole1.axes["x"].deviation == pytest.approx(0.030 + outcome.write.change, abs=1e-4)
        stored = await running.daemon.core.read(lambda store: store.load_detector_state("deferred-steps:" + SHAPE.id))
        assert stored is not None and stored["steps"] == []  # released with part 6, stored with it


async def test_auto_apply_is_refused_over_security_none_and_recorded(tmp_path: Path, env: dict[str, str]) -> None:
    """A feature with offset.auto_apply on an insecure connection: the site allows writes by hand for
    the simulator, never automatic ones; the refusal is recorded as the auto-apply user's."""
    async with OpcUaSimServer([SHAPE]) as sim:
        path = write_site(tmp_path, sim.endpoint, None)
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["machines"][0]["offsets"]["allow_insecure"] = True
        path.write_text(json.dumps(doc), encoding="utf-8")
        (tmp_path / "programs" / "O1001.yaml").write_text(
            PROGRAM.replace(
                "offset: {register: tool_diameter_wear, tool: T12}",
                "offset: {register: tool_diameter_wear, tool: T12, auto_apply: true}",
            ),
            encoding="utf-8",
        )
        site = load_site(path)
        await sim.publish(SHAPE.id, "program.name", "O1001", T0)
        await sim.publish(SHAPE.id, "part.count", 0, T0)
        async with running_daemon(site) as running:
            await running.until(CONNECTED, timeout_s=60)
            event = await bore_out_of_tolerance(running, ClosedLoop(sim, {SHAPE.id: EFFECTS}))
            service = running.daemon.offsets
            # what the daemon's auto-apply asks for a warning of this feature, and what it does not
            oot = alert_from_dict(event.data)
            warning = dataclasses.replace(oot, condition=ConditionState.WARNING)
            request = service._auto_request(warning)
            assert request is not None and request.automatic and request.user.name == "auto-apply"
            assert service._auto_request(dataclasses.replace(warning, feature="hole1_pos")) is None  # no auto_apply there
            assert service._auto_request(oot) is None  # out of tolerance wants a person
            [outcome] = await service.apply(request)
            assert outcome.refused is not None and outcome.refused.reason == "insecure"
            assert "automatic offset writes need security_mode SignAndEncrypt" in str(outcome.refused)
            assert (outcome.action.kind, outcome.action.user) == (ActionKind.OFFSET_REFUSED, "auto-apply")
            assert sim.register_writes == []
            # by hand, the simulator's allow_insecure lets the engineer write
            [by_hand] = await service.apply(ApplyOffset(event.data["id"], User("eve", Role.ENGINEER)))
            assert by_hand.write is not None and by_hand.write.security == "None/None"


async def test_apply_through_the_dashboard(tmp_path: Path, pki: Pki, sim: OpcUaSimServer, env: dict[str, str]) -> None:
    path = write_site(tmp_path, sim.endpoint, pki)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["dashboard"] = {"enabled": True, "port": 0}
    path.write_text(json.dumps(doc), encoding="utf-8")
    site = load_site(path)
    await sim.publish(SHAPE.id, "program.name", "O1001", T0)
    await sim.publish(SHAPE.id, "part.count", 0, T0)
    async with running_daemon(site) as running:
        await running.until(CONNECTED, timeout_s=60)
        event = await bore_out_of_tolerance(running, ClosedLoop(sim, {SHAPE.id: EFFECTS}))
        [advice] = event.data["evidence"]["advice"]["offsets"]
        assert running.daemon.dashboard_url is not None
        url = f"{running.daemon.dashboard_url}api/conditions/{event.data['id']}/offset"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.daemon.dashboard_url}api/floor") as resp:
                [card] = (await resp.json())["machines"]
                assert card["writable"] and card["top"]["offsets"][0]["label"] == "T12 D-wear"  # the card offers the button
            async with http.post(url, json={}, headers={"Authorization": f"Bearer {BOB}"}) as resp:
                assert resp.status == 403 and "needs the role engineer" in (await resp.json())["error"]
            # what the engineer saw is no longer the advice: stale, recorded, nothing written
            stale = {"expected": -advice["change_mm"], "comment": "from the card"}
            async with http.post(url, json=stale, headers={"Authorization": f"Bearer {ALICE}"}) as resp:
                [refused] = (await resp.json())["outcomes"]
                assert resp.status == 200 and refused["refused"]["reason"] == "stale" and sim.register_writes == []
            body = {"expected": advice["change_mm"], "comment": "from the card"}
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {ALICE}"}) as resp:
                assert resp.status == 200
                [outcome] = (await resp.json())["outcomes"]
        assert outcome["applied"] and outcome["action"]["user"] == "alice" and outcome["action"]["comment"] == "from the card"
        assert "through the dashboard" in outcome["action"]["reason"]
        assert sim.register_value(SHAPE.id, DWEAR) == pytest.approx(outcome["write"]["new_value"])
