"""`monitor sim` as a user runs it: scenario listing, and a recorded SHDR log served by our agent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from lxml import etree

from tests.mtconnect._shared import shared

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def test_sim_lists_scenarios() -> None:
    out = subprocess.run([sys.executable, "-m", "monitor", "sim", "--list"], env=ENV, capture_output=True, text=True, check=True)
    for name in ("demo", "stable", "tool_wear", "thermal", "step", "noisy_probe", "dropouts"):
        assert re.search(rf"^{name}:", out.stdout, re.M), out.stdout


def test_sim_replays_a_recorded_shdr_log_through_our_agent() -> None:
    log = shared("shdr", "nist-Mazak01-20170516-20170517.txt")
    devices = shared("devices", "nist-smstestbed-Devices_1.3.xml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "sim", "--shdr-replay", str(log), "--device-file", str(devices),
         "--device", "Mazak01", "--mtconnect-port", "0", "--speed", "0"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline() + proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert url, first
        while "log replayed" not in first:  # the agent says when the whole log is in its buffer
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            first += line
        with urllib.request.urlopen(url.group(1) + "/Mazak01/current", timeout=10) as resp:
            doc = etree.fromstring(resp.read())
        ns = {"m": doc.nsmap[None]}
        execution = doc.findall(".//m:Execution", ns)
        counts = doc.findall(".//m:PartCount", ns)
        assert execution and counts
        last_count_line = [ln for ln in log.read_text().splitlines() if "|PartCountAct|" in ln][-1]
        expected = last_count_line.split("|PartCountAct|", 1)[1].split("|", 1)[0]
        assert counts[0].text == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def _sim_waiting(stdin: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "sim", "--wait", "--opcua-port", "0", "--mtconnect-port", "0",
         "--parts", "2", "--speed", "1000"],
        env=ENV, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _read_until(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stdout is not None
    seen = ""
    while text not in seen:
        line = proc.stdout.readline()
        assert line, seen + (proc.stderr.read() if proc.stderr else "")
        seen += line
    return seen


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def test_sim_wait_with_stdin_from_dev_null_starts_without_a_traceback() -> None:
    """A service manager (or `< /dev/null`) gives a standard input that can never bring a line."""
    proc = _sim_waiting(subprocess.DEVNULL)
    try:
        seen = _read_until(proc, "simulating scenario")
        assert "standard input is at its end" in seen
        _read_until(proc, "batch finished")
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_sim_wait_starts_the_batch_on_enter() -> None:
    proc = _sim_waiting(subprocess.PIPE)
    try:
        _read_until(proc, "press Enter to start the batch")
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        seen = _read_until(proc, "simulating scenario")
        assert "standard input" not in seen  # started by the line, not by an end of input
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_sim_shdr_replay_caps_idle_gaps_and_names_what_it_did_not_understand(tmp_path: Path) -> None:
    """A log with a gap of three days at 10x: replayed past the gap after --max-gap of log time, with
    the keys the device file does not have named, not just counted."""
    devices = shared("devices", "nist-smstestbed-Devices_1.3.xml")
    log = tmp_path / "weekend.txt"
    log.write_text(
        "2017-05-12T16:00:00.000000Z|PartCountAct|41|no_such_item|7\n"
        "2017-05-12T16:00:01.000000Z|execution|READY|other_unknown|x\n"
        "2017-05-15T06:00:00.000000Z|PartCountAct|42|no_such_item|8\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "sim", "--shdr-replay", str(log), "--device-file", str(devices),
         "--device", "Mazak01", "--mtconnect-port", "0", "--speed", "10", "--max-gap", "5"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        out = ""
        while "idle stretch" not in out:  # printed once the whole log is in (a three-day wait would never get here)
            line = proc.stdout.readline()
            assert line, out + (proc.stderr.read() if proc.stderr else "")
            out += line
        assert "3 values not understood" in out
        assert "no_such_item (2)" in out and "other_unknown (1)" in out
        assert "1 idle stretch(es) longer than --max-gap 5 s shortened" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
