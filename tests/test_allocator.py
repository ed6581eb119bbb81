"""``monitor run`` runs with glibc's per-thread cache sized for parsing pages (monitor.allocator).

The daemon itself is started by the tests that run ``monitor run`` (tests/test_daemon.py checks its
environment after it stored parts and stopped cleanly); here: when the command runs itself again,
and that it runs exactly the command it was given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor import allocator
from monitor.allocator import TUNABLES, tuned_command

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_runs_again_as_it_was_given_only_on_glibc_without_tunables() -> None:
    argv = ["python3", "-X", "dev", "-m", "monitor", "run", "-c", "site.yaml"]
    assert tuned_command({}, argv, "/venv/bin/python", "glibc") == ["/venv/bin/python", *argv[1:]]
    assert tuned_command({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=9"}, argv, "/venv/bin/python", "glibc") is None
    assert tuned_command({"GLIBC_TUNABLES": TUNABLES}, argv, "/venv/bin/python", "glibc") is None  # once
    assert tuned_command({}, argv, "/venv/bin/python", "") is None  # musl and others: nothing to tune
    assert tuned_command({}, argv, "", "glibc") is None
    assert tuned_command({}, [], "/venv/bin/python", "glibc") is None


def test_a_program_that_calls_the_command_line_itself_is_never_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the ``monitor`` command's own process runs itself again: in a test runner (CliRunner, or
    this test) the call returns and the process goes on."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert allocator.own_process is False
    allocator.use_tuned_allocator()  # would replace pytest with itself if it did anything


@pytest.mark.skipif(allocator.c_library() != "glibc", reason="the allocator is tuned on glibc only")
@pytest.mark.parametrize("preset", [None, "glibc.malloc.tcache_count=9"])
def test_monitor_run_runs_itself_again_with_the_tuned_cache_and_keeps_a_users_setting(tmp_path: Path, preset: str | None) -> None:
    """``monitor run`` with a site file that does not exist: it fails after the point where it runs
    itself again, in the same process (same pid), with the setting in its environment: the one the
    user gave, or the tuned one."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        f"out = Path({str(tmp_path / 'seen.txt')!r})\n"
        "with out.open('a') as f:\n"
        "    f.write(f\"{os.getpid()} {os.environ.get('GLIBC_TUNABLES')}\\n\")\n"
        "from monitor.cli import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = str(ROOT)
    if preset is not None:
        env["GLIBC_TUNABLES"] = preset
    done = subprocess.run(
        [sys.executable, str(probe), "run", "-c", str(tmp_path / "missing.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "missing.yaml" in done.stdout + done.stderr
    seen = [line.split(" ", 1) for line in (tmp_path / "seen.txt").read_text().splitlines()]
    if preset is None:
        assert [tunables for _, tunables in seen] == ["None", TUNABLES]  # ran again, once, tuned
        assert seen[0][0] == seen[1][0]  # in the same process
    else:
        assert seen == [[seen[0][0], preset]]  # the user's setting, no second start
