"""The daemon end to end on a replay source: parts and alerts stored, bad input survived, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.allocator import TUNABLES, c_library
from monitor.config import load_site
from monitor.daemon import event_loop_factory
from monitor.model import AlertKind, PartStatus
from monitor.store import SqliteStore
from tests.daemons import run_until_parts, running_daemon
from tests.streams import batch, obs, write_jsonl, write_site

ROOT = Path(__file__).resolve().parents[1]


async def test_daemon_stores_parts_and_raises_out_of_tolerance(tmp_path: Path) -> None:
    bad = [
        "this is not json",
        json.dumps({"signal": "probe.hole1_dia", "time": "2026-03-02T06:00:00+00:00", "value": "NaN"}),
        json.dumps({"signal": "spindle.load", "time": "not a time", "value": 1}),
    ]
    # garbage written after part 4's and part 6's values, in time order: noted on those parts, their values kept
    garbage = [obs(4 * 20.0 + 5.15, "probe.hole1_x", "NaN"), obs(6 * 20.0 + 5.25, "probe.hole1_y", 10**400)]
    stream = sorted([*batch(12, oot_at=9), *garbage], key=lambda o: o.time)
    replay = write_jsonl(tmp_path / "m1.jsonl", stream, bad)
    site = load_site(write_site(tmp_path, replay))
    async with running_daemon(site) as run:
        await run.parts(12)
        status = await run.daemon.status()
    assert run.kinds == {"part", "alert", "machine"}  # the dashboard sees machines change live too
    with SqliteStore(site.store_path) as store:
        parts = store.parts()
        assert [p.part_number for p in parts] == list(range(1, 13))
        assert all(p.status is PartStatus.COMPLETE for p in parts)
        oot = [a for a in store.alerts() if a.kind is AlertKind.OUT_OF_TOLERANCE]
        assert oot and oot[0].part_number == 9 and oot[0].feature == "hole1_dia"
        noted = {p.part_number: [n for n in p.notes if "not a measurement" in n] for p in parts}
        assert noted == {
            n: {
                4: ["probe.hole1_x wrote 'NaN' at 2026-03-02T06:01:25.150000+00:00: not a measurement; the value before it kept"],
                6: [
                    "probe.hole1_y wrote a number beyond float range at 2026-03-02T06:02:05.250000+00:00: "
                    "not a measurement; the value before it kept"
                ],
            }.get(n, [])
            for n in range(1, 13)
        }
        assert parts[3].measurements["probe.hole1_x"] == 25.002 and parts[5].measurements["probe.hole1_y"] == 39.999
    assert status["machines"]["m1"]["sources"][0]["counts"]["bad_lines"] == 2
    # the NaN line out of time order (its part was final long before) is counted too
    assert status["machines"]["m1"]["tracking"]["non_numeric_probe_values"] == 3


async def test_a_full_batch_ends_the_gathering_and_a_stop_takes_what_waits(tmp_path: Path) -> None:
    """The processor gathers deliveries for ``batch_wait_s`` before one hand-off to the core's thread;
    a delivery that leaves ``batch_size`` observations waiting ends the gathering, and so does a stop.
    With an hour's gathering, a stream of one batch (and the source's connection note) is processed
    and its parts stored at once, and the stop processes the rest without waiting out the hour."""
    stream = batch(3)
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", stream)))
    async with running_daemon(site, batch_size=len(stream), batch_wait_s=3600.0, stop_timeout_s=30.0) as running:
        await running.parts(3, timeout_s=30.0)
    assert running.daemon.processed == len(stream) + 1  # the connection note too


async def test_a_value_stamped_long_ago_delivered_last_does_not_hold_the_last_part(tmp_path: Path) -> None:
    """The last part of a machine that stopped is released when its grace runs out in controller time,
    estimated from the newest time its values carried. A value stamped an hour before, delivered last
    (an OPC UA server's initial value of a signal unchanged since, after a restart read the parts back
    from history), says nothing about that clock: it held the last part for the hour (the SIGKILL drill
    failed this way when the restart was slow under load and the machine had already stopped)."""
    stream = [*batch(3, t0=3600.0), obs(0.0, "program.name", "O1001")]
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", stream)))
    async with running_daemon(site) as running:
        await running.parts(3, timeout_s=60.0)  # about 3 s: quiet for a few delivery periods, then 1 s of grace


async def test_restarted_daemon_resumes_without_duplicates(tmp_path: Path) -> None:
    stream = batch(6)
    replay = write_jsonl(tmp_path / "m1.jsonl", stream)
    site = load_site(write_site(tmp_path, replay))
    await run_until_parts(site, 6)
    # the controller is read again from the start (agent replays history), then makes 4 more parts
    write_jsonl(replay, stream + batch(4, start_count=6, t0=200.0)[2:])
    async with running_daemon(site) as running:
        await running.until(lambda e: e.kind == "part" and e.data["counter"] == 10)
    with SqliteStore(site.store_path) as store:
        counters = [p.counter for p in store.parts() if p.counter is not None]
    assert sorted(counters) == list(range(1, 11))


def test_monitor_run_runs_the_daemon_on_uvloop(tmp_path: Path) -> None:
    """``monitor run`` runs the daemon on uvloop (a dependency where it builds): on that loop a daemon
    reads its source, stores every part and stops cleanly (the tests below run ``monitor run`` itself:
    signals, reload, watchdog, takeover)."""
    import uvloop

    factory = event_loop_factory()
    assert factory is uvloop.new_event_loop
    site = load_site(write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(3))))

    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await run_until_parts(site, 3)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    with SqliteStore(site.store_path) as store:
        assert [p.part_number for p in store.parts()] == [1, 2, 3]


def test_monitor_run_stops_cleanly_on_sigterm_and_cli_shows_parts(tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(8, oot_at=5))
    site = write_site(tmp_path, replay, log_format="json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "-c", str(site), "--log-level", "info"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        db = tmp_path / "monitor.db"
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and stored < 8:  # poll the condition, not a fixed sleep
            if db.exists():
                with SqliteStore(db) as store:
                    stored = store.part_count()
            time.sleep(0.1)
        assert stored == 8
        if c_library() == "glibc" and "GLIBC_TUNABLES" not in os.environ:  # the process that stored them runs tuned
            # (the loader cuts the tunables apart in the process's original environment block)
            block = Path(f"/proc/{proc.pid}/environ").read_bytes()
            assert f"\0GLIBC_TUNABLES={TUNABLES}".replace(":", "\0").encode() in (b"\0" + block).replace(b":", b"\0")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:  # a failed assertion must not leave a daemon behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 5.0
    logged = [json.loads(line) for line in err.splitlines()]  # structured: one JSON object per line
    assert any(entry["message"] == "daemon stopped" for entry in logged)
    if sys.platform.startswith("linux"):  # its compiled kernels loaded, LLVM's pages went back to the kernel
        assert any(entry["message"].startswith("compiler library pages released") for entry in logged)
    assert any("ALERT" in entry["message"] and entry["level"] == "warning" for entry in logged)
    parts = subprocess.run(
        [sys.executable, "-m", "monitor", "parts", "-c", str(site), "--json"], env=env, capture_output=True, text=True, check=True
    )
    rows = [json.loads(line) for line in parts.stdout.splitlines()]
    assert [r["part"] for r in rows] == list(range(1, 9))
    assert rows[4]["measurements"]["probe.hole1_dia"] == pytest.approx(10.02)
    alerts = subprocess.run(
        [sys.executable, "-m", "monitor", "alerts", "-c", str(site), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    kinds = {(a["kind"], a["part_number"]) for a in map(json.loads, alerts.stdout.splitlines())}
    assert ("out_of_tolerance", 5) in kinds
    table = subprocess.run(
        [sys.executable, "-m", "monitor", "parts", "-c", str(site)], env=env, capture_output=True, text=True, check=True
    )
    assert "hole1_dia=10.0200" in table.stdout


def test_ack_while_daemon_is_down_is_applied_at_next_start(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli import app
    from monitor.pipeline import Pipeline

    replay = write_jsonl(tmp_path / "m1.jsonl", batch(6, oot_at=4))
    site_path = write_site(tmp_path, replay)
    site = load_site(site_path)
    asyncio.run(run_until_parts(site, 6))
    with SqliteStore(site.store_path) as store:
        (oot,) = [a for a in store.alerts() if a.kind is AlertKind.OUT_OF_TOLERANCE]
    result = CliRunner().invoke(app, ["ack", oot.id, "-c", str(site_path)])
    assert result.exit_code == 0, result.output
    assert "acknowledged by local (engineer) (in the" in result.output
    with SqliteStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        states = {a.id: a.state.value for a in pipeline.engine.open_alerts()}
    assert states[oot.id] == "acknowledged"  # the engine took the acknowledgement over from the store
    missing = CliRunner().invoke(app, ["ack", "no/such/alert", "-c", str(site_path)])
    assert missing.exit_code == 1 and "no alert no/such/alert" in missing.output


def test_alerts_follow_prints_changes_as_they_are_stored(tmp_path: Path) -> None:
    from tests.test_store import alert

    replay = write_jsonl(tmp_path / "m1.jsonl", batch(1))
    site = write_site(tmp_path, replay)
    with SqliteStore(tmp_path / "monitor.db"):
        pass
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "alerts", "-c", str(site), "--follow", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with SqliteStore(tmp_path / "monitor.db") as store:
            store.record_alerts([alert(7)])
        line = proc.stdout.readline()  # blocks until the follower prints the change
        assert json.loads(line)["id"] == alert(7).id
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_alerts_since_keeps_the_later_alerts_and_refuses_what_is_not_a_time(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli import app
    from tests.test_store import T0, alert

    site = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(1)))
    with SqliteStore(tmp_path / "monitor.db") as store:
        store.record_alerts([alert(n) for n in (1, 5, 9)])  # raised at T0 + 1, 5 and 9 minutes
    since = (T0 + timedelta(minutes=4)).isoformat()
    kept = CliRunner().invoke(app, ["alerts", "-c", str(site), "--since", since, "--json"])
    assert kept.exit_code == 0, kept.output
    assert [json.loads(line)["part_number"] for line in kept.output.splitlines()] == [5, 9]
    bad = CliRunner().invoke(app, ["alerts", "-c", str(site), "--since", "yesterday"])
    assert bad.exit_code == 2
    assert "--since: expected 2h, 30m, 7d or an ISO time, got 'yesterday'" in bad.output


def test_parts_capability_matches_the_stored_measurements(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli import app
    from monitor.detect.capability import capability

    stream = batch(12)
    for i, o in enumerate(stream):  # give the diameter some part-to-part scatter
        if o.signal == "probe.hole1_dia":
            stream[i] = type(o)(o.machine, o.signal, o.time, 10.0 + 0.002 * ((i * 7) % 5 - 2))
    site_path = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", stream))
    site = load_site(site_path)
    asyncio.run(run_until_parts(site, 12))
    result = CliRunner().invoke(app, ["parts", "-c", str(site_path), "--capability", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["feature"]: r for r in map(json.loads, result.output.splitlines())}
    with SqliteStore(site.store_path) as store:
        values = [p.measurements["probe.hole1_dia"] for p in store.parts()]
    expected = capability(values, 9.99, 10.01)
    assert rows["hole1_dia"]["n"] == 12
    assert expected.cpk is not None
    assert rows["hole1_dia"]["cpk"] == pytest.approx(expected.cpk.value)
    assert rows["hole1_pos"]["cp"] is None  # true position has an upper limit only
    table = CliRunner().invoke(app, ["parts", "-c", str(site_path), "--capability"], env={"COLUMNS": "200"})
    assert "Cpk" in table.output and "stable" in table.output and "hole1_dia" in table.output
