"""Watched folders: the daemon imports CMM and gauge result files as they appear.

Each folder of the site's ``inspection.watch`` is looked at every ``interval_s``. A file whose
name matches the folder's patterns is imported once its size and modification time have stayed
the same for ``settle_s`` (a CMM still writing it is left alone), with the folder's machine and
program as the import's ``--machine``/``--program``. Afterwards it is moved into ``imported/``
(or ``failed/`` with a ``.why.txt`` beside it) inside the folder, or marked in place with
``<name>.imported`` / ``<name>.failed``, so it is never read twice; results that could not be
matched to a part are logged, kept, and tried again on every look at the folders (their parts
may be stored later).

The folder scan and the file moves run on a worker thread; the import itself is the caller's
(the daemon's core, on its store thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.config import Site
from monitor.inspection.config import WatchFolderConfig
from monitor.inspection.importer import FileOutcome, ImportOptions, ImportSummary, ResultsOutcome

__all__ = ["FolderWatcher", "Importer", "WatchCounts"]

log = logging.getLogger(__name__)

Importer = Callable[[Sequence[Path], ImportOptions], Awaitable[ImportSummary]]
"""Imports files with options (the core's :meth:`~monitor.core.MonitorCore.import_inspection`)."""
Rematcher = Callable[[], Awaitable[list[ResultsOutcome]]]
"""Tries unmatched results again; the newly matched."""


@dataclass
class WatchCounts:
    """What the watcher did since the daemon started (for status and metrics)."""

    imported: int = 0
    refused: int = 0
    unmatched: int = 0
    rematched: int = 0


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float


class FolderWatcher:
    """Imports new files of the site's watched folders (see the module docstring)."""

    def __init__(
        self, site: Callable[[], Site], importer: Importer, rematcher: Rematcher, publish: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self._site = site
        self._publish = publish
        self._import = importer
        self._rematch = rematcher
        self._seen: dict[Path, _Seen] = {}
        self._warned: set[Path] = set()
        self.counts = WatchCounts()

    def _interval(self) -> float:
        watch = self._site().config.inspection.watch
        return min((w.interval_s for w in watch), default=5.0)

    async def run(self) -> None:
        """Look at the folders until cancelled."""
        while True:
            await self.look()
            await asyncio.sleep(self._interval())

    async def look(self) -> None:
        """One look at every folder: import the files that settled, then retry unmatched results."""
        loop = asyncio.get_running_loop()
        for watch in self._site().config.inspection.watch:
            ready = await asyncio.to_thread(self._settled, watch, loop.time())
            if ready:
                await self._import_batch(watch, ready)
        for r in await self._rematch():
            self.counts.rematched += 1
            log.warning("inspection results %s now matched to %s", r.where, r.part)

    def _settled(self, watch: WatchFolderConfig, now: float) -> list[Path]:
        folder = watch.folder
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            if folder not in self._warned:
                self._warned.add(folder)
                log.error("inspection: cannot read watched folder %s (%s); create it or fix inspection.watch", folder, exc)
            return []
        self._warned.discard(folder)
        patterns = [p.lower() for p in watch.patterns]
        ready: list[Path] = []
        for entry in entries:
            name = entry.name
            if not any(fnmatch.fnmatch(name.lower(), p) for p in patterns):
                continue
            path = Path(entry.path)
            if path.with_name(name + ".imported").exists() or path.with_name(name + ".failed").exists():
                continue  # marked (after: mark), or a file that could not be moved
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:
                continue
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._seen[path] = _Seen(st.st_size, st.st_mtime_ns, now)
                if watch.settle_s > 0:
                    continue
            elif now - seen.since < watch.settle_s:
                continue
            ready.append(path)
        return sorted(ready)

    async def _import_batch(self, watch: WatchFolderConfig, paths: list[Path]) -> None:
        options = ImportOptions(machine=watch.machine, program=watch.program)
        summary = await self._import(paths, options)
        for outcome in summary.files:
            path = Path(outcome.path)
            self._seen.pop(path, None)
            self._report(outcome)
            kept = await asyncio.to_thread(_settle_file, watch, path, outcome)
            self._publish("inspection", {**outcome.as_dict(), "kept_as": None if kept is None else str(kept)})

    def _report(self, outcome: FileOutcome) -> None:
        if outcome.state == "refused":
            self.counts.refused += 1
            log.error("inspection: refused %s", outcome.error)
            return
        self.counts.imported += 1
        unmatched = [r for r in outcome.results if r.part_key is None]
        self.counts.unmatched += len(unmatched)
        log.warning(
            "inspection: imported %s (%s): %d part results, %d new actuals, %d matched, %d unmatched",
            outcome.path,
            outcome.state,
            len(outcome.results),
            outcome.new_actuals,
            outcome.matched,
            len(unmatched),
        )
        for r in unmatched:
            log.warning("inspection: %s %s not matched to a part (kept, tried again later): %s", outcome.path, r.where, r.note)
        for w in outcome.warnings:
            log.warning("inspection: %s: %s", outcome.path, w)


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists():
        stem, dot, suffix = name.rpartition(".")
        target = folder / (f"{stem}-{n}.{suffix}" if dot else f"{name}-{n}")
        n += 1
    return target


def _settle_file(watch: WatchFolderConfig, path: Path, outcome: FileOutcome) -> Path | None:
    """Move or mark a file after its import so it is never read again; where the file is now
    (None when it could be neither moved nor marked)."""
    failed = outcome.state == "refused"
    why = (outcome.error or "refused") + "\n" if failed else ""
    try:
        if watch.after == "mark":
            marker = path.with_name(path.name + (".failed" if failed else ".imported"))
            marker.write_text(why or f"{outcome.state}: {len(outcome.results)} part results, {outcome.new_actuals} new actuals\n")
            return path
        folder = watch.folder / ("failed" if failed else "imported")
        folder.mkdir(exist_ok=True)
        target = _free_name(folder, path.name)
        path.replace(target)
        if failed:
            target.with_name(target.name + ".why.txt").write_text(why)
        return target
    except OSError as exc:
        log.error("inspection: cannot %s %s (%s); it will be read again", "mark" if watch.after == "mark" else "move", path, exc)
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".failed").write_text(f"{why}cannot move: {exc}\n")
        return None
