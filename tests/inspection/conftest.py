"""A site whose store holds parts with serial numbers (written with SqliteStore.record_part, below
the subject), a program file that maps CMM and bench characteristics to its features, and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.model import PartRecord, PartStatus
from monitor.store import SqliteStore

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)

PROGRAM_YAML = """\
program: O1001
features:
  bore:
    kind: size
    signal: probe.bore
    nominal: 10.0075
    lower: 10.000
    upper: 10.015
    balloon: 7
    measured_by:
      probe: {resolution: 0.001}
      cmm: {characteristic: DIA_H1, resolution: 0.0001, system: "CMM Contura"}
      bench: {characteristic: "Bohrung 7"}
  hole_pos:
    kind: position
    x: {signal: probe.hole_x, nominal: 25.0}
    y: {signal: probe.hole_y, nominal: 40.0}
    tolerance: 0.05
    balloon: "8"
    measured_by:
      cmm: {characteristic: [TP_H1, "Position 8"]}
inspection:
  csv:
    columns: {characteristic: Merkmal, value: Istwert, nominal: Sollwert, upper_tol: OT, lower_tol: UT,
              serial: Seriennummer, time: Zeit}
    delimiter: ";"
    decimal: ","
    time_format: "%d.%m.%Y %H:%M:%S"
"""


@dataclass
class InspectionSite:
    """A site file, its store path and helpers to add parts and run the CLI."""

    path: Path
    store: Path

    def add_parts(
        self, numbers: range | list[int], *, machine: str = "m1", program: str = "O1001", serials: bool = True
    ) -> list[PartRecord]:
        parts = [
            PartRecord(
                key=f"{machine}/{program}/{n}",
                machine=machine,
                program=program,
                part_number=n,
                start=T0 + timedelta(minutes=3 * n - 2),
                end=T0 + timedelta(minutes=3 * n),
                status=PartStatus.COMPLETE,
                measurements={"probe.bore": 10.0075 + 0.0001 * n, "probe.hole_x": 25.001, "probe.hole_y": 40.0},
                part_id=f"SN{n:04d}" if serials else None,
            )
            for n in numbers
        ]
        with SqliteStore(self.store) as store:
            for p in parts:
                store.record_part(p)
        return parts

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run ``monitor ARGS -c SITE``; (exit code, stdout, stderr)."""
        result = CliRunner().invoke(app, [*args, "-c", str(self.path)])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    def cli_json(self, *args: str) -> list[dict[str, Any]]:
        code, out, err = self.cli(*args, "--json")
        assert code == 0, err + out
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def inspection_site(tmp_path: Path) -> InspectionSite:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "O1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: cell\nstore: {path: monitor.db}\nprograms: programs\ndashboard: {enabled: false}\n"
        "inspection: {timezone: UTC, match_window_s: 600}\n",
        encoding="utf-8",
    )
    return InspectionSite(site, tmp_path / "monitor.db")
