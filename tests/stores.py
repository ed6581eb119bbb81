"""Store backends for tests that every backend must pass (tests/test_store.py and friends).

``backend`` (a fixture parametrized over ``sqlite`` and ``postgres``) gives a :class:`Backend`: a
fresh, empty store location (a SQLite file in the test's folder, or a new database in the session's
PostgreSQL cluster, tests/servers/postgres.py) and a way to open it. The cluster starts once per
session, on first use; the password comes from the environment (PGPASSWORD), as for a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import SqliteStore

__all__ = ["Backend", "BackendStore"]

BackendStore = SqliteStore | PostgresStore


@dataclass
class Backend:
    """One empty store location of one backend."""

    name: str
    location: Path | str

    def open(self, *, read_only: bool = False) -> BackendStore:
        if isinstance(self.location, str):
            return PostgresStore(self.location, read_only=read_only)
        return SqliteStore(self.location, read_only=read_only)

    def set_schema_version(self, version: int) -> None:
        """Pretend a newer (or older) monitor wrote the store."""
        store = self.open()
        try:
            if isinstance(store, SqliteStore):
                store._db.execute(f"PRAGMA user_version = {version}")
            else:
                with store._tx() as db:
                    db.execute("UPDATE schema_version SET version = %s", (version,))
        finally:
            store.close()
