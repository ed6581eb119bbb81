"""The README's quick start, run as written on a copy of the repository: with Debian's own Python
(``/usr/bin/python3``, "externally managed" under PEP 668) first on PATH, and with the pyenv Python
when the machine has one. The first command line must install into a fresh ``.venv`` and run the
demo, with nothing installed outside the copy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.requires import missing

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
DEMO_ARGS = "--json --parts 12"  # the README's command, a shorter batch


def _quick_start_line() -> str:
    """The README's first quick-start command, exactly as a reader copies it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^(bash scripts/install\.sh && \.venv/bin/monitor demo)$", readme, re.MULTILINE)
    assert found, "README.md lost its quick start line `bash scripts/install.sh && .venv/bin/monitor demo`"
    return found.group(1)


def _copy_repository(to: Path) -> None:
    """The files a clone has (git's view when there is one), without this checkout's .venv or caches."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        for name in filter(None, (n.decode() for n in listed)):
            source = ROOT / name
            if source.is_file():
                (to / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, to / name)
        return
    ignore = shutil.ignore_patterns(".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.egg-info")
    shutil.copytree(ROOT, to, ignore=ignore, dirs_exist_ok=True)


def _environment(path: str) -> dict[str, str]:
    """A login-like environment: no active virtualenv, no PYTHONPATH pointing at this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "PYENV_VERSION", "CONDA"))}
    env["PATH"] = path
    return env


def _pyenv_path() -> str | None:
    """PATH with the pyenv Python first, when this machine has pyenv (on PATH or in $PYENV_ROOT)."""
    path = os.environ.get("PATH", "")
    for folder in path.split(os.pathsep):
        if "pyenv" in folder and (Path(folder) / "python3").exists():
            return path
    shims = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "shims"
    return f"{shims}{os.pathsep}{path}" if (shims / "python3").exists() else None


INTERPRETERS = {
    "debian": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",  # Debian's python3 is /usr/bin/python3
    "pyenv": _pyenv_path(),
}


@pytest.mark.timeout(900)  # a fresh virtual environment: ~25-45 s here, more on a loaded machine
@pytest.mark.parametrize("python", list(INTERPRETERS))
def test_quick_start_installs_and_runs_the_demo(python: str, tmp_path: Path) -> None:
    path = INTERPRETERS[python]
    if python == "debian" and not SYSTEM_PYTHON.exists():
        missing("no Debian system Python at /usr/bin/python3 (Debian package python3)")
    if path is None:  # pyenv is one way people install Python, not something the project needs
        pytest.skip("no pyenv Python on this machine (neither on PATH nor in $PYENV_ROOT)")
    repo = tmp_path / "cnc-monitor"
    repo.mkdir()
    _copy_repository(repo)
    env = _environment(path)
    which = subprocess.run(["bash", "-c", "command -v python3"], env=env, capture_output=True, text=True, check=True)
    if python == "debian":
        assert which.stdout.strip() == str(SYSTEM_PYTHON)
    result = subprocess.run(
        ["bash", "-c", f"{_quick_start_line()} {DEMO_ARGS}"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["parts"] > 0  # the daemon stored parts of the simulated batch (how many is the demo's own test)
    assert {f["feature"] for f in outcome["features"]} >= {"hole1_dia", "bore_dia"}
    # the venv is the copy's own, made from the interpreter that was first on PATH
    base = subprocess.run(
        [str(repo / ".venv/bin/python"), "-c", "import sys, monitor; print(sys.base_prefix); print(monitor.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    first_python = Path(which.stdout.strip()).resolve()
    if python == "debian":
        assert base[0] == "/usr"
    else:
        assert "pyenv" in base[0] or "pyenv" in str(first_python)
    assert Path(base[1]).is_relative_to(repo)  # installed from the copy, editable
