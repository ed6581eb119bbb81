"""The simulated machines obey their offset registers: a changed register moves the parts cut after it.

The cell's physics (:mod:`monitor.sim.physics`) is computed ahead, as if nobody ever touched the
control. :class:`ClosedLoop` sits between the cell's event stream and the OPC UA simulator: when a
machine starts a part (``execution`` goes ACTIVE) it takes the registers' values as they are then,
and every probe value of that part moves by what those registers changed since the batch began.
A register's effect on a feature axis is the one the advice assumes (``Register.shift_for``:
``-change / factor``), so applying the advice re-centres the feature, as it would on a real control
whose offsets work as monitor/registers.py says.

:meth:`ClosedLoop.out_of_tolerance` counts the cell's parts out of tolerance with the shifts each part
really got, beside :meth:`ClosedLoop.out_of_tolerance_without` (the cell as computed): the demo's
"parts out of tolerance: without the loop N, with it M".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from monitor.config import PositionFeatureConfig, ProgramConfig, SizeFeatureConfig
from monitor.sim.cell import SimCell, SimEvent, feature_out_of_tolerance
from monitor.sim.opcua_server import OpcUaSimServer, register_path
from monitor.sim.physics import SimPart

__all__ = ["ClosedLoop", "Effect", "effects_for"]


@dataclass(frozen=True, slots=True)
class Effect:
    """A register of a machine moves a probe signal by ``gain`` mm per mm the register changes."""

    register: str
    signal: str
    gain: float


def effects_for(programs: Mapping[str, ProgramConfig], machine_kind: str = "mill") -> list[Effect]:
    """What each register does to each probe signal of ``programs`` on a machine of ``machine_kind``,
    from the registers the program files name for their features (the advice's own registers)."""
    out: dict[tuple[str, str], Effect] = {}
    for config in programs.values():
        for name, feature in config.features.items():
            if not isinstance(feature, (SizeFeatureConfig, PositionFeatureConfig)):
                continue  # angles, one-sided and attribute features: no offset register moves them here
            registers = config.registers(name, machine_kind)
            for axis, reg in registers.items():
                signal = _signal(feature, axis)
                if signal is None or not reg.factor:
                    continue
                wo_axis = reg.axis if str(reg.kind) == "work_offset" else None
                try:
                    path = register_path(str(reg.kind), tool=reg.tool, work_offset=reg.work_offset, axis=wo_axis)
                except ValueError:
                    continue  # a tool register without a tool: the simulator cannot know which tool
                out[(path, signal)] = Effect(path, signal, -1.0 / reg.factor)
    return list(out.values())


def _signal(feature: SizeFeatureConfig | PositionFeatureConfig, axis: str) -> str | None:
    if isinstance(feature, SizeFeatureConfig):
        return feature.signal
    ref = {"x": feature.x, "y": feature.y, "z": feature.z}.get(axis)
    return ref.signal if ref is not None else None


@dataclass(slots=True)
class _Machine:
    effects: dict[str, list[Effect]]
    base: dict[str, float] = field(default_factory=dict)
    latched: dict[str, float] = field(default_factory=dict)
    shifts_by_start: dict[datetime, dict[str, float]] = field(default_factory=dict)


class ClosedLoop:
    """Publishes a cell's events into the OPC UA simulator, moving probe values by the registers.

    ``effects`` per machine id; the registers' values when the loop is built are the baseline.
    Use :meth:`publish` as the cell runner's publish hook.
    """

    def __init__(self, server: OpcUaSimServer, effects: Mapping[str, Iterable[Effect]]) -> None:
        self.server = server
        self._machines: dict[str, _Machine] = {}
        for machine, items in effects.items():
            by_signal: dict[str, list[Effect]] = {}
            for e in items:
                by_signal.setdefault(e.signal, []).append(e)
            state = _Machine(by_signal)
            for e in (e for es in by_signal.values() for e in es):
                state.base[e.register] = server.register_value(machine, e.register)
            state.latched = dict(state.base)
            self._machines[machine] = state

    async def publish(self, event: SimEvent) -> None:
        """The runner's hook: latch the registers at a part's start, move its probe values."""
        state = self._machines.get(event.machine)
        value = event.value
        if state is not None:
            if event.signal == "execution" and value == "ACTIVE":
                state.latched = {r: self.server.register_value(event.machine, r) for r in state.base}
                state.shifts_by_start[event.time] = self._shifts(state)
            elif event.signal in state.effects and isinstance(value, float) and math.isfinite(value):
                shift = sum(e.gain * (state.latched[e.register] - state.base[e.register]) for e in state.effects[event.signal])
                value = round(value + shift, 4)
        await self.server.publish(event.machine, event.signal, value, event.time)

    def _shifts(self, state: _Machine) -> dict[str, float]:
        return {
            signal: sum(e.gain * (state.latched[e.register] - state.base[e.register]) for e in effects)
            for signal, effects in state.effects.items()
        }

    def registers(self, machine: str) -> set[str]:
        """The registers that move ``machine``'s parts (by :func:`~monitor.sim.opcua_server.register_path`)."""
        state = self._machines.get(machine)
        return set(state.base) if state is not None else set()

    def shift(self, part: SimPart, signal: str) -> float:
        """How far the registers moved ``signal`` on ``part`` (0 before any write, or unknown parts)."""
        state = self._machines.get(part.machine)
        if state is None:
            return 0.0
        return state.shifts_by_start.get(part.start, {}).get(signal, 0.0)

    def out_of_tolerance(self, cell: SimCell) -> int:
        """Parts of ``cell`` with at least one feature out of tolerance, as the loop made them."""
        return _count(cell, self.shift)

    @staticmethod
    def out_of_tolerance_without(cell: SimCell) -> int:
        """The same count for the cell as computed, nobody touching the registers."""
        return _count(cell, lambda part, signal: 0.0)


def _count(cell: SimCell, shift: Callable[[SimPart, str], float]) -> int:
    programs = cell.programs()
    bad = 0
    for part in cell.parts():
        values = {s: v + shift(part, s) for s, v in part.true.items()}
        if any(feature_out_of_tolerance(f, values) for f in programs[part.program].features.values()):
            bad += 1
    return bad
