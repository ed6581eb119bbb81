"""The store: parts, measurements, alerts, detector state, adapter positions, signal history.

Everything above the store names only the protocols of :mod:`monitor.store.base` (:class:`Store`
to write, :class:`StoreReader` to read) and opens one with :func:`open_store`, which picks the
backend for the site. SQLite (embedded, always available) is the one backend today.
"""

from __future__ import annotations

from pathlib import Path

from monitor.store.base import SeriesPoint, StateDelta, StateWrite, Store, StoreReader
from monitor.store.sqlite import SCHEMA_VERSION, SqliteStore

__all__ = ["SCHEMA_VERSION", "SeriesPoint", "SqliteStore", "StateDelta", "StateWrite", "Store", "StoreReader", "open_store"]


def open_store(path: Path, *, read_only: bool = False) -> Store:
    """Open the store at ``path`` (a site's ``store_path``): the one place a backend is chosen.

    ``read_only`` for readers (the CLI, reports): nothing is created or migrated, and it works on a
    read-only mount or a full disk."""
    return SqliteStore(path, read_only=read_only)
