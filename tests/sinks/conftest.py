"""Fixtures of the sink tests: real victoria-metrics servers in temporary data directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.victoria import VictoriaMetrics, running_victoria


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """victoria-metrics without deduplication: a duplicate write shows as a second sample."""
    with running_victoria(tmp_path / "vm") as server:
        yield server


@pytest.fixture
def victoria_dedup(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """victoria-metrics keeping one sample per series and timestamp, as InfluxDB does."""
    with running_victoria(tmp_path / "vm-dedup", dedup=True) as server:
        yield server
