"""One feature of one program on one machine: its history, its detectors and what they signal.

:class:`WatchPlan` is built once per program feature when the engine starts (limits solved from
the ARL target there); :class:`FeatureWatch` is the per-machine running state. The watch turns
a part into deviations (per axis for position features), feeds the detectors and answers, per
alert kind, "signalling now, with what severity and message" or "quiet". The engine's alert book
decides what that means for open alerts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.detect.config import DetectionConfig
from monitor.model import AlertKind, Feature, PartRecord, PositionFeature, Severity, SizeFeature

if TYPE_CHECKING:
    from monitor.config import ProgramConfig

__all__ = ["FeatureWatch", "Outcome", "Signal", "WatchPlan"]


@dataclass(frozen=True, slots=True)
class Signal:
    """A detector kind signalling on this part: how bad, one line for people, numbers for machines."""

    severity: Severity
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one part did to one watch: skipped (with the counter name) or a signal map per kind."""

    skipped: str | None = None
    signals: Mapping[AlertKind, Signal | None] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchPlan:
    """The fixed part of a watch: feature, settings and the limits solved at load."""

    program: str
    feature: Feature
    config: DetectionConfig

    @classmethod
    def for_program(cls, program: ProgramConfig) -> list[WatchPlan]:
        return [cls(program.program, f, program.detection) for f in program.feature_models()]

    @property
    def axes(self) -> tuple[str, ...]:
        if isinstance(self.feature, PositionFeature):
            return tuple(name for name, _ in self.feature.axes)
        return ("value",)

    def limits(self) -> dict[str, Any]:
        f = self.feature
        if isinstance(f, SizeFeature):
            return {"kind": "size", "nominal": f.nominal, "lower": f.lower, "upper": f.upper}
        return {"kind": "position", "nominal": 0.0, "lower": None, "upper": f.tolerance, "tolerance": f.tolerance}


def _fmt_mm(x: float) -> str:
    return f"{x:+.4f}".rstrip("0").rstrip(".") if abs(x) >= 1e-4 else "0"


class FeatureWatch:
    """Running state of one feature on one machine; see the module docstring."""

    def __init__(self, plan: WatchPlan) -> None:
        self.plan = plan
        self._parts: deque[dict[str, Any]] = deque(maxlen=plan.config.history)
        self._keys: deque[str] = deque(maxlen=64)

    # ------------------------------------------------------------------------------ inputs
    def _read(self, part: PartRecord) -> tuple[float, dict[str, float]] | str:
        """(judged value, deviation per axis) or the name of the counter to bump."""
        f = self.plan.feature
        devs: dict[str, float] = {}
        if isinstance(f, SizeFeature):
            raw = part.measurements.get(f.signal)
            if raw is None:
                return "missing_measurement"
            if not isinstance(raw, (int, float)) or not math.isfinite(raw):
                return "nonfinite_measurement"
            devs["value"] = float(raw) - f.nominal
            return float(raw), devs
        for name, axis in f.axes:
            raw = part.measurements.get(axis.signal)
            if raw is None:
                return "missing_measurement"
            if not isinstance(raw, (int, float)) or not math.isfinite(raw):
                return "nonfinite_measurement"
            devs[name] = float(raw) - axis.nominal
        tp = 2.0 * math.sqrt(sum(d * d for d in devs.values()))
        return tp, devs

    def _out_of_tolerance(self, value: float) -> bool:
        f = self.plan.feature
        if isinstance(f, SizeFeature):
            return value < f.lower or value > f.upper
        return value > f.tolerance

    # ------------------------------------------------------------------------------ update
    def update(self, part: PartRecord) -> Outcome:
        if part.key in self._keys:
            return Outcome(skipped="duplicate_part")
        read = self._read(part)
        if isinstance(read, str):
            return Outcome(skipped=read)
        value, devs = read
        self._keys.append(part.key)
        self._parts.append({"part_number": part.part_number, "value": value, "deviation": devs})
        signals: dict[AlertKind, Signal | None] = {AlertKind.OUT_OF_TOLERANCE: self._oot_signal(value, devs)}
        return Outcome(signals=signals)

    def _oot_signal(self, value: float, devs: dict[str, float]) -> Signal | None:
        if not self._out_of_tolerance(value):
            return None
        f = self.plan.feature
        if isinstance(f, SizeFeature):
            side, limit = ("above upper", f.upper) if value > f.upper else ("below lower", f.lower)
            msg = f"{f.name} out of tolerance: {value:.4f} mm {side} limit {limit:.4f} (nominal {f.nominal:.4f})"
            ev: dict[str, Any] = {"value": value, "deviation": devs["value"], "lower": f.lower, "upper": f.upper}
        else:
            axes = ", ".join(f"{a.upper()} {_fmt_mm(d)}" for a, d in devs.items())
            msg = f"{f.name} out of tolerance: true position {value:.4f} exceeds {f.tolerance:.3f} ({axes} mm)"
            ev = {"true_position": value, "tolerance": f.tolerance, "deviation": dict(devs)}
        return Signal(Severity.CRITICAL, msg, ev)

    # ------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {"parts": list(self._parts), "keys": list(self._keys)}

    @classmethod
    def from_state(cls, plan: WatchPlan, state: Mapping[str, Any]) -> FeatureWatch:
        watch = cls(plan)
        for p in state.get("parts", []):
            watch._parts.append(
                {"part_number": int(p["part_number"]), "value": float(p["value"]),
                 "deviation": {k: float(v) for k, v in p["deviation"].items()}}
            )
        watch._keys.extend(str(k) for k in state.get("keys", []))
        return watch

    # ------------------------------------------------------------------------------ view
    def view(self) -> dict[str, Any]:
        f = self.plan.feature
        return {
            "program": self.plan.program,
            "feature": f.name,
            "kind": "size" if isinstance(f, SizeFeature) else "position",
            "values": [
                {"part_number": p["part_number"], "value": p["value"],
                 "deviation": p["deviation"]["value"] if isinstance(f, SizeFeature) else p["value"],
                 "axes": dict(p["deviation"])}
                for p in self._parts
            ],
            "limits": self.plan.limits(),
            "nominal": f.nominal if isinstance(f, SizeFeature) else 0.0,
            "control_limits": None,
            "forecast": None,
            "capability": None,
        }
