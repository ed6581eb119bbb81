"""Which controller register corrects a feature, by machine kind, and how advice names it.

A drifting feature is corrected on the control by changing one register: a work offset axis (G54
X/Y/Z), a mill tool's length (H) or cutter (D) wear, or a lathe tool's X/Z wear. Which one depends
on the machine (a hole position on a vertical machining centre is not corrected by a lathe's "X
wear") and on the feature (a bore, an outside diameter, a face length). The defaults here are the
common cases; a program file's ``offset:`` on a feature names the register, the tool and, where the
geometry is unusual, the factor (see configs/README.md).

| machine kind | position | size: inside (bore) | size: outside | size: length |
|---|---|---|---|---|
| mill | work offset X/Y(/Z) | tool D-wear (diameter) | tool D-wear (diameter) | tool H-wear |
| lathe | work offset X/Y(/Z) | tool X-wear | tool X-wear | tool Z-wear |
| mill-turn | work offset X/Y(/Z) | tool X-wear | tool X-wear | tool Z-wear |

Factors (register change per mm of deviation): work offset -1; H-wear and Z-wear -1 (a length that
grows when the tool stays back: a face height, a shoulder length); D-wear +1 on a bore and -1 on a
boss (diameter convention), +-0.5 in the radius convention; lathe X-wear -1 (diameter programming)
for outside and inside diameters alike.

>>> from monitor.model import SizeFeature
>>> bore = SizeFeature("bore", "probe.bore", 40.0125, 40.0, 40.025)
>>> regs = registers_for(bore, "mill", form="inside", tool="T12")
>>> advice_text(advise(regs, {"value": 0.004}))
'T12 D-wear +0.004 mm'
>>> from monitor.model import AxisRef, PositionFeature
>>> hole = PositionFeature("hole", AxisRef("probe.x", 25.0), AxisRef("probe.y", 40.0), 0.05)
>>> advice_text(advise(registers_for(hole, "mill"), {"x": 0.019, "y": -0.003}))
'G54 X -0.019 Y +0.003 mm'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from monitor.model import Feature, PositionFeature, Register, RegisterKind

__all__ = [
    "MACHINE_KINDS",
    "SIZE_FORMS",
    "MachineKind",
    "OffsetChange",
    "SharedFeature",
    "SharedRegister",
    "SizeForm",
    "advice_text",
    "advise",
    "check_register",
    "default_form",
    "default_register_kind",
    "format_mm",
    "registers_for",
    "same_register",
    "share_register",
]

MachineKind = Literal["mill", "lathe", "mill-turn"]
MACHINE_KINDS: tuple[str, ...] = ("mill", "lathe", "mill-turn")
SizeForm = Literal["inside", "outside", "length"]
SIZE_FORMS: tuple[str, ...] = ("inside", "outside", "length")

_FACTORS: dict[tuple[RegisterKind, str], float] = {
    (RegisterKind.WORK_OFFSET, "position"): -1.0,
    (RegisterKind.WORK_OFFSET, "length"): -1.0,
    (RegisterKind.TOOL_LENGTH_WEAR, "length"): -1.0,
    (RegisterKind.TOOL_RADIUS_WEAR, "inside"): 0.5,
    (RegisterKind.TOOL_RADIUS_WEAR, "outside"): -0.5,
    (RegisterKind.TOOL_DIAMETER_WEAR, "inside"): 1.0,
    (RegisterKind.TOOL_DIAMETER_WEAR, "outside"): -1.0,
    (RegisterKind.LATHE_X_WEAR, "inside"): -1.0,
    (RegisterKind.LATHE_X_WEAR, "outside"): -1.0,
    (RegisterKind.LATHE_X_WEAR, "position"): -1.0,
    (RegisterKind.LATHE_Z_WEAR, "length"): -1.0,
    (RegisterKind.LATHE_Z_WEAR, "position"): -1.0,
}
"""Register change per mm of deviation, by register and what it corrects; pairs not listed cannot
correct that feature (a work offset does not change a diameter)."""


def default_form(machine_kind: str) -> SizeForm:
    """The form of a size feature that does not declare one: a bore on a mill, an outside diameter
    on a lathe (the most common probed size on each)."""
    return "inside" if machine_kind == "mill" else "outside"


def default_register_kind(machine_kind: str, feature_kind: str, form: str | None) -> RegisterKind:
    """The register that corrects a ``feature_kind`` ("position" or "size") feature on a machine of
    ``machine_kind``, for the common cases (see the module's table)."""
    if feature_kind == "position":
        return RegisterKind.WORK_OFFSET
    form = form or default_form(machine_kind)
    if machine_kind == "mill":
        return RegisterKind.TOOL_LENGTH_WEAR if form == "length" else RegisterKind.TOOL_DIAMETER_WEAR
    return RegisterKind.LATHE_Z_WEAR if form == "length" else RegisterKind.LATHE_X_WEAR


def check_register(kind: RegisterKind, feature_kind: str, form: str | None) -> str | None:
    """Why ``kind`` cannot correct such a feature (None when it can): for config validation."""
    what = "position" if feature_kind == "position" else form
    if what is None:
        return None  # the form comes from the machine kind; checked when registers are resolved
    if (kind, what) in _FACTORS:
        return None
    fits = sorted({str(k) for (k, w) in _FACTORS if w == what})
    noun = "a position" if what == "position" else f"a size of form {what}"
    return f"{kind} does not correct {noun}; use one of {', '.join(fits)} (or give factor:)"


def registers_for(
    feature: Feature,
    machine_kind: str,
    *,
    form: str | None = None,
    register: RegisterKind | None = None,
    tool: str | None = None,
    work_offset: str | None = None,
    axis: str | None = None,
    factor: float | None = None,
) -> dict[str, Register]:
    """The register of every axis of ``feature`` ("value" for a size), keyed as detection names axes."""
    if isinstance(feature, PositionFeature):
        kind = register or default_register_kind(machine_kind, "position", None)
        f = factor if factor is not None else _FACTORS.get((kind, "position"), -1.0)
        wo = (work_offset or "G54") if kind is RegisterKind.WORK_OFFSET else None
        return {name: Register(kind, name, f, tool, wo) for name, _ in feature.axes}
    form = form or default_form(machine_kind)
    kind = register or default_register_kind(machine_kind, "size", form)
    f = factor if factor is not None else _FACTORS.get((kind, form), -1.0)
    reg_axis = axis or ("z" if form == "length" else "x")
    wo = (work_offset or "G54") if kind is RegisterKind.WORK_OFFSET else None
    return {"value": Register(kind, reg_axis, f, tool, wo)}


@dataclass(frozen=True, slots=True)
class OffsetChange:
    """Advice for one register: change it by ``change`` mm to correct ``deviation`` mm of its axis."""

    register: Register
    change: float
    deviation: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "register": self.register.as_dict(),
            "label": self.register.label,
            "change_mm": self.change,
            "deviation_mm": self.deviation,
        }


def advise(registers: Mapping[str, Register], deviations: Mapping[str, float]) -> list[OffsetChange]:
    """The change of each register whose axis has a deviation (axes without one are left alone)."""
    out = []
    for axis, dev in deviations.items():
        reg = registers.get(axis)
        if reg is not None:
            out.append(OffsetChange(reg, reg.change_for(dev), dev))
    return out


def format_mm(value: float) -> str:
    """Signed, to the micrometre (0.1 um where it matters): +0.004, -0.0195."""
    text = f"{value:+.4f}"
    return text[:-1] if text.endswith("0") else text


def advice_text(changes: list[OffsetChange]) -> str:
    """How a machinist reads the advice: "G54 X -0.019 Y +0.003 mm", "T12 D-wear +0.004 mm"; the
    axes of one work offset are written together."""
    if not changes:
        return ""
    pieces: list[str] = []
    groups: dict[str, list[str]] = {}
    for c in changes:
        reg = c.register
        if reg.kind is RegisterKind.WORK_OFFSET:
            name = reg.work_offset or "G54"
            if name not in groups:
                groups[name] = []
                pieces.append(name)
            groups[name].append(f"{reg.axis.upper()} {format_mm(c.change)}")
        else:
            pieces.append(f"{reg.label} {format_mm(c.change)}")
    return ", ".join(f"{p} {' '.join(groups[p])}" if p in groups else p for p in pieces) + " mm"


def same_register(a: Register, b: Register) -> bool:
    """One register of the control: same kind and axis, same work offset or tool (the factor is the
    feature's: G54 X is one register for two holes)."""
    return (a.kind, a.axis, a.work_offset or "", a.tool or "") == (b.kind, b.axis, b.work_offset or "", b.tool or "")


@dataclass(frozen=True, slots=True)
class SharedFeature:
    """Another feature one register corrects too: its register entry (its factor), its fitted
    deviation from nominal on that register's axis (mm), and whether that deviation is a real one
    (beyond its uncertainty: the feature asks for a change of its own)."""

    feature: str
    register: Register
    deviation: float
    significant: bool

    @property
    def want(self) -> float:
        """The register change that alone would re-centre this feature."""
        return self.register.change_for(self.deviation)


@dataclass(frozen=True, slots=True)
class SharedRegister:
    """What the advice for a shared register became: the change to advise (None: none, the features
    disagree), what the feature alone would want, the others and why, in a machinist's words."""

    register: str
    change: float | None
    alone: float
    others: tuple[SharedFeature, ...]
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "register": self.register,
            "change_mm": self.change,
            "alone_mm": self.alone,
            "features": {o.feature: o.deviation for o in self.others},
            "note": self.note,
        }


def _extremes(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points that can be the worst, ``max |w - c| / f``, for any ``c``: per factor ``f`` the
    smallest and the largest ``w`` (a rounded ``w - c`` grows with ``w``, so the largest ``|w - c|``
    of a group is at one of its ends: the same double as over all points). All of them if a value
    is not finite."""
    if not all(math.isfinite(w) for w, _ in points):
        return points
    ends: dict[float, tuple[float, float]] = {}
    for w, f in points:
        lo_hi = ends.get(f)
        ends[f] = (w, w) if lo_hi is None else (min(lo_hi[0], w), max(lo_hi[1], w))
    return [(w, f) for f, (lo, hi) in ends.items() for w in ((lo,) if lo == hi else (lo, hi))]


def _centre(points: list[tuple[float, float]]) -> float | None:
    """Where ``max |w - c| / f`` is least, in closed form, when that gives what the ternary search
    over ``[min w, max w]`` gives after rounding to the micrometre: None to search instead.

    The least worst deviation is ``t = max (w_j - w_i) / (f_i + f_j)`` over the pairs ``w_i <= w_j``,
    at ``c = w_i + f_i t`` of the pair that gives it. Eighty ternary steps leave the search within
    ``(2/3)^80`` (1e-14) of the range from ``c``, so both round to the same micrometre unless ``c``
    lies within 1e-10 mm of a rounding boundary, or a value is not finite: then the search decides."""
    if not all(math.isfinite(w) for w, _ in points):
        return None
    best, centre = -1.0, points[0][0]
    for wi, fi in points:
        for wj, fj in points:
            if wi < wj:
                t = (wj - wi) / (fi + fj)
                if t > best:
                    best, centre = t, wi + fi * t
    micrometres = centre * 1e6
    if not math.isfinite(micrometres) or abs(micrometres - math.floor(micrometres) - 0.5) < 1e-4:
        return None
    return centre


def _worst(points: list[tuple[float, float]], c: float) -> float:
    """``max(abs(w - c) / f for w, f in points)``, as ``max`` finds it (the first of equals; a later
    value replaces it only when greater), without a generator: the ternary search calls it 160 times."""
    w, f = points[0]
    worst = abs(w - c) / f
    for w, f in points[1:]:
        v = abs(w - c) / f
        if v > worst:
            worst = v
    return worst


_SHARED_SAME = (0.001, 0.1)
"""A combined change within 1 um or 10 % of the feature's own is the feature's own (features that agree)."""


def share_register(feature: str, change: OffsetChange, others: Sequence[SharedFeature]) -> SharedRegister | None:
    """The advice for a register that also moves ``others`` (G54 X moves every hole of the setup, one
    tool's D-wear every bore it cuts): None when it moves no other feature or they agree with
    ``change``. When a feature that needs a change of its own needs it the other way, no change is
    advised: one register cannot correct both, something moved one against the other (a loose
    clamp, the fixture, a second tool). Otherwise the change that leaves the worst of them
    closest to nominal (the mid-range of their deviations, in register units), and why.

    >>> from monitor.model import RegisterKind
    >>> g54x = Register(RegisterKind.WORK_OFFSET, "x", -1.0, None, "G54")
    >>> mine = OffsetChange(g54x, -0.030, 0.030)
    >>> share_register("hole1", mine, [SharedFeature("hole2", g54x, 0.0, False)]).change
    -0.015
    >>> share_register("hole1", mine, [SharedFeature("hole2", g54x, -0.012, True)]).change is None
    True
    >>> share_register("hole1", mine, [SharedFeature("hole2", g54x, 0.0302, True)]) is None
    True
    """
    if not others:
        return None
    label = change.register.label
    alone = change.change
    against = [o for o in others if o.significant and o.want * alone < 0]
    if against:
        wants = ", ".join(f"{o.feature} needs {format_mm(o.want)} mm" for o in against)
        note = (
            f"{label} not advised: {feature} needs {format_mm(alone)} mm but {label} also moves "
            f"{', '.join(o.feature for o in others)} and {wants}: one register cannot correct both; find what "
            "moved one against the other (clamping, the fixture, a second tool) or give each its own offset"
        )
        return SharedRegister(label, None, alone, tuple(others), note)
    # minimise the largest |deviation after the change| = |want - change| / |factor| over the features
    points = [(alone, abs(change.register.factor) or 1.0)] + [(o.want, abs(o.register.factor) or 1.0) for o in others]
    lo, hi = min(w for w, _ in points), max(w for w, _ in points)
    ends = _extremes(points)
    centre = _centre(ends)
    if centre is not None:
        combined = round(centre, 6)
    else:
        for _ in range(80):  # a convex function of one variable: ternary search
            a, b = lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0
            if _worst(ends, a) <= _worst(ends, b):
                hi = b
            else:
                lo = a
        combined = round((lo + hi) / 2.0, 6)
    if abs(combined - alone) <= max(_SHARED_SAME[0], _SHARED_SAME[1] * abs(alone)):
        return None
    moved = ", ".join(f"{o.feature} at {o.deviation * 1000:+.1f} um" for o in others)
    worst = max(abs(w - combined) / f for w, f in points)
    note = (
        f"{format_mm(combined)} mm rather than the {format_mm(alone)} mm {feature} alone needs: {label} also moves "
        f"{moved}, and this leaves each within {worst * 1000:.1f} um of nominal"
    )
    return SharedRegister(label, combined, alone, tuple(others), note)
