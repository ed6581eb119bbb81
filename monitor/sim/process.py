"""How the two demo part programs are machined: operations, tools and what each tool's wear moves.

The program files (``monitor/sim/programs/*.yaml``) say what is measured and its tolerances, exactly
as a shop would write them for the monitor. This module holds what the program file cannot: the
process behind it (which tool cuts which feature, how long each operation takes, how hard the
spindle works), so the physics in :mod:`monitor.sim.physics` can make plausible data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from monitor.config import ProgramConfig, load_program

__all__ = [
    "PROBE_TOOL_NUMBER",
    "PROCESSES",
    "PROGRAMS_DIR",
    "Operation",
    "ProcessSpec",
    "SizeEffect",
    "load_programs",
]

PROGRAMS_DIR = Path(__file__).resolve().parent / "programs"
"""Packaged part-program files, one per program, named ``<program>.yaml``."""

PROBE_TOOL_NUMBER = 99
"""The touch probe's pocket number; ``tool.number`` shows it while the part is being measured."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One cutting operation: the tool, its share of the cutting time, speed and nominal load.

    ``wear_um_per_part`` is the default edge wear per part (radial for boring tools, axial for
    face mills); a scenario may override it per tool.
    """

    name: str
    tool: str
    tool_number: int
    share: float
    rpm: float
    load_pct: float
    wear_um_per_part: float


@dataclass(frozen=True, slots=True)
class SizeEffect:
    """What moves a size feature: the tool that finishes it and the thermal axis that shifts it.

    ``wear_gain`` is micrometres of feature change per micrometre of edge wear: a bored diameter
    loses twice the radial wear (``-2``); a face milled to length grows by the axial wear (``+1``).
    ``thermal_gain`` multiplies the spindle's growth along ``thermal_axis`` (``-1`` for a length
    cut shorter as the spindle grows toward the part).
    """

    tool: str
    wear_gain: float
    thermal_axis: str | None = None
    thermal_gain: float = 0.0


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """The process of one program: operations in order, then probing of ``probe_signals``."""

    program: str
    title: str
    operations: tuple[Operation, ...]
    probe_signals: tuple[str, ...]
    size_effects: dict[str, SizeEffect] = field(default_factory=dict)
    """Keyed by the size feature's probe signal."""

    def tools(self) -> dict[str, Operation]:
        """Operations keyed by tool id (each tool cuts once per part here)."""
        return {op.tool: op for op in self.operations}


PROCESSES: dict[str, ProcessSpec] = {
    "O1001": ProcessSpec(
        program="O1001",
        title="bracket: two bored 10 H7 holes, positions and diameters probed",
        operations=(
            Operation("face", "T1", 1, share=0.40, rpm=1500.0, load_pct=42.0, wear_um_per_part=0.05),
            Operation("drill", "T5", 5, share=0.25, rpm=2600.0, load_pct=28.0, wear_um_per_part=0.08),
            Operation("bore", "T12", 12, share=0.35, rpm=3200.0, load_pct=14.0, wear_um_per_part=0.12),
        ),
        probe_signals=(
            "probe.hole1_x",
            "probe.hole1_y",
            "probe.hole1_dia",
            "probe.hole2_x",
            "probe.hole2_y",
            "probe.hole2_dia",
        ),
        size_effects={
            "probe.hole1_dia": SizeEffect("T12", wear_gain=-2.0),
            "probe.hole2_dia": SizeEffect("T12", wear_gain=-2.0),
        },
    ),
    "O2002": ProcessSpec(
        program="O2002",
        title="housing: a bored 40 H7 bore and a milled face length",
        operations=(
            Operation("face", "T3", 3, share=0.45, rpm=1100.0, load_pct=48.0, wear_um_per_part=0.06),
            Operation("rough_bore", "T8", 8, share=0.25, rpm=1800.0, load_pct=35.0, wear_um_per_part=0.10),
            Operation("finish_bore", "T7", 7, share=0.30, rpm=1400.0, load_pct=18.0, wear_um_per_part=0.10),
        ),
        probe_signals=("probe.bore_dia", "probe.face_len"),
        size_effects={
            "probe.bore_dia": SizeEffect("T7", wear_gain=-2.0),
            "probe.face_len": SizeEffect("T3", wear_gain=1.0, thermal_axis="z", thermal_gain=1.0),
        },
    ),
}
"""The processes the simulator knows, keyed by program name."""


def load_programs() -> dict[str, ProgramConfig]:
    """The packaged program files, validated by the product's own loader, keyed by program name."""
    return {name: load_program(PROGRAMS_DIR / f"{name}.yaml") for name in PROCESSES}
