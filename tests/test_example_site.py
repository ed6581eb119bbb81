"""The example site file against `monitor sim`: `monitor run` stores parts and alerts that
`monitor parts` and `monitor alerts` show. Everything runs as separate processes, as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from monitor.sim import SimCell, load_scenario
from monitor.store import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
SPEED = 200
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _monitor(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args], env=ENV, text=True, cwd=cwd,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _read_until(proc: subprocess.Popen[str], pattern: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    while not any(re.search(pattern, line) for line in lines):
        line = proc.stdout.readline()
        assert line, f"process ended before printing {pattern!r}: {''.join(lines)} {proc.stderr.read() if proc.stderr else ''}"
        lines.append(line)
    return lines


def _connected(url: str) -> bool:
    with urllib.request.urlopen(url + "api/status", timeout=5) as resp:
        status = json.load(resp)
    return all(m.get("connection") == "connected" for m in status["machines"].values()) and len(status["machines"]) == 2


def test_monitor_run_on_example_config_against_monitor_sim(tmp_path: Path) -> None:
    parts = 30
    sim = _monitor("sim", "--opcua-port", "0", "--mtconnect-port", "0", "--speed", str(SPEED), "--parts", str(parts), "--wait")
    daemon: subprocess.Popen[str] | None = None
    try:
        printed = "".join(_read_until(sim, "press Enter"))
        opc = re.search(r"vmc-01: opcua (opc\.tcp://\S+)", printed)
        mtc = re.search(r"vmc-02: mtconnect (http://\S+)", printed)
        assert opc and mtc, printed
        site = (ROOT / "configs" / "site.yaml").read_text(encoding="utf-8")
        site = site.replace("opc.tcp://127.0.0.1:4840", opc.group(1)).replace("http://127.0.0.1:5000", mtc.group(1))
        # time runs SPEED times faster than on a shop floor: so does the re-ordering window for
        # OPC UA notifications of different nodes (2 s of wall time)
        site = site.replace("max_skew_s: 5 ", f"max_skew_s: {2 * SPEED} ").replace("port: 8080", "port: 0")
        site = site.replace("programs: programs/", f"programs: {ROOT / 'configs' / 'programs'}")
        config = tmp_path / "site.yaml"
        config.write_text(site, encoding="utf-8")

        daemon = _monitor("run", "-c", str(config), cwd=tmp_path)
        url = re.search(r"dashboard (http://\S+/)", "".join(_read_until(daemon, "monitor running")))
        assert url, "the daemon prints its dashboard URL"
        deadline = time.monotonic() + 60
        while not _connected(url.group(1)):  # poll the daemon's own health, no fixed sleeps
            assert time.monotonic() < deadline, "daemon did not connect to both simulated machines"
            time.sleep(0.2)
        assert sim.stdin is not None
        sim.stdin.write("\n")
        sim.stdin.flush()

        cell = SimCell(load_scenario("demo"), seed=0, parts=parts)
        expected = len(cell.parts())
        dropouts = sum(1 for p in cell.parts() if any(v is None for v in p.measured.values()))
        # the last parts wait in the tracker's re-ordering window, which runs on controller time (one
        # second per second once the simulation stops): the clean shutdown below releases them
        deadline = time.monotonic() + 100
        stored = 0
        while stored < expected - 6:
            assert time.monotonic() < deadline, f"only {stored} of {expected} parts stored"
            time.sleep(0.2)
            if (tmp_path / "monitor.db").exists():
                with SqliteStore(tmp_path / "monitor.db") as store:
                    stored = store.part_count()
        status = subprocess.run(
            [sys.executable, "-m", "monitor", "status", "-c", str(config), "--json"], env=ENV, capture_output=True, text=True
        )
        assert status.returncode == 0, status.stderr
        health = json.loads(status.stdout)
        assert sum(m["parts"] for m in health["machines"].values()) >= stored
        assert all(m["tracking"].get("late_observations", 0) == 0 for m in health["machines"].values())
        assert {s["type"] for m in health["machines"].values() for s in m["sources"]} == {"opcua", "mtconnect"}
        status_cmd = [sys.executable, "-m", "monitor", "status", "-c", str(config)]
        table = subprocess.run(status_cmd, env=ENV, capture_output=True, text=True)
        assert "vmc-01" in table.stdout and "opcua:connected" in table.stdout
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=10)
        assert daemon.returncode == 0
        down = subprocess.run(status_cmd, env=ENV, capture_output=True, text=True)
        assert down.returncode == 1 and "no running daemon found" in down.stderr
    finally:
        for proc in (daemon, sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=10)

    rows = [json.loads(x) for x in subprocess.run(
        [sys.executable, "-m", "monitor", "parts", "-c", str(config), "--json", "--last", "1000"],
        env=ENV, capture_output=True, text=True, check=True,
    ).stdout.splitlines()]  # fmt: skip
    assert len(rows) == expected
    assert {r["machine"] for r in rows} == {"vmc-01", "vmc-02"}
    complete = [r for r in rows if r["status"] == "complete"]
    assert len(complete) == expected - dropouts  # nothing lost on the way through either protocol
    assert all(len(r["measurements"]) in (6, 2) for r in complete)
    alerts = [json.loads(x) for x in subprocess.run(
        [sys.executable, "-m", "monitor", "alerts", "-c", str(config), "--json"],
        env=ENV, capture_output=True, text=True, check=True,
    ).stdout.splitlines()]  # fmt: skip
    assert alerts, "the drifting demo batch raises alerts"
    assert {a["machine"] for a in alerts} <= {"vmc-01", "vmc-02"}
