"""Offline replay: run the drift engine over a CSV of measurements, as ``monitor analyze`` does.

The CSV has a ``part`` column and one column per probe signal of the program (``probe.hole1_x``
...), rows in production order. Optional columns: ``machine`` (several machines are analysed
separately; names then read ``machine/feature``), ``time`` (ISO 8601, end of the part; otherwise
one part a minute is assumed), and the attribution covariates ``tool_life``, ``spindle_load``
and ``cutting_time``. Other columns are ignored. A row with a missing or non-numeric value in a
column it needs is reported with its line number and skipped; it never stops the run.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.config import ProgramConfig
from monitor.engine import DriftEngine
from monitor.errors import ConfigError, ConfigIssue
from monitor.model import AlertKind, AlertState, PartRecord, PartStatus, SpindleStats, ToolUse

__all__ = ["Analysis", "BadRow", "analyze_csv", "analyze_rows"]

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_COVARIATE_COLUMNS = ("tool_life", "spindle_load", "cutting_time")


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that was skipped, with the 1-based line of the file and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class Analysis:
    """What the replay found: alert events, first out-of-tolerance parts, capability, skipped rows."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    out_of_tolerance: dict[str, int | None] = field(default_factory=dict)
    capability: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)
    parts: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``monitor analyze --json`` prints."""
        return {"alerts": self.alerts, "out_of_tolerance": self.out_of_tolerance, "capability": self.capability}


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    value = float(text)  # ValueError for text
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def analyze_rows(rows: Iterable[tuple[int, dict[str, str | None]]], program: ProgramConfig) -> Analysis:
    """Run the engine over ``(line, row)`` pairs in order; see the module docstring for the columns."""
    engine = DriftEngine({program.program: program})
    signals = program.probe_signals()
    features = [f.name for f in program.feature_models()]
    out = Analysis()
    seen: dict[str, set[int]] = {}
    machines: list[str] = []
    prepared: list[tuple[int, PartRecord]] = []
    for line, row in rows:
        record = _record(line, row, program.program, signals, out.bad_rows)
        if record is None:
            continue
        done = seen.setdefault(record.machine, set())
        if record.part_number in done:
            out.bad_rows.append(BadRow(line, f"part {record.part_number} of {record.machine} appears twice"))
            continue
        done.add(record.part_number)
        if record.machine not in machines:
            machines.append(record.machine)
        prepared.append((line, record))
    several = len(machines) > 1

    def name(machine: str, feature: str) -> str:
        return f"{machine}/{feature}" if several else feature

    for machine in machines:
        for f in features:
            out.out_of_tolerance[name(machine, f)] = None
    for _, record in prepared:
        out.parts += 1
        for alert in engine.process(record):
            if alert.state is AlertState.CLOSED:
                continue
            key = name(alert.machine, alert.feature)
            if alert.kind is AlertKind.OUT_OF_TOLERANCE and out.out_of_tolerance.get(key) is None:
                out.out_of_tolerance[key] = record.part_number
            ev = alert.evidence
            interval = ev.get("breach_interval")
            out.alerts.append(
                {
                    "part": record.part_number,
                    "feature": key,
                    "kind": str(alert.kind),
                    "severity": str(alert.severity),
                    "message": alert.message,
                    "parts_to_breach": ev.get("parts_to_breach"),
                    "breach_interval": list(interval) if interval else None,
                }
            )
    for machine in machines:
        for f in features:
            cap = engine.feature_view(machine, program.program, f)["capability"] or {}
            out.capability[name(machine, f)] = {k: cap.get(k) for k in ("cp", "cpk", "ppk", "cp_ci", "cpk_ci", "ppk_ci", "n")}
    return out


def _record(line: int, row: dict[str, str | None], program: str, signals: list[str], bad: list[BadRow]) -> PartRecord | None:
    try:
        part_text = (row.get("part") or "").strip()
        if not part_text:
            bad.append(BadRow(line, "missing value in column part"))
            return None
        part = float(part_text)
        if not part.is_integer():
            raise ValueError(part_text)
        number = int(part)
    except ValueError:
        bad.append(BadRow(line, f"part {row.get('part')!r} is not a whole number"))
        return None
    measurements: dict[str, float] = {}
    for signal in signals:
        try:
            value = _number(row.get(signal))
        except ValueError:
            bad.append(BadRow(line, f"{row.get(signal)!r} in column {signal} is not a number"))
            return None
        if value is None:
            bad.append(BadRow(line, f"missing value in column {signal}"))
            return None
        measurements[signal] = value
    context: dict[str, float | None] = {}
    for column in _COVARIATE_COLUMNS:
        try:
            context[column] = _number(row.get(column))
        except ValueError:
            bad.append(BadRow(line, f"{row.get(column)!r} in column {column} is not a number"))
            return None
    when = row.get("time")
    if when and when.strip():
        try:
            end = datetime.fromisoformat(when.strip())
        except ValueError:
            bad.append(BadRow(line, f"{when!r} in column time is not an ISO 8601 time"))
            return None
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
    else:
        end = _EPOCH + timedelta(minutes=number)
    machine = (row.get("machine") or "").strip() or "csv"
    tools = (ToolUse("tool", None, context["tool_life"], 0.0),) if context["tool_life"] is not None else ()
    spindle = SpindleStats(context["spindle_load"], None, context["cutting_time"] or 0.0)
    return PartRecord(
        f"{machine}/{program}/{number}",
        machine,
        program,
        number,
        end,
        end,
        PartStatus.COMPLETE,
        measurements,
        tools=tools,
        spindle=spindle,
    )


def _read(path: Path, signals: list[str]) -> Iterator[tuple[int, dict[str, str | None]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in ["part", *signals] if c not in header]
        if missing:
            raise ConfigError(
                [
                    ConfigIssue(str(path), 1, c, "column missing; the program needs part and " + ", ".join(signals))
                    for c in missing
                ]
            )
        for row in reader:
            yield reader.line_num, row


def analyze_csv(path: Path, program: ProgramConfig) -> Analysis:
    """Replay a measurements CSV through the engine; raises ConfigError when a needed column is missing."""
    try:
        return analyze_rows(_read(path, program.probe_signals()), program)
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read the file: {exc.strerror or exc}")]) from exc
    except csv.Error as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"not a readable CSV file: {exc}")]) from exc
