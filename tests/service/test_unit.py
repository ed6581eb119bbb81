"""The systemd unit: what `monitor service` prints for a site passes `systemd-analyze verify` and
scores as well sandboxed; the unit shipped in deploy/ is the same template; --install writes the
unit and its system user; `monitor --version`."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.service.unit import DEFAULT_LAYOUT, render_sysusers, render_unit
from tests.requires import need_binary
from tests.streams import batch, write_jsonl, write_site

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def analyze() -> str:
    """systemd-analyze: skipped with the reason where it is absent (a failure under CI=true)."""
    return need_binary("systemd-analyze", "systemd")


def _monitor(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=60,
        check=False,
    )


def _site(tmp_path: Path, extra: str = "") -> Path:
    site = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(2)))
    site.write_text(site.read_text() + extra)
    return site


def _verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)


def test_the_unit_for_a_site_passes_systemd_analyze_verify(tmp_path: Path, analyze: str) -> None:
    site = _site(tmp_path, "sinks:\n  influx: {url: 'http://127.0.0.1:1', token: '${INFLUX_TOKEN}', spool_dir: spool/x}\n")
    env = {k: v for k, v in os.environ.items() if k != "INFLUX_TOKEN"}  # the token lives in the service's env file
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "service", "-c", str(site)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    unit_text = result.stdout
    assert f"run -c {site}" in unit_text
    assert f"ReadWritePaths=-{tmp_path}\n" in unit_text  # the store's folder
    assert f"ReadWritePaths=-{tmp_path / 'spool/x'}\n" in unit_text
    assert "INFLUX_TOKEN in /etc/cnc-monitor/monitor.env" in result.stderr
    unit = tmp_path / "cnc-monitor.service"
    unit.write_text(unit_text)
    checked = _verify(analyze, unit)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    # the check is real: a misspelt key or a missing program is reported
    unit.write_text(unit_text.replace("Restart=on-failure", "Restart=on-failure\nRestartOn=failure"))
    assert "Unknown key 'RestartOn'" in _verify(analyze, unit).stderr
    unit.write_text(unit_text.replace(str(Path(sys.executable).parent), "/nonexistent/bin"))
    assert _verify(analyze, unit).returncode != 0


def test_the_unit_is_sandboxed(tmp_path: Path, analyze: str) -> None:
    unit = tmp_path / "cnc-monitor.service"
    unit.write_text(render_unit(DEFAULT_LAYOUT))
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    found = re.search(r"Overall exposure level for cnc-monitor.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout  # systemd's scale: 10 = no sandbox at all


def test_the_shipped_unit_is_the_template_for_the_standard_layout() -> None:
    shipped = ROOT / "deploy/systemd/cnc-monitor.service"
    assert shipped.read_text() == render_unit(DEFAULT_LAYOUT), "regenerate deploy/ (see docs/service.md)"
    assert (ROOT / "deploy/sysusers.d/cnc-monitor.conf").read_text() == render_sysusers(DEFAULT_LAYOUT)
    text = shipped.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "User=cnc-monitor",
        "StateDirectory=cnc-monitor",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ):
        assert line + "\n" in text


def test_install_writes_the_unit_and_its_user(tmp_path: Path) -> None:
    site = _site(tmp_path)
    root = tmp_path / "root"
    result = _monitor("service", "-c", str(site), "--install", "--root", str(root), "--name", "cnc-monitor-cell3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    unit = root / "etc/systemd/system/cnc-monitor-cell3.service"
    users = root / "etc/sysusers.d/cnc-monitor-cell3.conf"
    assert "User=cnc-monitor-cell3\n" in unit.read_text()
    assert "StateDirectory=cnc-monitor-cell3\n" in unit.read_text()
    assert users.read_text().splitlines()[-1] == 'u cnc-monitor-cell3 - "CNC process monitor" /var/lib/cnc-monitor-cell3'
    assert "systemctl enable --now cnc-monitor-cell3" in result.stdout
    refused = _monitor("service", "-c", str(site), "--name", "Cell 3", cwd=tmp_path)
    assert refused.returncode == 2 and "lower-case" in refused.stderr


def test_service_refuses_a_broken_site_file_with_its_line(tmp_path: Path) -> None:
    site = _site(tmp_path, "bogus_key: 1\n")
    result = _monitor("service", "-c", str(site), cwd=tmp_path)
    assert result.returncode == 1
    assert re.search(r"site\.yaml:\d+ bogus_key: unknown key", result.stderr)


def test_version() -> None:
    result = _monitor("--version", cwd=ROOT)
    assert result.returncode == 0
    assert result.stdout.split()[:2] == ["monitor", importlib.metadata.version("cnc-drift-monitor")]
