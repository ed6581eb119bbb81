"""A simulated cell: the seeded parts of every machine, their event stream and their ground truth.

``SimCell(scenario, seed)`` runs the physics once, eagerly and cheaply (no spindle samples), and
then serves three views of the same parts:

* :meth:`SimCell.events` - the time-ordered canonical signal updates a controller would publish
  (what the protocol servers expose and the daemon reads);
* :meth:`SimCell.measurements` - per-part probe values and context, without the event stream
  (the detection benchmark's fast path);
* :meth:`SimCell.ground_truth` - per feature, where drift starts and the first part out of
  tolerance, to score detectors.

Signals and units: ``tool.life`` is the cutting minutes used by the current tool (a fresh tool
shows 0); ``spindle.load`` is percent, sampled every ``sample_s`` while cutting and 0 otherwise;
``spindle.speed`` is rpm; ``probe.<name>`` is mm; ``part.count`` increments by one per part on a
machine (across batches); ``execution`` is ACTIVE while cycling, READY between parts and STOPPED
during breaks and changeovers.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np

from monitor.config import FeatureConfig, PositionFeatureConfig, ProgramConfig, SizeFeatureConfig
from monitor.model import Observation, Value
from monitor.sim.physics import END_S, OpRun, PartPlan, SimPart, simulate_machine
from monitor.sim.process import PROBE_TOOL_NUMBER, PROCESSES, load_programs
from monitor.sim.scenario import Scenario

__all__ = ["GroundTruth", "SimCell", "SimEvent", "SimMachineSpec", "feature_out_of_tolerance"]

_BASE_SIGNALS = (
    "program.name",
    "execution",
    "part.count",
    "tool.number",
    "tool.life",
    "spindle.load",
    "spindle.speed",
)


class SimEvent(NamedTuple):
    """One signal update of one machine at one simulated time (aware UTC); None = UNAVAILABLE."""

    time: datetime
    machine: str
    signal: str
    value: Value

    def observation(self) -> Observation:
        """The same update as the domain's Observation."""
        return Observation(self.machine, self.signal, self.time, self.value)


@dataclass(frozen=True, slots=True)
class SimMachineSpec:
    """A simulated machine: its id, the programs it runs in order, the signals it publishes and
    the tool numbers ``tool.number`` can show (the probe is :data:`PROBE_TOOL_NUMBER`)."""

    id: str
    programs: tuple[str, ...]
    signals: tuple[str, ...]
    tools: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What a perfect detector would know about one feature of one batch.

    ``drift_starts``: first part whose mean (noise-free process centre) has moved at least the
    scenario's ``drift_threshold_um`` from part 1's mean (None = stable). ``first_out_of_tolerance``:
    first part whose true value (before probe noise; true position for position features) is
    outside tolerance. ``mean_out_of_tolerance``: the same judged on the mean, free of scatter.
    ``causes``: what moved the mean by at least the threshold over the batch, among
    ``wear:<tool>`` (tool wear or a chip), ``thermal`` (spindle growth) and ``step`` (fixture
    shift, creep, offset edit).
    """

    machine: str
    program: str
    feature: str
    drift_starts: int | None
    first_out_of_tolerance: int | None
    mean_out_of_tolerance: int | None = None
    causes: tuple[str, ...] = ()


class SimCell:
    """The seeded simulation of one scenario: parts, events and ground truth of every machine.

    ``parts`` overrides the number of parts of every batch (handy for benchmarks).

    >>> from monitor.sim import SimCell, load_scenario
    >>> cell = SimCell(load_scenario("tool_wear"), seed=1)
    >>> [m.id for m in cell.machines]
    ['vmc-01']
    >>> truth = {g.feature: g for g in cell.ground_truth()}
    >>> truth["hole1_dia"].first_out_of_tolerance is not None
    True
    """

    def __init__(self, scenario: Scenario, seed: int = 0, parts: int | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self._programs = load_programs()
        used = {run.program for m in scenario.machines for run in m.programs}
        self._programs = {k: v for k, v in self._programs.items() if k in used}
        self._plans: dict[str, list[PartPlan]] = {
            m.id: simulate_machine(scenario, m, i, seed, self._programs, parts) for i, m in enumerate(scenario.machines)
        }
        self.machines: list[SimMachineSpec] = [_describe(m.id, [r.program for r in m.programs]) for m in scenario.machines]

    # ------------------------------------------------------------------------------ fast views
    def programs(self) -> dict[str, ProgramConfig]:
        """The part-program configs the cell's machines run, keyed by program name."""
        return dict(self._programs)

    def parts(self) -> list[SimPart]:
        """Every part of every machine, machine by machine in scenario order, parts in order."""
        return [plan.part for plans in self._plans.values() for plan in plans]

    def measurements(self, program: str, machine: str | None = None) -> list[SimPart]:
        """Parts of one program (optionally one machine): measured values plus context.

        This is the benchmark's fast path: no event stream is generated.
        """
        return [p for p in self.parts() if p.program == program and (machine is None or p.machine == machine)]

    def true_values(self) -> dict[tuple[str, str, int], dict[str, float]]:
        """True (pre-probe-noise) value of every probe signal, keyed by (machine, program, part)."""
        return {(p.machine, p.program, p.part): dict(p.true) for p in self.parts()}

    def ground_truth(self) -> list[GroundTruth]:
        """Per machine, program and feature: where drift starts and the first part out of tolerance."""
        out: list[GroundTruth] = []
        threshold = self.scenario.drift_threshold_um / 1000.0
        for m in self.machines:
            for program in m.programs:
                plans = [p for p in self._plans[m.id] if p.part.program == program]
                parts = [p.part for p in plans]
                for name, feature in self._programs[program].features.items():
                    if not _simulated(feature):
                        continue  # measured off the machine only (CMM, gauge): nothing the cell simulates
                    assert isinstance(feature, (SizeFeatureConfig, PositionFeatureConfig))
                    axes = _axes(feature)
                    ref = {s: parts[0].mean[s] for s, _ in axes}
                    drift = next((p.part for p in parts if _moved(p.mean, ref) >= threshold), None)
                    oot = next((p.part for p in parts if feature_out_of_tolerance(feature, p.true)), None)
                    moot = next((p.part for p in parts if feature_out_of_tolerance(feature, p.mean)), None)
                    causes = _causes(program, feature, plans, threshold * 1000.0)
                    out.append(GroundTruth(m.id, program, name, drift, oot, moot, causes))
        return out

    @property
    def start(self) -> datetime:
        """Simulated time of the first event."""
        return self.scenario.epoch + timedelta(seconds=min(m.start_s for m in self.scenario.machines))

    @property
    def end(self) -> datetime:
        """Simulated time of the last event."""
        tail = self.scenario.late_probe_s + 1.0
        last = max(p[-1].end_s + tail + (p[-1].restart_down_s or 0.0) for p in self._plans.values() if p)
        return self.scenario.epoch + timedelta(seconds=last)

    # ------------------------------------------------------------------------------ event stream
    def events(self, include_spindle_samples: bool = True) -> Iterator[SimEvent]:
        """Every signal update of every machine in time order (ties keep machine order).

        Without spindle samples each operation publishes its mean load once at cut start, which
        keeps the stream about ten times shorter for tests that only need part boundaries.
        """
        streams = [
            _machine_events(m.id, plans, self.scenario, self.seed, i, include_spindle_samples)
            for i, (m, plans) in enumerate(zip(self.machines, self._plans.values(), strict=True))
        ]
        epoch = self.scenario.epoch
        for t, machine, signal, value in heapq.merge(*streams, key=lambda e: e[0]):
            yield SimEvent(epoch + timedelta(seconds=t), machine, signal, value)


def _restart_events(ev: list[_Raw], machine: str, plan: PartPlan, after_s: float) -> None:
    """Every signal UNAVAILABLE while the controller is down, then back with the counter at 0."""
    assert plan.restart_down_s is not None
    down = plan.end_s + after_s
    up = down + plan.restart_down_s
    for signal in _BASE_SIGNALS:
        ev.append((down, machine, signal, None))
    ev.append((up, machine, "program.name", plan.part.program))
    ev.append((up, machine, "execution", "READY"))
    ev.append((up, machine, "part.count", 0.0))
    ev.append((up, machine, "tool.number", float(PROBE_TOOL_NUMBER)))
    ev.append((up, machine, "spindle.speed", 0.0))
    ev.append((up, machine, "spindle.load", 0.0))


def _describe(machine: str, programs: list[str]) -> SimMachineSpec:
    """Programs, signals and tool numbers of one machine, in the order the cell uses them."""
    processes = [PROCESSES[p] for p in programs]
    probes = dict.fromkeys(s for p in processes for s in p.probe_signals)
    tools = dict.fromkeys(op.tool_number for p in processes for op in p.operations)
    return SimMachineSpec(machine, tuple(programs), (*_BASE_SIGNALS, *probes), (*tools, PROBE_TOOL_NUMBER))


def _op_events(ev: list[_Raw], machine: str, op: OpRun, rng: np.random.Generator | None, noise: float, dt: float) -> None:
    """Tool change, spindle run-up, load samples (or one mean value without ``rng``), spindle stop."""
    ev.append((op.change_at, machine, "tool.number", float(op.op.tool_number)))
    ev.append((op.change_at, machine, "tool.life", round(op.life_before, 2)))
    ev.append((op.cut_start, machine, "spindle.speed", op.op.rpm))
    if rng is not None:
        n = int((op.cut_end - op.cut_start) / dt)
        loads = np.round(op.load + noise * rng.standard_normal(n), 1)
        base = op.cut_start
        ev.extend((base + (k + 1) * dt, machine, "spindle.load", float(v)) for k, v in enumerate(loads))
    else:
        ev.append((op.cut_start, machine, "spindle.load", round(op.load, 1)))
    ev.append((op.cut_end, machine, "spindle.load", 0.0))
    ev.append((op.cut_end, machine, "spindle.speed", 0.0))
    ev.append((op.cut_end, machine, "tool.life", round(op.life_after, 2)))


def _simulated(feature: object) -> bool:
    """Features the simulated probe measures: sizes with a probe signal, and positions."""
    return isinstance(feature, PositionFeatureConfig) or (isinstance(feature, SizeFeatureConfig) and feature.signal is not None)


def _axes(feature: SizeFeatureConfig | PositionFeatureConfig) -> list[tuple[str, float]]:
    """(signal, nominal) of every coordinate that makes the feature."""
    if isinstance(feature, SizeFeatureConfig):
        assert feature.signal is not None
        return [(feature.signal, feature.nominal)]
    axes = [(feature.x.signal, feature.x.nominal), (feature.y.signal, feature.y.nominal)]
    if feature.z is not None:
        axes.append((feature.z.signal, feature.z.nominal))
    return axes


def _causes(
    program: str, feature: SizeFeatureConfig | PositionFeatureConfig, plans: list[PartPlan], threshold_um: float
) -> tuple[str, ...]:
    """Which mean components (wear, thermal, step) span at least ``threshold_um`` over the batch."""
    signals = [s for s, _ in _axes(feature)]
    out: list[str] = []
    for k, label in enumerate(("wear", "thermal", "step")):
        span = max(max(p.components[s][k] for p in plans) - min(p.components[s][k] for p in plans) for s in signals)
        if span < threshold_um:
            continue
        if label == "wear" and isinstance(feature, SizeFeatureConfig) and feature.signal is not None:
            label = f"wear:{PROCESSES[program].size_effects[feature.signal].tool}"
        out.append(label)
    return tuple(out)


def _moved(values: dict[str, float], ref: dict[str, float]) -> float:
    """Euclidean distance of the coordinates in ``ref`` from where ``ref`` has them."""
    return math.sqrt(sum((values[s] - r) ** 2 for s, r in ref.items()))


def feature_out_of_tolerance(feature: FeatureConfig, values: dict[str, float]) -> bool:
    """Size outside [lower, upper], or true position 2*sqrt(dx^2+dy^2[+dz^2]) beyond the tolerance
    zone; False for a feature the simulated probe does not measure (inspection-only, go/no-go)."""
    if not _simulated(feature):
        return False
    if isinstance(feature, SizeFeatureConfig):
        assert feature.signal is not None
        return not feature.lower <= values[feature.signal] <= feature.upper
    assert isinstance(feature, PositionFeatureConfig)
    tp = 2.0 * math.sqrt(sum((values[s] - nominal) ** 2 for s, nominal in _axes(feature)))
    return tp > feature.tolerance


_Raw = tuple[float, str, str, Value]


def _machine_events(
    machine: str, plans: list[PartPlan], scenario: Scenario, seed: int, index: int, samples: bool
) -> Iterator[_Raw]:
    """One machine's updates in time order, part by part (a part's window is sorted on its own)."""
    rng = np.random.default_rng([seed, index, 2])
    spec = scenario.machines[index]
    noise = spec.noise.load_pct
    dt = scenario.sample_s
    for plan in plans:
        part = plan.part
        ev: list[_Raw] = []
        s = plan.aborted.change_at if plan.aborted is not None else plan.start_s
        if plan.first_of_batch:
            if part.counter == 1:
                ev.append((s, machine, "part.count", 0.0))
            ev.append((s, machine, "program.name", part.program))
        if plan.aborted is not None:
            ev.append((s, machine, "execution", "ACTIVE"))
            _op_events(ev, machine, plan.aborted, rng if samples else None, noise, dt)
            ev.append((plan.aborted.cut_end, machine, "execution", "INTERRUPTED"))
            ev.append((plan.aborted.cut_end + END_S, machine, "execution", "READY"))
        ev.append((plan.start_s, machine, "execution", "ACTIVE"))
        for op in plan.ops:
            _op_events(ev, machine, op, rng if samples else None, noise, dt)
        ev.append((plan.probe_change_at, machine, "tool.number", float(PROBE_TOOL_NUMBER)))
        for signal, at in plan.probe_times.items():
            ev.append((at, machine, signal, part.measured.get(signal)))
        ev.append((plan.end_s, machine, "part.count", float(part.counter)))
        ev.append((plan.end_s, machine, "execution", "READY"))
        if plan.stop_after:
            ev.append((plan.end_s + scenario.late_probe_s + 1.0, machine, "execution", "STOPPED"))
        if plan.restart_down_s is not None:
            _restart_events(ev, machine, plan, scenario.late_probe_s + 1.0)
        ev.sort(key=lambda e: e[0])
        yield from ev
