"""The seeded physics of one machine: cycle timing, tool wear, spindle growth, noise and steps.

:func:`simulate_machine` walks a machine's batches part by part and returns one :class:`PartPlan`
per part: when each operation ran, which load and tool life it showed, and the true, mean and
measured value of every probe signal. Events (:mod:`monitor.sim.cell`) and measurements are both
read from these plans, so the event stream and the benchmark's fast path always agree.

The model, per part ``n`` of a batch (lengths in micrometres):

* tool wear after ``c`` cuts: ``w = rate * c * (1 + accel * c / 100) + chips``; a size feature
  moves by ``wear_gain * w`` of the tool that finishes it; spindle load of an operation is
  ``load * (1 + load_gain_per_um * w) + chip load``;
* spindle temperature ``theta`` in [0, 1] rises as ``1 - exp(-t / heat_tau)`` while the machine cycles
  and falls as ``exp(-t / cool_tau)`` while it idles; positions move by ``theta / plateau * (x, y,
  z)_um``, where ``plateau`` is the steady state of cycling with the machine's ``idle_s``;
* true value = nominal + bias + wear + thermal + steps (the mean) + fixture/process scatter;
  measured value = true value + probe noise, rounded to 0.1 um, or None on a dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from monitor.config import PositionFeatureConfig, ProgramConfig, SizeFeatureConfig
from monitor.errors import ConfigError, ConfigIssue
from monitor.sim.process import PROCESSES, Operation, ProcessSpec
from monitor.sim.scenario import (
    ChippedTool,
    Creep,
    FixtureShift,
    MachineSpec,
    Offset,
    Scenario,
    Step,
    ToolChange,
)

__all__ = [
    "END_S",
    "PROBE_STEP_S",
    "TOOL_CHANGE_S",
    "OpRun",
    "PartPlan",
    "SimPart",
    "simulate_machine",
]

TOOL_CHANGE_S = 3.0
"""Tool change and spindle run-up before each operation (spindle stopped, load 0)."""
PROBE_STEP_S = 2.0
"""Time per probe reading; one reading is published at the end of each step."""
END_S = 1.0
"""From the last probe reading to the part counter incrementing (M30 / part end)."""


@dataclass(frozen=True, slots=True)
class SimPart:
    """One simulated part: ground truth, what the probe reported, and its process context.

    ``true`` is the feature value before probe noise (what a CMM would find); ``mean`` is the
    process centre without any scatter (the drift the detector should find); ``measured`` is what
    the controller published (None = UNAVAILABLE). ``tool_life`` is the cutting minutes each tool
    had used at the end of this part's cut (what ``tool.life`` reports); ``warm_min`` counts minutes
    since the machine last started cycling after a long idle (run start, end of a break or of a
    changeover), up to this part's probing; ``thermal`` is the spindle's growth state then
    (1 = the production plateau the scenario's ``thermal`` values describe).
    """

    machine: str
    program: str
    part: int
    counter: int
    start: datetime
    end: datetime
    measured: dict[str, float | None]
    true: dict[str, float]
    mean: dict[str, float]
    tool_life: dict[str, float]
    tool_cuts: dict[str, int]
    tool_wear_um: dict[str, float]
    spindle_mean_load: float
    cutting_time_s: float
    warm_min: float
    thermal: float
    aborted_attempts: int = 0
    """1 when a first attempt at this part was interrupted (see the scenario's ``aborts``)."""


@dataclass(frozen=True, slots=True)
class OpRun:
    """One operation of one part: when it ran (seconds from the epoch) and what it showed."""

    op: Operation
    change_at: float
    cut_start: float
    cut_end: float
    life_before: float
    life_after: float
    load: float


@dataclass(frozen=True, slots=True)
class PartPlan:
    """A part and its timeline in seconds from the epoch, for the event stream."""

    part: SimPart
    start_s: float
    end_s: float
    ops: tuple[OpRun, ...]
    probe_change_at: float
    probe_times: dict[str, float]
    first_of_batch: bool
    stop_after: bool
    aborted: OpRun | None = None
    """The interrupted first operation of an aborted attempt at this part, if there was one."""
    components: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """Per probe signal, the mean's (wear, thermal, step) parts in um, for attributing drift."""
    restart_down_s: float | None = None
    """The controller restarts after this part and is unreachable this long; its counter resets."""
    """A break or a changeover follows: the machine shows STOPPED."""


@dataclass(slots=True)
class _Tool:
    rate: float
    accel: float
    load_gain: float
    life_parts: int | None
    cuts: int = 0
    minutes: float = 0.0
    chip_um: float = 0.0
    chip_load: float = 0.0

    def wear(self) -> float:
        c = self.cuts
        return self.rate * c * (1.0 + self.accel * c / 100.0) + self.chip_um

    def replace(self) -> None:
        self.cuts, self.minutes, self.chip_um, self.chip_load = 0, 0.0, 0.0, 0.0


@dataclass(slots=True)
class _Thermal:
    x: float
    y: float
    z: float
    heat_tau_s: float
    cool_tau_s: float
    theta: float

    def heat(self, seconds: float) -> None:
        self.theta = 1.0 - (1.0 - self.theta) * math.exp(-seconds / self.heat_tau_s)

    def cool(self, seconds: float) -> None:
        self.theta *= math.exp(-seconds / self.cool_tau_s)

    def axis(self, name: str | None) -> float:
        return {"x": self.x, "y": self.y, "z": self.z}.get(name or "", 0.0)


@dataclass(frozen=True, slots=True)
class _Signal:
    """How one probe signal of a program is made."""

    name: str
    nominal: float
    axis: str | None  # x/y/z for position axes, None for sizes
    feature: str
    tool: str | None = None
    wear_gain: float = 0.0
    thermal_axis: str | None = None
    thermal_gain: float = 0.0


@dataclass(slots=True)
class _StepState:
    fixture: dict[str, float] = field(default_factory=lambda: {"x": 0.0, "y": 0.0, "z": 0.0})
    offsets: dict[str, float] = field(default_factory=dict)


def _signals(process: ProcessSpec, program: ProgramConfig) -> list[_Signal]:
    by_name: dict[str, _Signal] = {}
    for fname, feature in program.features.items():
        if isinstance(feature, SizeFeatureConfig) and feature.signal is not None:
            effect = process.size_effects.get(feature.signal)
            if effect is None:
                by_name[feature.signal] = _Signal(feature.signal, feature.nominal, None, fname)
            else:
                by_name[feature.signal] = _Signal(
                    feature.signal,
                    feature.nominal,
                    None,
                    fname,
                    effect.tool,
                    effect.wear_gain,
                    effect.thermal_axis,
                    effect.thermal_gain,
                )
        elif isinstance(feature, PositionFeatureConfig):
            axes = [("x", feature.x), ("y", feature.y)] + ([("z", feature.z)] if feature.z else [])
            for axis_name, axis in axes:
                by_name[axis.signal] = _Signal(axis.signal, axis.nominal, axis_name, fname)
    return [by_name[s] for s in process.probe_signals if s in by_name]


def _step_applies(step: Step | object, program: str, single: bool) -> bool:
    prog = getattr(step, "program", None)
    return prog == program or (prog is None and single)


def simulate_machine(
    scenario: Scenario,
    spec: MachineSpec,
    index: int,
    seed: int,
    programs: dict[str, ProgramConfig],
    parts: int | None = None,
) -> list[PartPlan]:
    """Every part of one machine, in order; deterministic for a given scenario, seed and index."""
    rng = np.random.default_rng([seed, index, 1])
    single = len(spec.programs) == 1
    tools: dict[str, _Tool] = {}
    for run in spec.programs:
        for tool_id, op in PROCESSES[run.program].tools().items():
            ts = spec.tools.get(tool_id)
            rate = op.wear_um_per_part if ts is None or ts.wear_um_per_part is None else ts.wear_um_per_part
            tool = _Tool(
                rate,
                ts.wear_accel if ts else 0.0,
                ts.load_gain_per_um if ts else 0.006,
                ts.life_parts if ts else None,
            )
            tool.cuts = ts.used_parts if ts else 0
            tools.setdefault(tool_id, tool)
    th = spec.thermal
    heat_tau_s, cool_tau_s = th.heat_tau_min * 60.0, th.cool_tau_min * 60.0
    plateau = _plateau(spec.cycle_s, spec.idle_s, heat_tau_s, cool_tau_s)
    scale = 1.0 / plateau
    thermal = _Thermal(th.x_um * scale, th.y_um * scale, th.z_um * scale, heat_tau_s, cool_tau_s, th.initial * plateau)
    noise = spec.noise
    plans: list[PartPlan] = []
    t = spec.start_s
    warm_start = t
    counter = 0
    for run_index, run in enumerate(spec.programs):
        process = PROCESSES[run.program]
        program = programs[run.program]
        signals = _signals(process, program)
        n_sig = len(signals)
        n_parts = parts if parts is not None else (run.parts or scenario.parts)
        steps = [s for s in spec.steps if _step_applies(s, run.program, single)]
        _check_creep(steps, program, spec.id)
        breaks = {b.after_part: b.idle_s for b in spec.breaks if _step_applies(b, run.program, single)}
        aborts = {a.at_part for a in spec.aborts if _step_applies(a, run.program, single)}
        restarts = {r.after_part: r.down_s for r in spec.restarts if _step_applies(r, run.program, single)}
        n_ops = len(process.operations)
        cut_total = spec.cycle_s - TOOL_CHANGE_S * (n_ops + 1) - PROBE_STEP_S * len(process.probe_signals) - END_S
        if cut_total <= 0:
            issue = ConfigIssue(spec.id, None, "cycle_s", f"cycle_s {spec.cycle_s} is too short for {run.program}")
            raise ConfigError([issue])
        dropped_parts = set(spec.dropouts.parts)
        drop_signals = set(spec.dropouts.signals) or {s.name for s in signals}
        state = _StepState()
        creep_rates: list[tuple[Creep, set[str]]] = [
            (s, set(s.features) or {f for f, c in program.features.items() if isinstance(c, PositionFeatureConfig)})
            for s in steps
            if isinstance(s, Creep)
        ]
        for n in range(1, n_parts + 1):
            jitter = rng.uniform(-1.0, 1.0)
            fixture_z = rng.standard_normal(3)
            process_z = rng.standard_normal(n_sig)
            probe_z = rng.standard_normal(n_sig)
            drop_u = rng.uniform(size=n_sig)
            for step in steps:
                if step.at_part != n:
                    continue
                if isinstance(step, ChippedTool):
                    tools[step.tool].chip_um += step.wear_um
                    tools[step.tool].chip_load += step.load_pct
                elif isinstance(step, ToolChange):
                    tools[step.tool].replace()
                elif isinstance(step, FixtureShift):
                    state.fixture["x"] += step.dx_um
                    state.fixture["y"] += step.dy_um
                    state.fixture["z"] += step.dz_um
                elif isinstance(step, Offset):
                    state.offsets[step.signal] = state.offsets.get(step.signal, 0.0) + step.um
            aborted: OpRun | None = None
            if n in aborts:
                aborted = _interrupted(process.operations[0], tools, t, cut_total)
                thermal.heat(aborted.cut_end - t)
                thermal.cool(END_S + spec.idle_s)
                t = aborted.cut_end + END_S + spec.idle_s
            start = t
            ops: list[OpRun] = []
            cursor = start
            cut_time = 0.0
            load_time = 0.0
            for op in process.operations:
                tool = tools[op.tool]
                if tool.life_parts is not None and tool.cuts >= tool.life_parts:
                    tool.replace()
                change_at = cursor
                cut_start = cursor + TOOL_CHANGE_S
                dur = cut_total * op.share
                cut_end = cut_start + dur
                life_before = tool.minutes
                tool.cuts += 1
                tool.minutes += dur / 60.0
                load = op.load_pct * (1.0 + tool.load_gain * tool.wear()) + tool.chip_load
                ops.append(OpRun(op, change_at, cut_start, cut_end, life_before, tool.minutes, load))
                cut_time += dur
                load_time += load * dur
                cursor = cut_end
            probe_change_at = cursor
            cursor += TOOL_CHANGE_S
            probe_times: dict[str, float] = {}
            for name in process.probe_signals:
                cursor += PROBE_STEP_S
                probe_times[name] = cursor
            end = cursor + END_S
            if scenario.late_probe_s > 0 and process.probe_signals:
                probe_times[process.probe_signals[-1]] = end + scenario.late_probe_s
            thermal.heat(probe_change_at + TOOL_CHANGE_S - start)
            theta = thermal.theta
            measured: dict[str, float | None] = {}
            true: dict[str, float] = {}
            mean: dict[str, float] = {}
            components: dict[str, tuple[float, float, float]] = {}
            for i, sig in enumerate(signals):
                wear_um = thermal_um = 0.0
                step_um = state.offsets.get(sig.name, 0.0)
                if sig.axis is None:
                    if sig.tool is not None:
                        wear_um = sig.wear_gain * tools[sig.tool].wear()
                    thermal_um = sig.thermal_gain * theta * thermal.axis(sig.thermal_axis)
                    scatter = noise.process_um * float(process_z[i])
                else:
                    thermal_um = theta * thermal.axis(sig.axis)
                    step_um += state.fixture[sig.axis]
                    for creep, features in creep_rates:
                        if sig.feature in features and n >= creep.at_part:
                            rate = {"x": creep.dx_um_per_part, "y": creep.dy_um_per_part}.get(sig.axis, 0.0)
                            step_um += rate * (n - creep.at_part + 1)
                    scatter = noise.fixture_um * float(fixture_z["xyz".index(sig.axis)])
                components[sig.name] = (wear_um, thermal_um, step_um)
                um = spec.bias_um.get(sig.name, 0.0) + wear_um + thermal_um + step_um
                mean[sig.name] = sig.nominal + um / 1000.0
                true[sig.name] = mean[sig.name] + scatter / 1000.0
                lost = sig.name in drop_signals and (n in dropped_parts or drop_u[i] < spec.dropouts.probability)
                reading = true[sig.name] + noise.probe_um * float(probe_z[i]) / 1000.0
                measured[sig.name] = None if lost else round(reading, 4)
            thermal.heat(end - (probe_change_at + TOOL_CHANGE_S))
            counter += 1
            epoch = scenario.epoch
            part = SimPart(
                machine=spec.id,
                program=run.program,
                part=n,
                counter=counter,
                start=epoch + timedelta(seconds=start),
                end=epoch + timedelta(seconds=end),
                measured=measured,
                true=true,
                mean=mean,
                tool_life={o.op.tool: round(o.life_after, 2) for o in ops},
                tool_cuts={o.op.tool: tools[o.op.tool].cuts for o in ops},
                tool_wear_um={o.op.tool: tools[o.op.tool].wear() for o in ops},
                spindle_mean_load=load_time / cut_time,
                cutting_time_s=cut_time,
                warm_min=(probe_change_at - warm_start) / 60.0,
                thermal=theta * scale,
                aborted_attempts=int(aborted is not None),
            )
            brk = breaks.get(n)
            down = restarts.get(n)
            last_of_batch = n == n_parts
            changeover = last_of_batch and run_index + 1 < len(spec.programs)
            if changeover:
                idle = spec.changeover_s
            elif brk is not None:
                idle = brk
            else:
                idle = spec.idle_s + spec.idle_jitter_s * jitter
            if down is not None:
                idle = max(idle, scenario.late_probe_s + 1.0 + down + spec.idle_s)
            stop = changeover or brk is not None
            plans.append(
                PartPlan(part, start, end, tuple(ops), probe_change_at, probe_times, n == 1, stop, aborted, components, down)
            )
            thermal.cool(idle)
            t = end + idle
            if brk is not None or changeover or down is not None:
                warm_start = t
            if down is not None:
                counter = 0
    return plans


def _interrupted(op: Operation, tools: dict[str, _Tool], t: float, cut_total: float) -> OpRun:
    """The first operation of an aborted attempt, stopped halfway; the tool still wore."""
    tool = tools[op.tool]
    if tool.life_parts is not None and tool.cuts >= tool.life_parts:
        tool.replace()
    dur = cut_total * op.share / 2.0
    life_before = tool.minutes
    tool.cuts += 1
    tool.minutes += dur / 60.0
    load = op.load_pct * (1.0 + tool.load_gain * tool.wear()) + tool.chip_load
    return OpRun(op, t, t + TOOL_CHANGE_S, t + TOOL_CHANGE_S + dur, life_before, tool.minutes, load)


def _plateau(cycle_s: float, idle_s: float, heat_tau_s: float, cool_tau_s: float) -> float:
    """Spindle temperature (0..1 of the cutting limit) at the end of a cycle in steady production.

    Scenario growths are given at this production plateau, so ``x_um`` is what a warm machine
    shows while making parts, whatever the idle time.
    """
    e_cycle = math.exp(-cycle_s / heat_tau_s)
    e_idle = math.exp(-idle_s / cool_tau_s)
    return (1.0 - e_cycle) / (1.0 - e_idle * e_cycle)


def _check_creep(steps: list[Step], program: ProgramConfig, machine: str) -> None:
    positions = {f for f, c in program.features.items() if isinstance(c, PositionFeatureConfig)}
    for step in steps:
        if isinstance(step, Creep):
            unknown = [f for f in step.features if f not in positions]
            if unknown:
                raise ConfigError(
                    [
                        ConfigIssue(
                            machine,
                            None,
                            "steps.features",
                            f"{unknown} are not position features of {program.program}; they are {sorted(positions)}",
                        )
                    ]
                )
