"""The simulated cell: seeded physics of CNC machines, their signals and the ground truth.

Used by ``monitor demo``, the tests, the simulated OPC UA and MTConnect servers and the
detection benchmark. Load a scenario, build a cell, then read it::

    cell = SimCell(load_scenario("demo"), seed=3)
    for event in cell.events():              # time-ordered canonical signal updates
        ...
    cell.measurements("O1001")               # per-part probe values and context, no events
    cell.ground_truth()                      # drift start, first out-of-tolerance part, causes
    SimCell(vary_scenario(load_scenario("tool_wear"), seed=k), seed=k)   # benchmark variety
    await run_cell(cell, publish, speed=60)  # paced replay into a protocol server
"""

from __future__ import annotations

from monitor.sim.cell import GroundTruth, SimCell, SimEvent, SimMachineSpec
from monitor.sim.csvfile import write_csv, write_program_csv
from monitor.sim.physics import SimPart
from monitor.sim.process import PROCESSES, PROGRAMS_DIR, load_programs
from monitor.sim.runner import Publish, run_cell
from monitor.sim.scenario import SCENARIO_DIR, Scenario, list_scenarios, load_scenario
from monitor.sim.variants import vary_scenario

__all__ = [
    "PROCESSES",
    "PROGRAMS_DIR",
    "SCENARIO_DIR",
    "GroundTruth",
    "Publish",
    "Scenario",
    "SimCell",
    "SimEvent",
    "SimMachineSpec",
    "SimPart",
    "list_scenarios",
    "load_programs",
    "load_scenario",
    "run_cell",
    "vary_scenario",
    "write_csv",
    "write_program_csv",
]
