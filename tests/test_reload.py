"""Reload without restart, through the real daemon: a changed program file takes effect for the
next part while unchanged features keep their detector state; a configuration with errors is
refused with file:line and the old one keeps running; machines added and removed are started and
stopped on their own; SIGHUP and `monitor reload` on the real process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from monitor.config import Site, load_site
from monitor.daemon import Daemon
from monitor.model import AlertKind
from monitor.sim import SimCell, load_scenario
from monitor.sim.mtconnect_agent import SimAgentBinding
from monitor.sim.process import PROGRAMS_DIR
from monitor.store import SqliteStore
from tests.daemons import running_daemon
from tests.streams import batch, write_jsonl, write_site

ROOT = Path(__file__).resolve().parents[1]


def _site_for(tmp_path: Path, binding: SimAgentBinding, machine: str) -> Path:
    programs = tmp_path / "programs"
    shutil.copytree(PROGRAMS_DIR, programs)
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "site": "reload",
                "programs": "programs",
                "dashboard": {"enabled": False},
                "machines": [
                    {
                        "id": machine,
                        "signals": binding.signal_map(machine),
                        "tracking": {"grace_s": 1},
                        "source": {"type": "mtconnect", "url": binding.url, "device": machine, "interval_ms": 20},
                    }
                ],
            }
        )
    )
    return site


async def _points(daemon: Daemon, machine: str, program: str, site: Site) -> dict[str, int]:
    """How many parts the engine watched per feature of ``program`` (its live view)."""
    return {f: len((await daemon.core.feature_view(machine, program, f))["values"]) for f in site.programs[program].features}


def _edit_feature(path: Path, feature: str, **values: float) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["features"][feature].update(values)
    path.write_text(yaml.safe_dump(doc))


async def test_a_program_change_takes_effect_for_the_next_part_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    cell = SimCell(load_scenario("stable"), seed=3, parts=12)
    machine = cell.machines[0].id
    events = [e for e in cell.events() if e.machine == machine]
    sixth = next(i for i, e in enumerate(events) if e.signal == "part.count" and e.value == 6.0)
    async with SimAgentBinding([cell.machines[0]]) as binding:
        site = load_site(_site_for(tmp_path, binding, machine))
        program = next(name for name in site.programs if name in cell.programs())
        async with running_daemon(site) as running:
            daemon = running.daemon
            await running.until(lambda e: e.kind == "machine" and e.data.get("connection") == "connected")
            for event in events[: sixth + 1]:
                binding.publish(event)
            await running.parts(6, timeout_s=60)
            before = {
                f: len((await daemon.core.feature_view(machine, program, f))["values"]) for f in site.programs[program].features
            }
            assert set(before.values()) == {6}
            loaded_before = daemon.config_version
            # tighten hole1_dia far away from what the machine makes: every later part is out of tolerance
            _edit_feature(tmp_path / "programs" / f"{program}.yaml", "hole1_dia", nominal=10.5, lower=10.4, upper=10.6)
            result = await daemon.reload()
            assert result["ok"] is True, result
            assert result["programs_changed"] == [program] and result["sources_restarted"] == []
            assert daemon.config_version.loaded_at > loaded_before.loaded_at
            assert daemon.config_version.files != loaded_before.files
            # a broken file next to it: refused with file and line, the running configuration stays
            (tmp_path / "programs" / "broken.yaml").write_text(
                "program: O9\nfeatures:\n  d: {kind: size, signal: probe.d, nominal: 1}\n"
            )
            refused = await daemon.reload()
            assert refused["ok"] is False
            assert any(e.startswith(f"{tmp_path / 'programs' / 'broken.yaml'}:3 ") for e in refused["errors"]), refused
            status = await daemon.status()
            assert status["config"]["last_reload"] == refused
            assert status["config"]["loaded_at"] == result["at"]
            for event in events[sixth + 1 :]:
                binding.publish(event)
            await running.parts(12, timeout_s=60)
            after = {
                f: len((await daemon.core.feature_view(machine, program, f))["values"]) for f in site.programs[program].features
            }
    assert after.pop("hole1_dia") == 6  # watched afresh from part 7 with the new limits
    assert set(after.values()) == {12}  # every unchanged feature kept its history and detector state
    with SqliteStore(site.store_path) as store:
        oot = [a for a in store.alerts() if a.kind is AlertKind.OUT_OF_TOLERANCE and a.feature == "hole1_dia"]
        assert [a.part_number for a in oot] == [7]  # the first part completed after the reload
        assert store.part_count() == 12


async def test_machines_added_and_removed_start_and_stop_on_their_own(tmp_path: Path) -> None:
    site_path = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(3)))
    async with running_daemon(load_site(site_path)) as running:
        daemon = running.daemon
        await running.parts(3, machines={"m1": 3})
        m2 = write_jsonl(tmp_path / "m2.jsonl", batch(4, machine="m2"))
        site_path.write_text(
            site_path.read_text() + f'  - id: m2\n    source: {{type: replay, path: "{m2}"}}\n    tracking: {{grace_s: 1.0}}\n'
        )
        added = await daemon.reload()
        assert added["ok"] and added["sources_added"] == [["m2", f"replay {m2}"]], added
        await running.parts(0, machines={"m2": 4})
        doc = yaml.safe_load(site_path.read_text())
        doc["machines"] = [m for m in doc["machines"] if m["id"] != "m1"]
        site_path.write_text(yaml.safe_dump(doc))
        removed = await daemon.reload()
        assert removed["ok"] and removed["sources_removed"] == [["m1", f"replay {tmp_path / 'm1.jsonl'}"]], removed
        status = await daemon.status()
        assert set(status["machines"]) == {"m2"}
        assert [s.machine for s in daemon.sources] == ["m2"]
    with SqliteStore(daemon.site.store_path) as store:
        assert store.part_count(machine="m1") == 3 and store.part_count(machine="m2") == 4


def _monitor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


async def test_sighup_and_monitor_reload_on_the_real_process(tmp_path: Path) -> None:
    site = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(2)), dashboard=True)
    runtime = tmp_path / "monitor.db.daemon.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "run", "-c", str(site),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while not runtime.exists():  # noqa: ASYNC110 - another process's file: nothing to await
                await asyncio.sleep(0.05)
        reloaded = await asyncio.to_thread(_monitor, "reload", "-c", str(site), "--json", cwd=tmp_path)
        assert reloaded.returncode == 0, reloaded.stderr
        assert json.loads(reloaded.stdout)["ok"] is True
        # a bad program file: `monitor reload` refuses it itself, with file and line ...
        (tmp_path / "programs" / "o1001.yaml").write_text("program: O1001\nfeatures: {d: {kind: size}}\n")
        refused = await asyncio.to_thread(_monitor, "reload", "-c", str(site), cwd=tmp_path)
        assert refused.returncode == 1 and "o1001.yaml:2" in refused.stderr, refused.stderr
        # ... and a bare SIGHUP makes the daemon refuse it and keep running
        proc.send_signal(signal.SIGHUP)
        status: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while not (status.get("config", {}).get("last_reload") or {}).get("errors"):
                shown = await asyncio.to_thread(_monitor, "status", "-c", str(site), "--json", cwd=tmp_path)
                status = json.loads(shown.stdout) if shown.returncode == 0 else {}
        assert proc.returncode is None  # SIGHUP no longer ends the process (it used to exit with 129)
        assert any("o1001.yaml:2" in e for e in status["config"]["last_reload"]["errors"])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert b"reload refused" in stderr
