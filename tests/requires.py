"""What a test needs from outside the repository, and what happens when it is missing.

On a developer's machine a missing server binary or a missing ``../shared`` folder skips the test
with a reason that says what to install. Under ``CI=true`` (``.ci/run`` sets it) the same absence
fails the test: CI always has both, so a skip there would hide tests that silently stopped running.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["SHARED", "in_ci", "missing", "need_binary", "need_shared"]

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
"""The interop data written by others (``../shared`` beside the repository)."""


def in_ci() -> bool:
    """True when the run is CI's (``CI=true``, as GitHub, GitLab and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """Skip (developer machine) or fail (CI) because something the test needs is not there."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true, where it must be present", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def need_binary(name: str, package: str, *, module: bool = False) -> str:
    """The path of program ``name``; skip/fail naming the Debian ``package`` that provides it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if path is None:
        missing(f"{name} is not installed (Debian package {package})", module=module)
    return path


def need_shared(*parts: str) -> Path:
    """A path under ``../shared``; skip/fail when it (or the whole folder) is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        missing(f"../shared not present: {path} is missing (interop data beside the repository)")
    return path
