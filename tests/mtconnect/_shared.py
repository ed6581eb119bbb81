"""Where the interop data written by others lives (beside the repository), and a skip when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "mtconnect"


def shared(*parts: str) -> Path:
    """Path under ../shared/mtconnect, skipping the test when that folder is not there."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not present: {SHARED} holds the MTConnect interop documents")
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"../shared not present: {p} is missing")
    return p
