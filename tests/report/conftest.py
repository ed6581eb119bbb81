"""A site with a store holding one small batch, written directly with SqliteStore.record_part (below the subject)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.model import (
    Action,
    ActionKind,
    Alert,
    AlertKind,
    AlertState,
    PartRecord,
    PartStatus,
    Register,
    RegisterKind,
    Role,
    Severity,
    SpindleStats,
    ToolUse,
)
from monitor.store import SqliteStore

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
PROGRAM = "O1234"
HOSTILE = "O9<script>alert(1)</script>"

PROGRAM_YAML = """\
program: {name}
features:
  hole1_pos:
    kind: position
    x: {{signal: probe.hole1_x, nominal: 25.000}}
    y: {{signal: probe.hole1_y, nominal: 40.000}}
    tolerance: 0.050
  bore_dia:
    kind: size
    signal: probe.bore_dia
    nominal: 10.0075
    lower: 10.000
    upper: 10.015
"""


@dataclass
class Batch:
    site_file: Path
    parts: list[PartRecord]
    alerts: list[Alert]


def _parts(machine: str, program: str, n: int, rng: random.Random) -> list[PartRecord]:
    parts = []
    for i in range(1, n + 1):
        end = T0 + timedelta(minutes=3 * i)
        status = PartStatus.COMPLETE
        if i == 13:
            status = PartStatus.ABORTED
        measurements = {
            # hole 1 drifts +X 1.2 um/part: true position leaves the 0.050 zone after ~part 21
            "probe.hole1_x": 25.0 + 0.0012 * i + rng.gauss(0, 0.001),
            "probe.hole1_y": 40.0 + rng.gauss(0, 0.001),
            "probe.bore_dia": 10.0075 + rng.gauss(0, 0.0015),
        }
        if i == 5:
            measurements["probe.bore_dia"] = 10.0170  # one oversize bore
        if i == 8:
            del measurements["probe.bore_dia"]  # a probe value that never came
        parts.append(
            PartRecord(
                key=f"{machine}/{program}/{end.isoformat()}",
                machine=machine,
                program=program,
                part_number=i,
                start=end - timedelta(seconds=150),
                end=end,
                status=status,
                measurements=measurements,
                tools=(
                    ToolUse("T12", life_start=100.0 + 2 * i, life_end=101.0 + 2 * i, cutting_time=60.0),
                    ToolUse("T3", life_start=500.0 - i, life_end=499.5 - i, cutting_time=20.0),
                ),
                spindle=SpindleStats(mean_load=40.0, peak_load=70.0, cutting_time=80.0),
                counter=i,
            )
        )
    return parts


def _forecast(machine: str, program: str, part: int, state: AlertState, at: datetime, **evidence: object) -> Alert:
    return Alert(
        id=f"{machine}/{program}/hole1_pos/forecast/{14}",
        machine=machine,
        program=program,
        feature="hole1_pos",
        kind=AlertKind.FORECAST,
        severity=Severity.WARNING,
        state=state,
        part_number=part,
        message="hole1_pos drifting +X 1.2 um/part; breaks 0.050 TP tolerance in ~7 parts; suggest X wear offset -0.0168 mm",
        time=at,
        evidence={"parts_to_breach": 7.0, "offset": {"register": "X wear offset", "change_mm": -0.0168}, **evidence},
        part_key=None,
    )


def write_batch(tmp_path: Path, *, program: str = PROGRAM, n: int = 30, seed: int = 7) -> Batch:
    (tmp_path / "programs").mkdir(exist_ok=True)
    (tmp_path / "programs" / "program.yaml").write_text(PROGRAM_YAML.format(name=f"'{program}'"))
    site_file = tmp_path / "site.yaml"
    site_file.write_text("site: cell-3\nstore: {path: monitor.db}\nprograms: programs\n")
    rng = random.Random(seed)
    parts = _parts("vmc-01", program, n, rng)
    opened = _forecast("vmc-01", program, 14, AlertState.OPEN, parts[13].end)
    acked = replace(opened, state=AlertState.ACKNOWLEDGED, time=parts[15].end + timedelta(seconds=30))
    escalated = replace(
        acked,
        severity=Severity.CRITICAL,
        part_number=18,
        time=parts[17].end,
        evidence={**acked.evidence, "offset": {"register": "X wear offset", "change_mm": -0.0204}},
    )
    oot = Alert(
        id=f"vmc-01/{program}/bore_dia/out_of_tolerance/5",
        machine="vmc-01",
        program=program,
        feature="bore_dia",
        kind=AlertKind.OUT_OF_TOLERANCE,
        severity=Severity.CRITICAL,
        state=AlertState.OPEN,
        part_number=5,
        message="bore_dia 10.0170 above upper limit 10.0150",
        time=parts[4].end,
    )
    lost = [
        Alert(
            id=f"vmc-01/-/connection/signal_lost/{n}@{n}",
            machine="vmc-01",
            program="",
            feature="connection",
            kind=AlertKind.SIGNAL_LOST,
            severity=Severity.WARNING,
            state=AlertState.CLOSED,
            part_number=n,
            message="vmc-01: connection restored",
            time=at + timedelta(minutes=1),
            evidence={"last_part_number": n, "lost_at": at.isoformat()},
        )
        for n, at in ((0, T0 - timedelta(days=1)), (9, parts[8].end + timedelta(seconds=20)))
    ]
    alerts_at = {5: [oot], 14: [opened], 18: [escalated]}
    with SqliteStore(tmp_path / "monitor.db") as store:
        for part in parts:
            store.record_part(part, alerts_at.get(part.part_number, []))
            if part.part_number == 16:
                store.record_alerts([acked])
                store.record_action(
                    Action(
                        id="a-1",
                        time=acked.time,
                        kind=ActionKind.ACKNOWLEDGE,
                        machine="vmc-01",
                        program=program,
                        feature="hole1_pos",
                        user="olga",
                        role=Role.OPERATOR,
                        source="dashboard",
                        condition_id=opened.id,
                        part_number=16,
                        comment="re-probed part 16: it is real",
                    )
                )
            if part.part_number == 19:  # an offset recorded by feature (no condition named) while it lived
                store.record_action(
                    Action(
                        id="a-2",
                        time=part.end + timedelta(seconds=40),
                        kind=ActionKind.OFFSET_APPLIED,
                        machine="vmc-01",
                        program=program,
                        feature="hole1_pos",
                        user="eric",
                        role=Role.ENGINEER,
                        source="cli",
                        part_number=19,
                        register=Register(RegisterKind.WORK_OFFSET, "x", -1.0, work_offset="G54"),
                        change=-0.0204,
                    )
                )
        store.record_alerts(lost)  # one long before the batch, one during it
    return Batch(site_file, parts, [oot, opened, acked, escalated])


@pytest.fixture
def batch(tmp_path: Path) -> Batch:
    return write_batch(tmp_path)
