"""Hand-built observation streams shared by the tracker, pipeline and daemon tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.codec import observation_to_dict
from monitor.model import Observation, Value

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)

PROGRAM_YAML = """\
program: O1001
part_end: part_count
features:
  hole1_dia:
    kind: size
    signal: probe.hole1_dia
    nominal: 10.0
    lower: 9.99
    upper: 10.01
  hole1_pos:
    kind: position
    x: {signal: probe.hole1_x, nominal: 25.0}
    y: {signal: probe.hole1_y, nominal: 40.0}
    tolerance: 0.05
"""


def obs(t: float, signal: str, value: Value, machine: str = "m1") -> Observation:
    return Observation(machine, signal, T0 + timedelta(seconds=t), value)


def cycle(t0: float, count: int, *, dia: Value = 10.001, machine: str = "m1") -> list[Observation]:
    """One cycle of program O1001 that ends with the part counter moving to ``count``."""

    def o(t: float, s: str, v: Value) -> Observation:
        return obs(t0 + t, s, v, machine)

    return [
        o(0, "execution", "ACTIVE"),
        o(0.5, "tool.number", 12),
        o(0.6, "tool.life", 100.0 + count),
        o(1, "spindle.speed", 8000),
        o(1, "spindle.load", 40.0),
        o(2, "spindle.load", 50.0),
        o(4, "spindle.speed", 0),
        o(5, "probe.hole1_dia", dia),
        o(5.1, "probe.hole1_x", 25.002),
        o(5.2, "probe.hole1_y", 39.999),
        o(6, "part.count", count),
        o(6.5, "execution", "READY"),
    ]


def batch(
    parts: int, *, machine: str = "m1", start_count: int = 0, oot_at: int | None = None, t0: float = 0.0
) -> list[Observation]:
    """``parts`` cycles of O1001, 20 s apart from ``t0``, the counter moving from ``start_count``."""
    stream = [obs(t0 - 10, "program.name", "O1001", machine), obs(t0 - 10, "part.count", start_count, machine)]
    for i in range(1, parts + 1):
        stream += cycle(t0 + i * 20.0, start_count + i, dia=10.02 if i == oot_at else 10.001, machine=machine)
    return stream


def write_jsonl(path: Path, stream: list[Observation], extra_lines: list[str] = ()) -> Path:  # type: ignore[assignment]
    lines = [json.dumps(observation_to_dict(o)) for o in stream]
    lines[len(lines) // 2 : len(lines) // 2] = list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_site(tmp: Path, replay: Path, *, dashboard: bool = False, log_format: str = "text") -> Path:
    (tmp / "programs").mkdir(exist_ok=True)
    (tmp / "programs" / "o1001.yaml").write_text(PROGRAM_YAML, encoding="utf-8")
    site = tmp / "site.yaml"
    site.write_text(
        f"""\
site: test-cell
store: {{path: monitor.db}}
programs: programs
log_format: {log_format}
dashboard: {{enabled: {str(dashboard).lower()}, port: 0}}
machines:
  - id: m1
    source: {{type: replay, path: "{replay}"}}
    tracking: {{grace_s: 1.0}}
""",
        encoding="utf-8",
    )
    return site
