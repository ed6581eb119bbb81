"""What a reload changes: the file versions a configuration was loaded from, and the difference
between the running site and a newly loaded one.

Pure code (no I/O but hashing the files that were just loaded) so the daemon only applies what
:func:`plan_reload` decided, and a test can check the decisions without a daemon.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.config import Site

__all__ = ["ConfigVersion", "ReloadPlan", "plan_reload", "source_key"]


def source_key(machine: Any) -> str:
    """Names one source of a machine (type and address): in the store's adapter positions, and to
    tell which sources a reload adds, removes or changes."""
    src = machine.source
    address = getattr(src, "url", None) or getattr(src, "endpoint", None) or getattr(src, "path", "")
    return f"{src.type} {address}"


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "unreadable"


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """When a configuration was loaded, and the content hash of each file it came from."""

    loaded_at: datetime
    site_file: str
    files: dict[str, str]
    """File path -> first 12 hex digits of its SHA-256 (the site file and every program file)."""

    @classmethod
    def of(cls, site: Site, at: datetime | None = None) -> ConfigVersion:
        paths = [site.path, *sorted(site.program_files.values())]
        return cls(
            loaded_at=at or datetime.now(UTC),
            site_file=str(site.path),
            files={str(p): _digest(p) for p in paths},
        )

    def as_dict(self) -> dict[str, Any]:
        return {"loaded_at": self.loaded_at.isoformat(), "site_file": self.site_file, "files": dict(self.files)}


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The difference between the running site and the new one, as the daemon applies it.

    Sources are keyed by ``(machine id, source key)``; a source whose entry changed in any way
    (signals, tracking, options) is restarted. Programs are compared by their whole validated
    content. ``needs_restart`` names settings a reload cannot apply (the store, the dashboard's
    address, the outputs): they are reported and take effect at the next start."""

    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    changed: tuple[tuple[str, str], ...] = ()
    programs_added: tuple[str, ...] = ()
    programs_removed: tuple[str, ...] = ()
    programs_changed: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (
            self.added or self.removed or self.changed or self.programs_added or self.programs_removed or self.programs_changed
        )

    def summary(self) -> str:
        """One line for the log and ``monitor reload``."""
        parts = []
        for label, items in (
            ("sources added", self.added),
            ("removed", self.removed),
            ("restarted", self.changed),
        ):
            if items:
                parts.append(f"{label}: " + ", ".join(f"{m} ({k})" for m, k in items))
        for label, names in (
            ("programs added", self.programs_added),
            ("removed", self.programs_removed),
            ("changed", self.programs_changed),
        ):
            if names:
                parts.append(f"{label}: " + ", ".join(names))
        if self.needs_restart:
            parts.append("needs a restart to apply: " + ", ".join(self.needs_restart))
        return "; ".join(parts) or "nothing changed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources_added": [list(k) for k in self.added],
            "sources_removed": [list(k) for k in self.removed],
            "sources_restarted": [list(k) for k in self.changed],
            "programs_added": list(self.programs_added),
            "programs_removed": list(self.programs_removed),
            "programs_changed": list(self.programs_changed),
            "needs_restart": list(self.needs_restart),
            "summary": self.summary(),
        }


def plan_reload(old: Site, new: Site) -> ReloadPlan:
    """What has to change for the running daemon of ``old`` to run ``new``."""
    before = {(m.id, source_key(m)): m.model_dump(mode="json") for m in old.config.machines}
    after = {(m.id, source_key(m)): m.model_dump(mode="json") for m in new.config.machines}
    programs_before = {name: p.model_dump(mode="json") for name, p in old.programs.items()}
    programs_after = {name: p.model_dump(mode="json") for name, p in new.programs.items()}
    restart = [
        s for s in ("dashboard", "sinks", "log_level", "log_format", "site") if getattr(old.config, s) != getattr(new.config, s)
    ]
    if old.store_path != new.store_path:
        restart.insert(0, "store.path")
    if old.store_location != new.store_location or old.config.store.lease_s != new.config.store.lease_s:
        restart.insert(0, "store.url")
    return ReloadPlan(
        added=tuple(k for k in after if k not in before),
        removed=tuple(k for k in before if k not in after),
        changed=tuple(k for k in after if k in before and before[k] != after[k]),
        programs_added=tuple(sorted(set(programs_after) - set(programs_before))),
        programs_removed=tuple(sorted(set(programs_before) - set(programs_after))),
        programs_changed=tuple(
            sorted(n for n in programs_after if n in programs_before and programs_before[n] != programs_after[n])
        ),
        needs_restart=tuple(restart),
    )
