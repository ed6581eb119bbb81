"""A consistent copy of the store while the daemon keeps writing: SQLite's online backup API.

Why one backup step and not many small ones: SQLite restarts a stepped backup whenever another
connection writes the source between two steps, and the daemon writes a part every few seconds,
so a stepped backup of a large store might never finish. One step copies the whole database inside
one read transaction; in WAL mode that transaction sees a fixed snapshot and blocks no writer,
so the daemon goes on storing parts while the copy is made, and the copy holds every part either
whole (with its measurements, alerts and detector state) or not at all.

The copy is written beside the target under a temporary name, switched from WAL to a rollback
journal (one self-contained file to archive), checked with ``PRAGMA integrity_check`` and only then
renamed into place, so a failed backup never leaves a half-written file that looks like a backup.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from monitor.errors import StoreError

__all__ = ["BackupResult", "backup_store"]


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What was copied: for the CLI's line and for scripts (``--json``)."""

    source: str
    target: str
    bytes: int
    parts: int
    alerts: int
    schema_version: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backup_store(source: Path, target: Path, *, overwrite: bool = False) -> BackupResult:
    """Copy the store at ``source`` to ``target`` (a new SQLite file), consistently, while it is in use.

    Raises :class:`StoreError` when the source is missing or unreadable, the target exists (unless
    ``overwrite``) or is the source itself, or the copy fails its integrity check."""
    if not source.is_file():
        raise StoreError(f"no store at {source}; check store.path in the site file")
    if target.exists() and target.resolve() == source.resolve():
        raise StoreError(f"{target} is the store itself; choose another file for the backup")
    if target.exists() and not overwrite:
        raise StoreError(f"{target} exists; choose a new file name or pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    started = time.monotonic()
    try:
        src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30.0)
        try:
            dst = sqlite3.connect(partial, isolation_level=None)
            try:
                src.backup(dst, pages=-1)  # one step: one snapshot (see the module docstring)
                dst.execute("PRAGMA journal_mode=DELETE")
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
                if check != "ok":
                    raise StoreError(f"the backup of {source} failed its integrity check: {check}")
                parts = int(dst.execute("SELECT COUNT(*) FROM parts").fetchone()[0])
                alerts = int(dst.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])
                version = int(dst.execute("PRAGMA user_version").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"backup of {source} to {target} failed: {exc}; check the paths, permissions and disk space") from exc
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult(
        source=str(source),
        target=str(target),
        bytes=target.stat().st_size,
        parts=parts,
        alerts=alerts,
        schema_version=version,
        seconds=round(time.monotonic() - started, 3),
    )
