"""Where the MTConnect interop data written by others lives (``../shared/mtconnect``)."""

from __future__ import annotations

from pathlib import Path

from tests.requires import need_shared

__all__ = ["shared"]


def shared(*parts: str) -> Path:
    """A path under ``../shared/mtconnect``; skipped (failed under CI=true) when absent."""
    return need_shared("mtconnect", *parts)
