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
