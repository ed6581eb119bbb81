"""The capability rows ``monitor parts --capability`` computed, kept between runs per (machine,
program): a group is computed again only when its stored values or its program changed.

Why a file in the user's cache folder (``$XDG_CACHE_HOME/monitor/``, ``~/.cache/monitor/`` when
unset), one per store: the CLI opens the store read-only (a read-only mount, a user who may only
read it, a full disk), so it cannot keep anything in the store; and a table the daemon kept would
cost every part's transaction the capability of its group, which few parts are ever asked for.

Never a stale answer: an entry is used only when the store's stamp of the group's measurement
series (:meth:`~monitor.store.StoreReader.series_stamps`: a random number the store's triggers
set anew with any insert, update or delete of the group's rows, in that change's transaction) is
the one the entry was computed under, and the program's file (features, limits, nominals,
signals, report rule) and the code that computes the rows are the same (a hash of each). The
stamps are read before any value, so a part stored meanwhile leaves an entry that the next run
finds stale, never the reverse. A store that keeps no stamps (one of a schema before 8, read
without migrating) is never answered from the cache.

Bounded: one entry per group (its rows, one per feature), and the entries of groups no longer in
the store are dropped when the file is written. An unreadable, corrupt or unwritable file is
ignored with a warning: the rows are computed as without it. ``--no-cache`` or
``MONITOR_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.config import ProgramConfig
    from monitor.store import StoreReader

__all__ = ["CACHE_ENV", "FORMAT", "CapabilityCache", "cache_disabled", "cache_file", "program_key"]

log = logging.getLogger(__name__)

CACHE_ENV = "MONITOR_NO_CACHE"
"""Set (to anything but ``0`` or nothing) to compute every capability afresh, as ``--no-cache``."""

FORMAT = 1
"""The file's layout; another one is ignored (and replaced)."""

_CODE = ("detect", "report", "store", "model.py", "config.py", "queries.py", "capcache.py")
"""What computes the rows (relative to the package): any change of these files computes afresh."""

Group = tuple[str, str]


def cache_disabled() -> bool:
    """Whether :data:`CACHE_ENV` turns the cache off."""
    return os.environ.get(CACHE_ENV, "") not in ("", "0")


def cache_file(location: Path | str) -> Path:
    """The cache file of the store at ``location`` (a path, or a database URL): one per store."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    folder = Path(base) if os.path.isabs(base) else Path.home() / ".cache"  # a relative value is ignored (XDG)
    name = str(Path(location).resolve()) if isinstance(location, Path) else location
    return folder / "monitor" / f"capability-{hashlib.sha256(name.encode()).hexdigest()[:20]}.json"


_LIBRARIES = ("numpy", "scipy")
"""Libraries whose arithmetic the rows depend on: an upgrade (a new version file) computes afresh."""


def _code_key() -> str:
    """Size and modification time of every source file that computes the rows (and of the numeric
    libraries' version files, found without importing them), with the versions of the monitor and
    of Python."""
    import importlib.util
    import sys

    from monitor import __version__

    root = Path(__file__).resolve().parent
    parts = [__version__, str(FORMAT), sys.version]
    for library in _LIBRARIES:
        try:
            spec = importlib.util.find_spec(library)
        except (ImportError, ValueError):
            spec = None
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        for f in (origin.with_name("version.py"), origin) if origin is not None else ():
            try:
                st = f.stat()
            except OSError:
                continue
            parts.append(f"{library}:{f.name}:{st.st_size}:{st.st_mtime_ns}")
    for name in _CODE:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            parts.append(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def program_key(config: ProgramConfig) -> str:
    """A hash of everything the program's file says (its features with their limits, nominals and
    signals, its report rule, the rest too): an edited file computes afresh."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class CapabilityCache:
    """The kept rows of one store; :meth:`load` it, ask :meth:`rows`, :meth:`keep` what was
    computed, :meth:`save` once at the end."""

    def __init__(self, path: Path, stamps: dict[Group, int] | None, entries: dict[Group, dict[str, Any]], code: str) -> None:
        self.path = path
        self.stamps = stamps
        self.entries = entries
        self.code = code
        self.changed = False
        self._program_keys: dict[int, str] = {}

    def _program_key(self, config: ProgramConfig) -> str:
        """:func:`program_key`, once per program (its groups on every machine share it)."""
        key = self._program_keys.get(id(config))
        if key is None:
            key = self._program_keys[id(config)] = program_key(config)
        return key

    @classmethod
    def load(cls, path: Path, store: StoreReader) -> CapabilityCache:
        """The cache file at ``path`` with the store's stamps, read first (before any value)."""
        stamps = store.series_stamps()
        code = _code_key()
        entries: dict[Group, dict[str, Any]] = {}
        if stamps is None:
            return cls(path, None, entries, code)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(path, stamps, entries, code)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("capability cache %s cannot be read (%s): computing afresh", path, exc)
            return cls(path, stamps, entries, code)
        try:
            doc = json.loads(text)
            if not (isinstance(doc, dict) and isinstance(doc.get("groups"), list)):
                raise TypeError("not a cache file's layout")
            if doc.get("format") == FORMAT and doc.get("code") == code:  # else another monitor's: replaced
                for entry in doc["groups"]:
                    group = (entry["machine"], entry["program"])
                    if not (isinstance(entry["stamp"], int) and isinstance(entry["program_key"], str)):
                        raise TypeError("an entry without its stamp or program key")
                    if not (isinstance(entry["rows"], list) and all(isinstance(r, dict) for r in entry["rows"])):
                        raise TypeError("an entry whose rows are not rows")
                    entries[group] = entry
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("capability cache %s is corrupt (%s): computing afresh", path, exc)
            entries = {}
        return cls(path, stamps, entries, code)

    def rows(self, group: Group, config: ProgramConfig) -> list[dict[str, Any]] | None:
        """The group's kept rows when its stamp and program are the ones they were computed under."""
        stamp = None if self.stamps is None else self.stamps.get(group)
        entry = self.entries.get(group)
        if stamp is None or entry is None or entry["stamp"] != stamp or entry["program_key"] != self._program_key(config):
            return None
        return [dict(row) for row in entry["rows"]]

    def keep(self, group: Group, config: ProgramConfig, rows: list[dict[str, Any]]) -> None:
        """Keep the group's computed rows under the stamp read at :meth:`load` (none kept for a group
        without a stamp: nothing was measured, nothing to save)."""
        stamp = None if self.stamps is None else self.stamps.get(group)
        if stamp is None:
            return
        self.entries[group] = {
            "machine": group[0],
            "program": group[1],
            "stamp": stamp,
            "program_key": self._program_key(config),
            "rows": rows,
        }
        self.changed = True

    def save(self, groups: Iterable[Group]) -> None:
        """Write the entries of ``groups`` (those in the store; the others are dropped) when anything
        changed, atomically (a reader sees the old file or the new one). A folder or file that cannot
        be written is left with a warning."""
        if self.stamps is None:
            return
        present = set(groups)
        kept = {g: e for g, e in self.entries.items() if g in present}
        if not self.changed and len(kept) == len(self.entries):
            return
        doc = {"format": FORMAT, "code": self.code, "groups": [kept[g] for g in sorted(kept)]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:  # dumps, not dump: json's C encoder (dump runs its Python one)
                    f.write(json.dumps(doc, default=str, separators=(",", ":")))
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("capability cache %s cannot be written (%s): the next run computes afresh", self.path, exc)
