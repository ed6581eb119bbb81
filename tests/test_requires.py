"""A missing server binary or ../shared folder skips on a developer's machine and fails under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
from tests.requires import need_binary, need_shared


def test_needs_a_binary():
    need_binary("no-such-server-binary-7f3a", "no-such-package")


def test_needs_shared_data():
    need_shared("no-such-folder-7f3a", "file.xml")
"""


@pytest.mark.parametrize(("ci", "outcome"), [("", "2 skipped"), ("true", "2 failed")])
def test_absence_skips_locally_and_fails_in_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(_PROBE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": ci}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path),
         str(probe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "Debian package no-such-package" in result.stdout
    assert "../shared not present" in result.stdout
    if ci:
        assert "CI=true, where it must be present" in result.stdout
