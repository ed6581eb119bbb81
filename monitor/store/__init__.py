"""The store: parts, measurements, alerts, detector state, adapter positions, signal history.

Everything above the store names only the protocols of :mod:`monitor.store.base` (:class:`Store`
to write, :class:`StoreReader` to read) and opens one with :func:`open_store`, which picks the
backend for the site: SQLite (embedded, nothing to install, the default) for a file path,
PostgreSQL (several cell daemons on one plant database; ``pip install cnc-drift-monitor[postgres]``)
for a ``postgresql://`` URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from monitor.dburl import is_url
from monitor.errors import StoreError
from monitor.store.base import SeriesPoint, StateDelta, StateWrite, Store, StoreReader
from monitor.store.sqlite import SCHEMA_VERSION, SqliteStore

if TYPE_CHECKING:
    from monitor.store.postgres import Fence

__all__ = ["SCHEMA_VERSION", "SeriesPoint", "SqliteStore", "StateDelta", "StateWrite", "Store", "StoreReader", "open_store"]


def open_store(where: Path | str, *, read_only: bool = False, fence: Fence | None = None) -> Store:
    """Open the store ``where`` names (a site's ``store_location``): the one place a backend is chosen.

    A ``postgresql://`` URL opens the plant database (``fence``: the leases a daemon writes under);
    anything else is a SQLite file. ``read_only`` for readers (the CLI, reports): nothing is created
    or migrated, and a SQLite store works on a read-only mount or a full disk."""
    if is_url(where):
        try:
            import psycopg  # noqa: F401  (the optional driver: say how to install it before connecting)
        except ImportError as exc:  # psycopg is an optional extra
            raise StoreError(
                f"the store is a PostgreSQL database but its driver is missing ({exc}); "
                "install it with `pip install 'cnc-drift-monitor[postgres]'` (psycopg 3)"
            ) from exc
        from monitor.store.postgres import PostgresStore

        return PostgresStore(str(where), read_only=read_only, fence=fence)
    return SqliteStore(Path(where), read_only=read_only)
