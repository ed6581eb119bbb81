"""One way to drive Debian's chromium from a test: the launch flags, the default timeout, and a
page that records what it requested and the errors it logged (the dashboard's and the report's
browser tests all check that nothing left the origin and nothing failed)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.requires import need_binary

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
DOCS = Path(__file__).resolve().parents[1] / "docs"
_SHOTS: list[Path] = []


def screenshot_path(name: str) -> Path:
    """Where a test saves screenshot ``name``: docs/ when ``UPDATE_SCREENSHOTS=1`` (to refresh the
    pictures the docs show), else a temporary folder, so a test run never changes tracked files."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        return DOCS / name
    if not _SHOTS:
        _SHOTS.append(Path(tempfile.mkdtemp(prefix="screenshots-")))
    return _SHOTS[0] / name


@asynccontextmanager
async def launched_chromium(*, module: bool = False) -> AsyncIterator[Any]:
    """A running chromium (skipped, or failed under CI, naming the Debian package when absent)."""
    chromium = need_binary("chromium", "chromium", module=module)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watched:
    """A page with what it requested and the errors it logged."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_clean(self, origin: str, *, expected: tuple[str, ...] = ()) -> None:
        foreign = [u for u in self.requests if not u.startswith(origin + "/")]
        assert not foreign, f"requests outside the dashboard: {foreign}"
        errors = [e for e in self.errors if not any(x in e for x in expected)]
        assert not errors, f"page errors: {errors}"


async def open_watched(context: Any, url: str) -> Watched:
    """Open ``url`` in a new page of ``context``, recording its requests and errors."""
    page = await context.new_page()
    w = Watched(page)
    page.on("request", lambda r: w.requests.append(r.url))
    page.on("console", lambda m: w.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: w.errors.append(str(e)))
    await page.goto(url)
    return w
