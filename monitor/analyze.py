"""Offline replay: run the drift engine over measurements, as ``monitor analyze`` does.

:func:`analyze` is the stable Python API for notebooks (rows as mappings, e.g. a pandas
``DataFrame.to_dict("records")``); :func:`analyze_csv` reads a CSV file. Rows have a ``part``
column and one column per probe signal of the program (``probe.hole1_x`` ...), in production
order. Optional columns: ``machine`` (several machines are analysed separately; names then read
``machine/feature``), ``time`` (ISO 8601, end of the part; otherwise one part a minute is
assumed), and the attribution covariates ``tool_life``, ``spindle_load`` and ``cutting_time``.
Other columns are ignored. A row with a missing or non-numeric value in a column it needs is
reported with its line number and skipped; it never stops the run. Recorded offset changes are
passed as ``steps``: the parts from which each feature's level was changed on purpose, so the
trend models expect a step there instead of taking it for a drift.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.config import ProgramConfig, load_program
from monitor.engine import DriftEngine
from monitor.errors import ConfigError, ConfigIssue
from monitor.model import AlertState, PartRecord, PartStatus, SpindleStats, ToolUse
from monitor.report import feature_capability

__all__ = ["Analysis", "BadRow", "analyze", "analyze_csv", "analyze_rows"]

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
    """What the replay found: alert events, first out-of-tolerance parts, capability, the latest
    evidence per feature, skipped rows."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    out_of_tolerance: dict[str, int | None] = field(default_factory=dict)
    capability: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)
    parts: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``monitor analyze --json`` prints (see :func:`analyze`)."""
        return {
            "alerts": self.alerts,
            "out_of_tolerance": self.out_of_tolerance,
            "capability": self.capability,
            "features": self.features,
            "skipped_rows": [{"line": b.line, "reason": b.reason} for b in self.bad_rows],
        }


Cell = str | float | int | None
"""A value of a row: CSV text, or a number (notebooks)."""


def _number(value: Cell) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(str(value))
    number = float(value)  # ValueError for text
    if math.isnan(number) and not isinstance(value, str):
        return None  # a pandas gap
    if not math.isfinite(number):
        raise ValueError(str(value))
    return number


def analyze(
    rows: Iterable[Mapping[str, Cell]],
    program: ProgramConfig | str | Path,
    *,
    steps: Mapping[str, Iterable[int]] | None = None,
) -> dict[str, Any]:
    """Replay measured parts through the daemon's detectors; returns what ``monitor analyze --json``
    prints. This is the stable offline API (docs/detection.md shows it in use).

    ``rows``: mappings with ``part`` and one key per probe signal of the program (text or numbers,
    production order; see the module docstring for optional keys). ``program``: a
    :class:`~monitor.config.ProgramConfig` or the path of a program file. ``steps``: per feature,
    the part numbers from which a recorded offset change took effect.

    The result: ``alerts`` (every change of a feature's condition that is not its return to ok: it
    opened, changed level, or another detector joined its evidence; part, feature, kind (the
    strongest evidence), condition, severity, message (ending with the advice), parts_to_breach,
    breach_interval, evidence), ``out_of_tolerance`` (first bad part
    per feature or None), ``capability`` (per feature: Cp, Cpk, Pp, Ppk with 95% intervals, normality and
    stability, as :func:`monitor.detect.capability.capability` computes them for every screen),
    ``features`` (the latest evidence per feature: model, drift odds, forecast, offsets) and
    ``skipped_rows`` (line, reason). Raises ConfigError for a bad program file or an unknown
    feature in ``steps``.
    """
    prog = program if isinstance(program, ProgramConfig) else load_program(Path(program))
    return analyze_rows(enumerate(rows, start=2), prog, steps=steps).as_dict()


def analyze_rows(
    rows: Iterable[tuple[int, Mapping[str, Cell]]],
    program: ProgramConfig,
    *,
    steps: Mapping[str, Iterable[int]] | None = None,
) -> Analysis:
    """Run the engine over ``(line, row)`` pairs in order; see the module docstring for the columns."""
    engine = DriftEngine({program.program: program})
    known = {f: {int(p) for p in parts} for f, parts in (steps or {}).items()}
    unknown = sorted(set(known) - {f.name for f in program.feature_models()})
    if unknown:
        raise ConfigError([ConfigIssue("steps", None, f, f"program {program.program} has no such feature") for f in unknown])
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
    signalling: dict[str, set[str]] = {}  # per feature, the detectors signalling at its last change
    for _, record in prepared:
        out.parts += 1
        for feature, parts in known.items():
            if record.part_number in parts:
                engine.record_step(record.machine, program.program, feature)
        assessment = engine.assess(record)
        for feature, evidence in assessment.evidence.items():
            out.features[name(record.machine, feature)] = evidence.as_dict()
            key = name(record.machine, feature)
            if evidence.out_of_tolerance and out.out_of_tolerance.get(key) is None:
                out.out_of_tolerance[key] = record.part_number
        for alert in [*assessment.alerts, *assessment.refreshed]:
            key = name(alert.machine, alert.feature)
            kinds = set(alert.evidence.get("signals", {}))
            new_evidence = kinds - signalling.get(key, set())
            signalling[key] = kinds
            if alert.state is AlertState.CLOSED or not kinds or (alert in assessment.refreshed and not new_evidence):
                continue  # back to ok, recovering (no signal), or the same evidence as before
            ev = alert.evidence
            interval = ev.get("breach_interval")
            out.alerts.append(
                {
                    "part": record.part_number,
                    "feature": key,
                    "kind": str(alert.kind),
                    "condition": str(alert.condition) if alert.condition is not None else None,
                    "severity": str(alert.severity),
                    "message": alert.message,
                    "parts_to_breach": ev.get("parts_to_breach"),
                    "breach_interval": list(interval) if interval else None,
                    "evidence": ev,
                }
            )
    for machine in machines:
        records = [r for _, r in prepared if r.machine == machine]
        for model in program.feature_models():
            cap = feature_capability(model, records)
            out.capability[name(machine, model.name)] = cap.as_dict() if cap is not None else {"n": 0}
    return out


def _record(line: int, row: Mapping[str, Cell], program: str, signals: list[str], bad: list[BadRow]) -> PartRecord | None:
    try:
        part = _number(row.get("part"))
        if part is None:
            bad.append(BadRow(line, "missing value in column part"))
            return None
        if not part.is_integer():
            raise ValueError(str(part))
        number = int(part)
    except (ValueError, TypeError):
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
    if isinstance(when, datetime):
        end = when
    elif isinstance(when, str) and when.strip():
        try:
            end = datetime.fromisoformat(when.strip())
        except ValueError:
            bad.append(BadRow(line, f"{when!r} in column time is not an ISO 8601 time"))
            return None
    else:
        end = _EPOCH + timedelta(minutes=number)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    machine = str(row.get("machine") or "").strip() or "csv"
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


def analyze_csv(path: Path, program: ProgramConfig, *, steps: Mapping[str, Iterable[int]] | None = None) -> Analysis:
    """Replay a measurements CSV through the engine; raises ConfigError when a needed column is missing."""
    try:
        return analyze_rows(_read(path, program.probe_signals()), program, steps=steps)
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read the file: {exc.strerror or exc}")]) from exc
    except csv.Error as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"not a readable CSV file: {exc}")]) from exc
