"""Suite-wide test settings (deterministic property tests) and the store backends' fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.servers.postgres import PASSWORD, Cluster, running_cluster
from tests.stores import Backend

# Same examples on every run (CI must be deterministic); no per-example deadline on a busy 2-core box.
settings.register_profile("monitor", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("monitor")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the session (started on first use, stopped at the end)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty database; its URL (no password: PGPASSWORD is set in the environment, as for a daemon)."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return pg_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """An empty store of each backend in turn: what every backend must do alike."""
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "store.db")
    return Backend("postgres", request.getfixturevalue("pg_url"))
