"""Scenario files: which machines run which programs, and the physics knobs of each machine.

A scenario is a small YAML file in ``monitor/sim/scenarios/`` (or anywhere, by path). It is
validated once at load with pydantic (``extra="forbid"``); every problem is reported together as
one :class:`~monitor.errors.ConfigError` whose lines read ``file:line key.path: message``.
All lengths are micrometres (``*_um``), all times seconds (``*_s``) unless named ``*_min``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from monitor.errors import ConfigError, ConfigIssue
from monitor.sim.process import PROCESSES
from monitor.yamlmarks import LoadedYaml, load_yaml

__all__ = [
    "SCENARIO_DIR",
    "Abort",
    "Break",
    "ChippedTool",
    "Creep",
    "Dropouts",
    "FixtureShift",
    "MachineSpec",
    "Noise",
    "Offset",
    "ProgramRun",
    "Restart",
    "Scenario",
    "Step",
    "Thermal",
    "ToolChange",
    "ToolSpec",
    "list_scenarios",
    "load_scenario",
]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
"""Packaged scenario files; a scenario's name is its file stem."""

_STRICT = ConfigDict(extra="forbid")


class ToolSpec(BaseModel):
    """Wear of one tool; omitted keys keep the process default (see monitor/sim/process.py)."""

    model_config = _STRICT
    wear_um_per_part: float | None = Field(default=None, ge=0, description="edge wear per cut, um")
    wear_accel: float = Field(default=0.0, ge=0, description="wear rate grows by this fraction per 100 cuts")
    load_gain_per_um: float = Field(default=0.006, ge=0, description="relative spindle-load rise per um of wear")
    used_parts: int = Field(default=0, ge=0, description="cuts the tool already made before the run")
    life_parts: int | None = Field(default=None, gt=0, description="a sister tool takes over after this many cuts")


class Thermal(BaseModel):
    """Spindle growth: warms toward a plateau while cycling, cools while idle (first-order).

    ``x_um``/``y_um``/``z_um`` are the growth a warm machine shows in steady production (cycling
    with the machine's ``idle_s``); a long break lets it cool toward zero.
    """

    model_config = _STRICT
    x_um: float = 4.0
    y_um: float = 2.0
    z_um: float = Field(default=-6.0, description="negative: the spindle grows toward the part")
    heat_tau_min: float = Field(default=20.0, gt=0, description="time constant of warming while cycling")
    cool_tau_min: float = Field(default=45.0, gt=0, description="time constant of cooling while idle")
    initial: float = Field(default=0.0, ge=0, le=1.2, description="0 = cold start, 1 = warm (production plateau)")


class Noise(BaseModel):
    """Random variation (standard deviations): true part-to-part scatter and probe repeatability."""

    model_config = _STRICT
    probe_um: float = Field(default=1.0, ge=0, description="probe repeatability per reading")
    fixture_um: float = Field(default=0.8, ge=0, description="part seating scatter, moves every hole of a part")
    process_um: float = Field(default=0.8, ge=0, description="part-to-part scatter of sizes")
    load_pct: float = Field(default=0.8, ge=0, description="spindle load sample noise, percentage points")


class Break(BaseModel):
    """A long idle (lunch, shift change) after a part: the spindle cools down."""

    model_config = _STRICT
    after_part: int = Field(ge=1)
    idle_s: float = Field(gt=0)
    program: str | None = None


class Abort(BaseModel):
    """An interrupted cycle: the operator stops part ``at_part`` during its first operation, resets,
    and machines it again on a fresh blank. The counter does not move for the aborted attempt."""

    model_config = _STRICT
    at_part: int = Field(ge=1)
    program: str | None = None


class Restart(BaseModel):
    """A controller restart after part ``after_part``: every signal goes UNAVAILABLE for ``down_s``,
    then comes back with the part counter reset to 0 (as after a power cycle)."""

    model_config = _STRICT
    after_part: int = Field(ge=1)
    down_s: float = Field(default=120.0, gt=0)
    program: str | None = None


class _StepBase(BaseModel):
    model_config = _STRICT
    at_part: int = Field(ge=1, description="first part affected (part numbers start at 1)")
    program: str | None = Field(default=None, description="required when the machine runs several programs")


class ChippedTool(_StepBase):
    """A chipped edge: the tool's wear jumps by ``wear_um`` (and its load by ``load_pct``) from this part on."""

    kind: Literal["chipped_tool"]
    tool: str
    wear_um: float
    load_pct: float = 3.0


class FixtureShift(_StepBase):
    """The fixture moved (chip under a locator, a knock): every position of the program shifts."""

    kind: Literal["fixture_shift"]
    dx_um: float = 0.0
    dy_um: float = 0.0
    dz_um: float = 0.0


class Creep(_StepBase):
    """A slow linear position drift from ``at_part`` on (loosening clamp, warming fixture)."""

    kind: Literal["creep"]
    dx_um_per_part: float = 0.0
    dy_um_per_part: float = 0.0
    features: list[str] = Field(default_factory=list, description="position features; empty = all")


class Offset(_StepBase):
    """Someone edited an offset: one probe signal's true value moves by ``um`` from this part on."""

    kind: Literal["offset"]
    signal: str
    um: float


class ToolChange(_StepBase):
    """A fresh tool replaces ``tool`` before this part's cut: wear and life restart from zero."""

    kind: Literal["tool_change"]
    tool: str


Step = Annotated[ChippedTool | FixtureShift | Creep | Offset | ToolChange, Field(discriminator="kind")]


class Dropouts(BaseModel):
    """Probe values that come back UNAVAILABLE (None): listed parts and/or at random."""

    model_config = _STRICT
    probability: float = Field(default=0.0, ge=0, le=1, description="per reading")
    parts: list[int] = Field(default_factory=list, description="parts whose readings are all lost")
    signals: list[str] = Field(default_factory=list, description="signals affected; empty = every probe signal")


class ProgramRun(BaseModel):
    """One batch of one program on a machine; ``parts`` defaults to the scenario's ``parts``."""

    model_config = _STRICT
    program: str
    parts: int | None = Field(default=None, ge=1)

    @field_validator("program")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PROCESSES:
            raise ValueError(f"unknown program {v!r}; the simulator knows {', '.join(sorted(PROCESSES))}")
        return v


class MachineSpec(BaseModel):
    """One simulated machine: its batches in order, timing, and physics knobs."""

    model_config = _STRICT
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    programs: list[ProgramRun] = Field(min_length=1)
    start_s: float = Field(default=0.0, ge=0, description="first cycle starts this long after the epoch")
    cycle_s: float = Field(default=90.0, ge=30, description="cycle time of one part")
    idle_s: float = Field(default=30.0, gt=0, description="load/unload time between parts")
    idle_jitter_s: float = Field(default=4.0, ge=0, description="uniform +- variation of idle_s")
    changeover_s: float = Field(default=900.0, gt=0, description="idle between two batches")
    breaks: list[Break] = Field(default_factory=list)
    aborts: list[Abort] = Field(default_factory=list)
    restarts: list[Restart] = Field(default_factory=list)
    thermal: Thermal = Field(default_factory=Thermal)
    noise: Noise = Field(default_factory=Noise)
    bias_um: dict[str, float] = Field(
        default_factory=dict, description="process centre minus nominal at the start, per probe signal"
    )
    tools: dict[str, ToolSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(default_factory=list)
    dropouts: Dropouts = Field(default_factory=Dropouts)

    @field_validator("programs", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"program": p} if isinstance(p, str) else p for p in v]
        return v

    @model_validator(mode="after")
    def _references(self) -> MachineSpec:
        names = [run.program for run in self.programs if run.program in PROCESSES]
        if len(set(names)) != len(names):
            raise ValueError("a program may appear only once per machine; raise its parts instead")
        tools = {t for p in names for t in PROCESSES[p].tools()}
        signals = {s for p in names for s in PROCESSES[p].probe_signals}
        problems: list[str] = []
        for tool in self.tools:
            if tool not in tools:
                problems.append(f"tools.{tool}: not used by {names}; tools are {sorted(tools)}")
        for signal in [*self.bias_um, *self.dropouts.signals]:
            if signal not in signals:
                problems.append(f"{signal}: not a probe signal of {names}; signals are {sorted(signals)}")
        items: list[tuple[str, Step | Break | Abort | Restart]] = [
            *((f"steps[{i}]", s) for i, s in enumerate(self.steps)),
            *((f"breaks[{i}]", b) for i, b in enumerate(self.breaks)),
            *((f"aborts[{i}]", a) for i, a in enumerate(self.aborts)),
            *((f"restarts[{i}]", r) for i, r in enumerate(self.restarts)),
        ]
        for where, item in items:
            if item.program is None and len(names) > 1:
                problems.append(f"{where}: say which program (the machine runs {names})")
            elif item.program is not None and item.program not in names:
                problems.append(f"{where}.program: {item.program} is not run by this machine")
            if isinstance(item, (ChippedTool, ToolChange)) and item.tool not in tools:
                problems.append(f"{where}.tool: {item.tool} is not used; tools are {sorted(tools)}")
            if isinstance(item, Offset) and item.signal not in signals:
                problems.append(f"{where}.signal: {item.signal} is not a probe signal of {names}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Scenario(BaseModel):
    """A simulated cell: machines with their programs and physics, for a given number of parts."""

    model_config = _STRICT
    name: str = Field(default="", description="defaults to the file stem when loaded from a file")
    description: str = ""
    parts: int = Field(default=100, ge=1, description="parts per batch unless a batch says otherwise")
    epoch: datetime = Field(default=datetime(2026, 1, 5, 6, 0, tzinfo=UTC), description="simulated time zero (UTC)")
    sample_s: float = Field(default=0.5, gt=0, description="spindle-load sampling period while cutting")
    late_probe_s: float = Field(default=0.0, ge=0, description="last probe value lands this long after part.count")
    drift_threshold_um: float = Field(default=1.0, gt=0, description="ground truth: drift starts once the mean moved this much")
    machines: list[MachineSpec] = Field(min_length=1)

    @field_validator("epoch")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("epoch needs a timezone, e.g. 2026-01-05T06:00:00Z")
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _unique_and_late(self) -> Scenario:
        ids = [m.id for m in self.machines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"machine ids must be unique, got {ids}")
        for m in self.machines:
            if self.late_probe_s >= m.idle_s - m.idle_jitter_s:
                raise ValueError(
                    f"late_probe_s ({self.late_probe_s}) must be shorter than machine {m.id}'s shortest idle "
                    f"({m.idle_s - m.idle_jitter_s} s), or the late value would land in the next part"
                )
            if m.idle_jitter_s >= m.idle_s:
                raise ValueError(f"machine {m.id}: idle_jitter_s must be below idle_s")
        return self


def list_scenarios() -> list[str]:
    """Names of the packaged scenarios (file stems), sorted."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def _issues(doc: LoadedYaml, exc: ValidationError) -> list[ConfigIssue]:
    kinds = {"chipped_tool", "fixture_shift", "creep", "offset", "tool_change"}
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in kinds))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; see monitor/sim/scenarios/README.md for the keys a scenario takes"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] not in ("value_error",) and not isinstance(err.get("input"), (dict, list)):
            msg = f"{msg} (got {err.get('input')!r})"
        out.append(doc.issue(loc, msg))
    return out


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a packaged scenario by name (``"tool_wear"``) or any scenario file by path.

    Raises :class:`~monitor.errors.ConfigError` naming file, line and key of every problem.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(name_or_path)
    else:
        path = SCENARIO_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(
                [ConfigIssue(text, None, "", f"no such scenario; packaged scenarios are {', '.join(list_scenarios())}")]
            )
    doc = load_yaml(path, environ={})
    issues = list(doc.issues)
    if not issues and not isinstance(doc.data, dict):
        issues.append(doc.issue((), "expected a mapping of keys at the top of the file"))
    if issues:
        raise ConfigError(issues)
    data = doc.data if "name" in doc.data else {"name": path.stem, **doc.data}
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues(doc, exc)) from exc
