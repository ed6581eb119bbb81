"""People's actions: users with roles and tokens, offset registers by machine kind, and the record of
who did what, through the command line with and without a running daemon."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import ProgramConfig, load_site
from monitor.errors import ConfigError
from monitor.model import AxisRef, PositionFeature, RegisterKind, Role, SizeFeature
from monitor.registers import advice_text, advise, registers_for
from monitor.store import SqliteStore
from monitor.store.sqlite import MIGRATIONS
from monitor.users import User, authorize
from tests.daemons import run_until_parts, running_daemon
from tests.streams import PROGRAM_YAML, batch, write_jsonl, write_site

ROOT = Path(__file__).resolve().parents[1]
ALICE, BOB = "alice-4f8e2a9c71d3b6", "bob-93c1e7a5f20d8b4"

BORE = SizeFeature("bore_dia", "probe.bore_dia", 40.0125, 40.0, 40.025)
FACE = SizeFeature("face_len", "probe.face_len", 120.0, 119.98, 120.02)
HOLE = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.0), AxisRef("probe.hole1_y", 40.0), 0.05)


# ------------------------------------------------------------------------------------ registers
@pytest.mark.parametrize(
    ("kind", "feature", "form", "deviations", "text"),
    [
        ("mill", HOLE, None, {"x": 0.019, "y": -0.003}, "G54 X -0.019 Y +0.003 mm"),
        ("mill", BORE, "inside", {"value": -0.004}, "T12 D-wear -0.004 mm"),  # a small bore wants a bigger D
        ("mill", BORE, "outside", {"value": -0.004}, "T12 D-wear +0.004 mm"),
        ("mill", FACE, "length", {"value": 0.010}, "T12 H-wear -0.010 mm"),
        ("lathe", BORE, "outside", {"value": 0.008}, "T12 X-wear -0.008 mm"),
        ("lathe", BORE, "inside", {"value": 0.008}, "T12 X-wear -0.008 mm"),
        ("lathe", FACE, "length", {"value": -0.006}, "T12 Z-wear +0.006 mm"),
        ("mill-turn", FACE, "length", {"value": 0.002}, "T12 Z-wear -0.002 mm"),
        ("lathe", HOLE, None, {"x": 0.0195}, "G54 X -0.0195 mm"),
    ],
)
def test_default_registers_by_machine_kind(
    kind: str, feature: SizeFeature | PositionFeature, form: str | None, deviations: dict[str, float], text: str
) -> None:
    registers = registers_for(feature, kind, form=form, tool=None if isinstance(feature, PositionFeature) else "T12")
    assert advice_text(advise(registers, deviations)) == text


def test_a_program_file_names_the_register_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    program = ProgramConfig.model_validate(
        {
            "program": "O7",
            "features": {
                "face_len": {
                    "kind": "size",
                    "signal": "probe.face_len",
                    "nominal": 120.0,
                    "lower": 119.98,
                    "upper": 120.02,
                    "form": "length",
                    "offset": {"register": "work_offset", "work_offset": "G55"},
                },
                "hole1_pos": {
                    "kind": "position",
                    "x": {"signal": "probe.x", "nominal": 1.0},
                    "y": {"signal": "probe.y", "nominal": 2.0},
                    "tolerance": 0.05,
                    "offset": {"work_offset": "G54.1 P3"},
                },
            },
        }
    )
    (face,) = program.registers("face_len", "mill").values()
    assert (face.kind, face.label, face.change_for(0.01)) == (RegisterKind.WORK_OFFSET, "G55 Z", -0.01)
    assert (
        advice_text(advise(program.registers("hole1_pos", "mill"), {"x": -0.002, "y": 0.001})) == "G54.1 P3 X +0.002 Y -0.001 mm"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "program: O8\nfeatures:\n  bore:\n    kind: size\n    signal: probe.bore\n    nominal: 10\n    lower: 9.9\n"
        "    upper: 10.1\n    form: inside\n    offset: {register: lathe_z_wear}\n",
        encoding="utf-8",
    )
    from monitor.config import load_program

    with pytest.raises(ConfigError) as err:
        load_program(bad)
    assert "bad.yaml:3 features.bore" in str(err.value) and "lathe_z_wear does not correct a size of form inside" in str(
        err.value
    )


def test_roles() -> None:
    operator, engineer = User("olga", Role.OPERATOR), User("eric", Role.ENGINEER)
    for kind in ("acknowledge", "comment", "offset_applied", "tool_changed", "part_quarantined"):
        authorize(operator, kind)
    authorize(engineer, "close")
    authorize(engineer, "write_offset")  # issue 18: engineers only
    from monitor.errors import NotAllowed

    for what in ("close", "write_offset"):
        with pytest.raises(NotAllowed, match="needs the role engineer"):
            authorize(operator, what)


# ------------------------------------------------------------------------------------ the CLI
def _monitor(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "MONITOR_TOKEN_ALICE": ALICE, "MONITOR_TOKEN_BOB": BOB}
    env.pop("MONITOR_TOKEN", None)
    if token is not None:
        env["MONITOR_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "monitor", *args], env=env, capture_output=True, text=True, timeout=60)


def _site_with_users(tmp_path: Path, *, dashboard: bool = False) -> Path:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(6, oot_at=4))
    site = write_site(tmp_path, replay, dashboard=dashboard)
    text = site.read_text(encoding="utf-8").replace("machines:\n", "machines:\n", 1)
    text += (
        'users:\n  alice: {role: engineer, token: "${MONITOR_TOKEN_ALICE}"}\n'
        '  bob: {role: operator, token: "${MONITOR_TOKEN_BOB}"}\n'
    )
    site.write_text(
        text.replace("    tracking: {grace_s: 1.0}\n", "    kind: lathe\n    tracking: {grace_s: 1.0}\n"), encoding="utf-8"
    )
    (tmp_path / "programs" / "o1001.yaml").write_text(
        PROGRAM_YAML.replace("    upper: 10.01\n", "    upper: 10.01\n    form: outside\n    offset: {tool: T0303}\n"),
        encoding="utf-8",
    )
    return site


def test_actions_recorded_by_the_cli_without_a_daemon(tmp_path: Path) -> None:
    site_path = _site_with_users(tmp_path)
    os.environ.update({"MONITOR_TOKEN_ALICE": ALICE, "MONITOR_TOKEN_BOB": BOB})
    try:
        site = load_site(site_path)
    finally:
        for k in ("MONITOR_TOKEN_ALICE", "MONITOR_TOKEN_BOB"):
            os.environ.pop(k)
    asyncio.run(run_until_parts(site, 6))
    common = ("-c", str(site_path), "--machine", "m1", "--program", "O1001")
    nobody = _monitor("act", "offset", *common, "--feature", "hole1_dia", "--change", "-0.004")
    assert nobody.returncode == 1 and "set MONITOR_TOKEN" in nobody.stderr
    wrong = _monitor("act", "offset", *common, "--feature", "hole1_dia", "--change", "-0.004", token="x" * 20)
    assert wrong.returncode == 1 and "matches no user" in wrong.stderr
    done = _monitor(
        "act",
        "offset",
        *common,
        "--feature",
        "hole1_dia",
        "--old",
        "0.010",
        "--new",
        "0.006",
        "-m",
        "bore grew",
        "--json",
        token=BOB,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert (row["user"], row["role"], row["source"], row["via"]) == (
        "bob",
        "operator",
        "store",
        "in the store; the daemon applies it at start",
    )
    assert row["register"]["label"] == "T0303 X-wear" and row["change"] == pytest.approx(-0.004)
    assert row["part_number"] == 6 and row["text"].startswith("offset applied: T0303 X-wear -0.004 mm (was 0.0100, now 0.0060)")
    per_axis = _monitor("act", "offset", *common, "--feature", "hole1_pos", "--change", "0.01", token=BOB)
    assert per_axis.returncode == 1 and "name the axis (x, y)" in per_axis.stderr
    assert (
        _monitor("act", "offset", *common, "--feature", "hole1_pos", "--axis", "y", "--change", "0.01", token=BOB).returncode == 0
    )
    nopart = _monitor("act", "quarantine", *common, token=BOB)
    assert nopart.returncode == 1 and "needs its part number" in nopart.stderr
    assert _monitor("act", "quarantine", *common, "--part", "4", "--reason", "hole1_dia 10.020 over", token=BOB).returncode == 0
    unknown = _monitor("act", "tool", *common, "--feature", "nope", token=BOB)
    assert unknown.returncode == 1 and "has no feature 'nope'" in unknown.stderr
    listed = [json.loads(line) for line in _monitor("actions", "-c", str(site_path), "--json").stdout.splitlines()]
    assert [(a["kind"], a["feature"], a["user"]) for a in listed] == [
        ("offset_applied", "hole1_dia", "bob"),
        ("offset_applied", "hole1_pos", "bob"),
        ("part_quarantined", "", "bob"),
    ]
    assert listed[1]["register"]["label"] == "G54 Y" and listed[2]["part_number"] == 4
    with SqliteStore(site.store_path) as store:
        (oot,) = [a for a in store.alerts() if a.kind.value == "out_of_tolerance"]
    closed_by_operator = _monitor("ack", oot.id, "-c", str(site_path), "--close", token=BOB)
    assert closed_by_operator.returncode == 1 and "may not close" in closed_by_operator.stderr
    acked = _monitor("ack", oot.id, "-c", str(site_path), "-m", "re-probed: it is real", token=BOB)
    assert acked.returncode == 0 and "acknowledged by bob (operator)" in acked.stdout
    with SqliteStore(site.store_path) as store:
        (ack,) = store.actions(condition_id=oot.id)
    assert (ack.kind.value, ack.user, ack.comment, ack.source) == ("acknowledge", "bob", "re-probed: it is real", "store")


async def test_actions_go_through_the_running_daemon_with_the_dashboard_off(tmp_path: Path) -> None:
    site_path = _site_with_users(tmp_path)
    os.environ.update({"MONITOR_TOKEN_ALICE": ALICE, "MONITOR_TOKEN_BOB": BOB})
    try:
        site = load_site(site_path)
        async with running_daemon(site) as running:
            await running.parts(6)
            assert running.daemon.dashboard_url is None
            events = running.daemon.hub.subscribe(100)
            result = await asyncio.to_thread(
                _monitor,
                "act",
                "tool",
                "-c",
                str(site_path),
                "--machine",
                "m1",
                "--program",
                "O1001",
                "--feature",
                "hole1_dia",
                "--tool",
                "T0303",
                "--reason",
                "insert chipped",
                "--json",
                token=ALICE,
            )
            assert result.returncode == 0, result.stderr
            row = json.loads(result.stdout)
            assert (row["kind"], row["user"], row["role"], row["via"]) == (
                "tool_changed",
                "alice",
                "engineer",
                "through the running daemon",
            )
            event = await asyncio.wait_for(anext(aiter(events)), 10)
            assert event.kind == "action" and event.data["id"] == row["id"]
            stored = await running.daemon.core.read(lambda store: store.actions())
            assert [a.id for a in stored] == [row["id"]] and stored[0].tool == "T0303"
    finally:
        for k in ("MONITOR_TOKEN_ALICE", "MONITOR_TOKEN_BOB"):
            os.environ.pop(k)


def test_a_store_of_the_previous_schema_keeps_its_alerts_and_gains_actions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        db.executescript(script)
    db.execute(
        "INSERT INTO alerts VALUES ('m1/O1/d/ewma/3', 'm1', 'O1', 'd', 'ewma', 'watch', 'open', 3, 't', "
        "'2026-01-01T00:00:00+00:00', ?)",
        (
            json.dumps(
                {
                    "id": "m1/O1/d/ewma/3",
                    "machine": "m1",
                    "program": "O1",
                    "feature": "d",
                    "kind": "ewma",
                    "severity": "watch",
                    "state": "open",
                    "part_number": 3,
                    "message": "old",
                    "time": "2026-01-01T00:00:00+00:00",
                }
            ),
        ),
    )
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with SqliteStore(path, read_only=True) as reader:  # a reader never migrates: an old store has no actions yet
        assert reader.actions() == [] and [a.id for a in reader.alerts()] == ["m1/O1/d/ewma/3"]
    with SqliteStore(path) as store:
        assert store.schema_version == len(MIGRATIONS) and [a.message for a in store.alerts()] == ["old"]


def test_open_alerts_of_the_per_kind_engine_are_closed_once_when_conditions_take_over(tmp_path: Path) -> None:
    """The store migration of alerts to conditions: every stored alert stays as history; an alert
    still open in a saved engine state (one per detector kind) is closed once with the reason, and
    the feature's condition opens at its next part if the evidence persists."""
    from datetime import UTC, datetime

    from monitor.codec import alert_to_dict
    from monitor.model import Alert, AlertKind, AlertState, Severity
    from monitor.pipeline import ENGINE_STATE, Pipeline

    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", [])))
    old = Alert(
        "m1/O1001/hole1_dia/ewma/7",
        "m1",
        "O1001",
        "hole1_dia",
        AlertKind.EWMA,
        Severity.WATCH,
        AlertState.ACKNOWLEDGED,
        7,
        "hole1_dia mean shifted +3.2 um",
        datetime(2026, 1, 1, tzinfo=UTC),
        {"offset": {"register": "diameter wear offset"}},
    )
    with SqliteStore(site.store_path) as store:
        store.record_alerts([old])
        store.save_detector_state(
            ENGINE_STATE + "m1",
            {
                "version": 2,
                "watches": [],
                "alerts": [{"key": ["m1", "O1001", "hole1_dia", "ewma"], "alert": alert_to_dict(old), "quiet": 0}],
            },
        )
        events = store.last_alert_event()
        pipeline = Pipeline(site, store)
        assert pipeline.engine.open_alerts() == []
        migrated = store.alert(old.id)
        assert migrated is not None and migrated.state is AlertState.CLOSED and migrated.kind is AlertKind.EWMA
        assert "alerts became one condition per feature" in migrated.evidence["close_reason"]
        assert store.last_alert_event() == events + 1
        Pipeline(site, store)  # a second start finds nothing left to migrate
        assert store.last_alert_event() == events + 1


def test_each_out_of_tolerance_part_of_one_condition_has_its_own_disposition_in_the_report(tmp_path: Path) -> None:
    """Two oversize bores in a row fall in one condition (issue 15); the operator quarantines both,
    the engineer scraps one, accepts the other on concession and records the offset. The report
    (HTML and CSV) shows each part its own disposition and both the process action, with who and when."""
    from tests.streams import cycle, obs

    stream = [obs(-10, "program.name", "O1001"), obs(-10, "part.count", 0)]
    for i in range(1, 11):
        stream += cycle(i * 20.0, i, dia=10.02 if i in (4, 5) else 10.001)
    site_path = _site_with_users(tmp_path)
    replay = write_jsonl(tmp_path / "two.jsonl", stream)
    site_path.write_text(site_path.read_text(encoding="utf-8").replace(str(tmp_path / "m1.jsonl"), str(replay)), encoding="utf-8")
    os.environ.update({"MONITOR_TOKEN_ALICE": ALICE, "MONITOR_TOKEN_BOB": BOB})
    try:
        site = load_site(site_path)
    finally:
        for k in ("MONITOR_TOKEN_ALICE", "MONITOR_TOKEN_BOB"):
            os.environ.pop(k)
    asyncio.run(run_until_parts(site, 10))
    with SqliteStore(site.store_path) as store:
        conditions = [a for a in store.alerts() if a.feature == "hole1_dia"]
        parts = {p.part_number: p for p in store.parts()}
    [condition] = conditions  # both bad parts in one condition
    assert condition.part_number <= 4 and condition.last_part is not None and condition.last_part >= 5

    common = ("-c", str(site_path), "--machine", "m1", "--program", "O1001")
    for n in (4, 5):
        done = _monitor("act", "quarantine", *common, "--part", str(n), "--reason", "bore over", "--json", token=BOB)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["part_key"] == parts[n].key
    refused = _monitor("act", "scrap", *common, "--part", "4", token=BOB)
    assert refused.returncode == 1 and "may not part scrapped" in refused.stderr and "engineer" in refused.stderr
    missing = _monitor("act", "scrap", *common, "--part", "99", token=ALICE)
    assert missing.returncode == 1 and "no part 99 of program O1001 on m1 in the store" in missing.stderr
    scrapped = _monitor("act", "scrap", *common, "--part", "4", "--reason", "NCR-7: bore 10.020", "--json", token=ALICE)
    assert scrapped.returncode == 0, scrapped.stderr
    assert json.loads(scrapped.stdout)["text"] == "part scrapped: part 4; NCR-7: bore 10.020"
    accepted = _monitor(
        "act", "accept", "-c", str(site_path), "--part-key", parts[5].key, "--reason", "concession C-12", token=ALICE
    )
    assert accepted.returncode == 0, accepted.stderr
    offset = _monitor("act", "offset", "--condition", condition.id, "-c", str(site_path), "--change", "-0.01", token=ALICE)
    assert offset.returncode == 0, offset.stderr

    html_out, csv_out = tmp_path / "report.html", tmp_path / "report.csv"
    made = _monitor("report", "-c", str(site_path), "-p", "O1001", "-o", str(html_out), "--csv", str(csv_out))
    assert made.returncode == 0, made.stderr
    from lxml import html

    page = html.fromstring(html_out.read_bytes())
    rows = page.xpath("//table[@class='dispositions']//tr[td]")
    cells = {int(r.xpath("td")[0].text_content()): [td.text_content() for td in r.xpath("td")] for r in rows}
    assert sorted(cells) == [4, 5]
    part4, part5 = cells[4][6], cells[5][6]
    assert "part quarantined: part 4; bore over (bob," in part4 and "part scrapped: part 4; NCR-7: bore 10.020 (alice," in part4
    assert "accepted" not in part4 and "part 5" not in part4
    assert "part quarantined: part 5; bore over (bob," in part5
    assert "part accepted on concession: part 5; concession C-12" in part5
    assert "scrapped" not in part5
    for n in (4, 5):  # the process action under the condition, with who, when and the part it followed
        assert "offset applied:" in cells[n][7] and "X-wear -0.010 mm" in cells[n][7] and "(alice, " in cells[n][7]
        assert "after part 10" in cells[n][7]
    per_feature = {td.get("data-part-key"): td.text_content() for td in page.xpath("//section//td[@class='disposition']")}
    assert "scrapped" in per_feature[parts[4].key] and "accepted on concession" in per_feature[parts[5].key]
    assert "process: offset applied" in per_feature[parts[4].key]

    log = [[td.text_content() for td in r.xpath("td")] for r in page.xpath("//table[@class='actions-log']//tr[td]")]
    assert [(row[1].split(" ")[0], row[4], row[6].split(":")[0]) for row in log] == [
        ("bob", "4", "part quarantined"),
        ("bob", "5", "part quarantined"),
        ("alice", "4", "part scrapped"),
        ("alice", "5", "part accepted on concession"),
        ("alice", "10", "offset applied"),
    ]
    import csv as csv_module

    table = {int(r["part"]): r for r in csv_module.DictReader(csv_out.read_text(encoding="utf-8").splitlines())}
    assert "part scrapped" in table[4]["disposition"] and "accepted" not in table[4]["disposition"]
    assert "part accepted on concession" in table[5]["disposition"] and "scrapped" not in table[5]["disposition"]
    assert table[4]["hole1_dia_ok"] == table[5]["hole1_dia_ok"] == "no"
    assert "offset applied" in table[4]["process_actions"] and table[6]["disposition"] == table[6]["process_actions"] == ""
