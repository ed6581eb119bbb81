"""Site and part-program configuration: pydantic models, validated once at load.

A site file names the machines, their sources and signal mappings, the store, the sinks and the
folder of part-program files. Every problem in every file is collected and raised together as one
:class:`~monitor.errors.ConfigError` whose lines read ``file:line key.path: expected ...``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from adapters.mtconnect.config import MtConnectAddress, MtConnectSource
from adapters.opcua.addressing import APP_PREFIX, PREFIXES, BrowsePathAddress, parse_address
from adapters.opcua.config import OpcUaAddress, OpcUaOffsets, OpcUaSource
from adapters.replay_config import ReplaySource
from monitor.dburl import check_url
from monitor.detect.config import DetectionConfig
from monitor.errors import ConfigError, ConfigIssue
from monitor.inspection.config import PROBE_SOURCE, InspectionProgramConfig, InspectionSiteConfig, MeasuredByConfig, ReportConfig
from monitor.inspection.model import Characteristic
from monitor.model import (
    AttributeFeature,
    AxisRef,
    Feature,
    PositionFeature,
    Register,
    RegisterKind,
    Role,
    SizeFeature,
    is_canonical_signal,
)
from monitor.registers import MachineKind, SizeForm, check_register, registers_for
from monitor.sinks.config import RawSignalConfig, SinksConfig
from monitor.yamlmarks import LoadedYaml, load_yaml

__all__ = [
    "MIN_TOKEN_DISTINCT",
    "MIN_TOKEN_LENGTH",
    "AngleFeatureConfig",
    "AttributeFeatureConfig",
    "AxisConfig",
    "DashboardConfig",
    "MachineConfig",
    "MtConnectMachine",
    "OffsetConfig",
    "OneSidedFeatureConfig",
    "OpcUaMachine",
    "PositionFeatureConfig",
    "ProgramConfig",
    "ReplayMachine",
    "ReplaySource",
    "Site",
    "SiteConfig",
    "SizeFeatureConfig",
    "StoreConfig",
    "TrackingConfig",
    "UserConfig",
    "load_program",
    "load_site",
    "load_site_file",
]

_STRICT = ConfigDict(extra="forbid", defer_build=True)
_M = TypeVar("_M", bound=BaseModel)


# ---------------------------------------------------------------------------------------- programs
class AxisConfig(BaseModel):
    """One axis of a position feature: ``{signal: probe.hole1_x, nominal: 25.0}``."""

    model_config = _STRICT
    signal: str = Field(description="probe signal that measures this axis, e.g. probe.hole1_x")
    nominal: float = Field(description="nominal coordinate, mm")

    @field_validator("signal")
    @classmethod
    def _probe(cls, v: str) -> str:
        if not v.startswith("probe."):
            raise ValueError("expected a probe signal name like probe.hole1_x")
        return v


class OffsetConfig(BaseModel):
    """The register that corrects a feature, named in the program file: ``{register: tool_diameter_wear,
    tool: T12}``. Left out, the machine's kind picks it (see monitor/registers.py and docs/actions.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    register_kind: RegisterKind | None = Field(
        default=None,
        alias="register",
        description="work_offset, tool_length_wear, tool_radius_wear, tool_diameter_wear, lathe_x_wear or "
        "lathe_z_wear; default by machine kind: a position -> work_offset X/Y; on a mill a bore or boss -> "
        "tool_diameter_wear, a length -> tool_length_wear; on a lathe or mill-turn a diameter -> lathe_x_wear, "
        "a length -> lathe_z_wear",
    )
    tool: str | None = Field(
        default=None, min_length=1, description="the tool whose wear register it is, as the control names it (T12)"
    )
    work_offset: str = Field(
        default="G54", pattern=r"^[A-Za-z0-9.\- ]{1,16}$", description="the work offset a work_offset register changes"
    )
    axis: Literal["x", "y", "z"] | None = Field(
        default=None, description="the work offset axis that corrects a size (default z for a length)"
    )
    factor: float | None = Field(
        default=None,
        description="register change per mm of deviation when the default does not fit the geometry (e.g. +1 "
        "for a depth that grows as the tool goes deeper); default from the register and the feature's form",
    )
    auto_apply: bool = Field(
        default=False,
        description="apply the advice on the controller without a person when the condition reaches warning or "
        "critical: only on a machine whose offsets: list the register, over SignAndEncrypt with a user, within the "
        "register's auto_max_change (docs/offsets.md)",
    )

    @field_validator("factor")
    @classmethod
    def _nonzero(cls, v: float | None) -> float | None:
        if v is not None and v == 0:
            raise ValueError("factor 0 would never correct anything")
        return v


class _FeatureBase(BaseModel):
    """What every feature kind has: its balloon number, how else it is measured, the register that
    corrects it."""

    model_config = _STRICT
    balloon: str | None = Field(
        default=None, description="the characteristic (balloon) number of this feature on the drawing, for the report"
    )
    measured_by: dict[str, MeasuredByConfig] = Field(
        default_factory=dict,
        description="how the feature is measured, by source name: probe (the signals above) and e.g. cmm, bench: "
        "{characteristic: name in the result files, system, resolution, repeatability}; see measured_by",
    )

    @field_validator("balloon", mode="before")
    @classmethod
    def _balloon_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("measured_by")
    @classmethod
    def _sources(cls, v: dict[str, MeasuredByConfig]) -> dict[str, MeasuredByConfig]:
        return _check_sources(v)

    @field_validator("signal", check_fields=False)
    @classmethod
    def _probe(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("probe."):
            raise ValueError("expected a probe signal name like probe.hole1_dia")
        return v

    def _needs_a_source(self, signal: str | None) -> None:
        if signal is None and not any(name != PROBE_SOURCE for name in self.measured_by):
            raise ValueError("give the probe signal that measures it (signal: probe.<name>) or a measured_by source (e.g. cmm)")


class SizeFeatureConfig(_FeatureBase):
    """A size feature (diameter, length): nominal with lower and upper limits in mm."""

    kind: Literal["size"] = Field(description="size: judged against lower and upper limits")
    signal: str | None = Field(
        default=None, description="probe signal that measures it, e.g. probe.hole1_dia; leave out when only a CMM or gauge does"
    )
    nominal: float = Field(description="target value, mm; between lower and upper")
    lower: float = Field(description="lower limit, mm")
    upper: float = Field(description="upper limit, mm")
    form: SizeForm | None = Field(
        default=None,
        description="inside (a bore or ID), outside (a boss, shaft or OD) or length (a face length, depth or "
        "shoulder along Z): picks the register that corrects it; default inside on a mill, outside on a lathe",
    )
    offset: OffsetConfig | None = Field(default=None, description="the register that corrects it: see Offset")

    @model_validator(mode="after")
    def _limits(self) -> SizeFeatureConfig:
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        if not self.lower <= self.nominal <= self.upper:
            raise ValueError(f"nominal {self.nominal} lies outside [{self.lower}, {self.upper}]")
        if self.offset is not None and self.offset.register_kind is not None and self.offset.factor is None:
            why = check_register(self.offset.register_kind, "size", self.form)
            if why:
                raise ValueError(f"offset.register: {why}")
        self._needs_a_source(self.signal)
        return self


class AngleFeatureConfig(_FeatureBase):
    """An angle: nominal with lower and upper limits in degrees (a CMM's AngleBetween, a chamfer)."""

    kind: Literal["angle"] = Field(description="angle: judged against lower and upper limits, in degrees")
    signal: str | None = Field(
        default=None, description="probe signal that measures it, in degrees; leave out when only inspection does"
    )
    nominal: float = Field(description="target angle, degrees; between lower and upper")
    lower: float = Field(description="lower limit, degrees")
    upper: float = Field(description="upper limit, degrees")

    @model_validator(mode="after")
    def _limits(self) -> AngleFeatureConfig:
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        if not self.lower <= self.nominal <= self.upper:
            raise ValueError(f"nominal {self.nominal} lies outside [{self.lower}, {self.upper}]")
        self._needs_a_source(self.signal)
        return self


class OneSidedFeatureConfig(_FeatureBase):
    """A characteristic with one limit: form and orientation (flatness, perpendicularity, runout),
    roughness (Ra), a position the CMM reports as one zone value: an upper limit only; a minimum
    wall or depth: a lower limit only. In mm (Ra in mm too: 0.0008 for Ra 0.8 um)."""

    kind: Literal["one_sided"] = Field(description="one_sided: judged against an upper or a lower limit only")
    signal: str | None = Field(default=None, description="probe signal that measures it; leave out when only inspection does")
    upper: float | None = Field(default=None, description="the upper limit (flatness 0.02, Ra 0.0008); give upper or lower")
    lower: float | None = Field(default=None, description="the lower limit (a minimum wall)")
    nominal: float | None = Field(
        default=None,
        description="the value the process is expected to hold; default for an upper limit: half of it (a capability "
        "of 1.33 with the scatter the charts assume first); required with a lower limit",
    )

    @model_validator(mode="after")
    def _limits(self) -> OneSidedFeatureConfig:
        if (self.upper is None) == (self.lower is None):
            raise ValueError(
                "give exactly one limit: upper (flatness, roughness) or lower (a minimum wall); "
                "a feature with both limits is kind: size"
            )
        if self.nominal is None:
            if self.upper is None:
                raise ValueError("a lower limit needs the nominal the process is expected to hold")
            self.nominal = self.upper / 2.0
        if self.upper is not None and not self.nominal < self.upper:
            raise ValueError(f"nominal {self.nominal} must be below the upper limit {self.upper}")
        if self.lower is not None and not self.nominal > self.lower:
            raise ValueError(f"nominal {self.nominal} must be above the lower limit {self.lower}")
        self._needs_a_source(self.signal)
        return self


class AttributeFeatureConfig(_FeatureBase):
    """A go/no-go check (thread gauge, visual check): each part passes or fails; counted, charted as
    the proportion that fails, every fail an out-of-tolerance alert."""

    kind: Literal["attribute"] = Field(description="attribute: pass or fail per part")
    signal: str | None = Field(
        default=None,
        description="probe signal of the machine's own check: 1 (non-zero) = pass, 0 = fail; leave out when only inspection does",
    )

    @model_validator(mode="after")
    def _source(self) -> AttributeFeatureConfig:
        self._needs_a_source(self.signal)
        return self


class PositionFeatureConfig(_FeatureBase):
    """A position feature judged as true position against a tolerance zone diameter in mm."""

    kind: Literal["position"] = Field(description="position: judged as true position")
    x: AxisConfig = Field(description="{signal, nominal} of the X coordinate")
    y: AxisConfig = Field(description="{signal, nominal} of the Y coordinate")
    z: AxisConfig | None = Field(default=None, description="{signal, nominal} of Z, for 3D true position")
    tolerance: float = Field(gt=0, description="diameter of the positional tolerance zone, mm")
    offset: OffsetConfig | None = Field(default=None, description="the register that corrects it: see Offset")

    @model_validator(mode="after")
    def _register(self) -> PositionFeatureConfig:
        if self.offset is not None and self.offset.register_kind is not None and self.offset.factor is None:
            why = check_register(self.offset.register_kind, "position", None)
            if why:
                raise ValueError(f"offset.register: {why}")
        return self


def _check_sources(sources: dict[str, MeasuredByConfig]) -> dict[str, MeasuredByConfig]:
    for name, how in sources.items():
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"source name {name!r}: use letters, digits, _ and - (e.g. cmm, bench, air_gauge)")
        if name == PROBE_SOURCE and how.characteristic is not None:
            raise ValueError("measured_by.probe is the in-process probe (the feature's signals): it takes no characteristic")
        if name != PROBE_SOURCE and not how.characteristics():
            raise ValueError(f"measured_by.{name}: give the characteristic its result files name (characteristic: ...)")
    return sources


FeatureConfig = Annotated[
    SizeFeatureConfig | PositionFeatureConfig | AngleFeatureConfig | OneSidedFeatureConfig | AttributeFeatureConfig,
    Field(discriminator="kind"),
]


class ProgramConfig(BaseModel):
    """One part program: how its parts end, its measured features and detection settings."""

    model_config = _STRICT
    program: str = Field(min_length=1, description="program name exactly as the controller reports it in program.name")
    part_end: str = Field(
        default="part_count",
        description="what ends a part: part_count (counter increments), program_end (execution leaves ACTIVE) "
        "or signal:<canonical signal> (that signal turns true)",
    )
    features: dict[str, FeatureConfig] = Field(
        default_factory=dict, description="measured features by name: see Size feature and Position feature"
    )
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="see detection")
    inspection: InspectionProgramConfig = Field(
        default_factory=InspectionProgramConfig, description="how this program's inspection result files read: see inspection"
    )
    report: ReportConfig = Field(
        default_factory=ReportConfig, description="the part, drawing and acceptance rule the batch report states: see report"
    )

    @model_validator(mode="after")
    def _characteristics_once(self) -> ProgramConfig:
        owner: dict[str, str] = {}
        for name, feature in self.features.items():
            for source, how in feature.measured_by.items():
                for ref in how.characteristics():
                    first = owner.setdefault(ref, f"{name}.measured_by.{source}")
                    if first != f"{name}.measured_by.{source}":
                        raise ValueError(
                            f"characteristic {ref!r} is mapped by features.{first} and features.{name}.measured_by.{source}; "
                            "one characteristic measures one feature"
                        )
        return self

    def feature_source(self, characteristic: Characteristic) -> tuple[str, str] | None:
        """The (feature, source) a result file's characteristic measures, by the features'
        ``measured_by``; None when no feature names it."""
        for name, feature in self.features.items():
            for source, how in feature.measured_by.items():
                if any(characteristic.matches(ref) for ref in how.characteristics()):
                    return name, source
        return None

    @field_validator("part_end")
    @classmethod
    def _part_end(cls, v: str) -> str:
        if v in ("part_count", "program_end"):
            return v
        if v.startswith("signal:") and is_canonical_signal(v.removeprefix("signal:")):
            return v
        raise ValueError("expected part_count, program_end or signal:<canonical signal name>")

    def feature_models(self) -> list[Feature]:
        """The features as domain objects, in file order."""
        out: list[Feature] = []
        for name, f in self.features.items():
            if isinstance(f, SizeFeatureConfig):
                out.append(SizeFeature(name, f.signal, f.nominal, f.lower, f.upper))
            elif isinstance(f, AngleFeatureConfig):
                out.append(SizeFeature(name, f.signal, f.nominal, f.lower, f.upper, unit="deg", kind="angle"))
            elif isinstance(f, OneSidedFeatureConfig):
                assert f.nominal is not None  # set by the validator
                out.append(SizeFeature(name, f.signal, f.nominal, f.lower, f.upper, kind="one_sided"))
            elif isinstance(f, AttributeFeatureConfig):
                out.append(AttributeFeature(name, f.signal))
            else:
                z = AxisRef(f.z.signal, f.z.nominal) if f.z else None
                out.append(
                    PositionFeature(name, AxisRef(f.x.signal, f.x.nominal), AxisRef(f.y.signal, f.y.nominal), f.tolerance, z)
                )
        return out

    def registers(self, feature: str, machine_kind: str, tool: str | None = None) -> dict[str, Register]:
        """The register correcting each axis of ``feature`` on a machine of ``machine_kind`` ("value"
        for a size); ``tool`` is the tool that cut it when the program file does not name one."""
        spec = self.features[feature]
        model = next(f for f in self.feature_models() if f.name == feature)
        off = getattr(spec, "offset", None) or OffsetConfig()
        return registers_for(
            model,
            machine_kind,
            form=spec.form if isinstance(spec, SizeFeatureConfig) else None,
            register=off.register_kind,
            tool=off.tool or tool,
            work_offset=off.work_offset,
            axis=off.axis,
            factor=off.factor,
        )

    def probe_signals(self) -> list[str]:
        """Every probe signal a complete part of this program must have."""
        seen: dict[str, None] = {}
        for feature in self.feature_models():
            for s in feature.signals:
                seen[s] = None
        return list(seen)


# ------------------------------------------------------------------------------------------- site
def _check_signal_name(name: str) -> str:
    if not is_canonical_signal(name):
        raise ValueError(
            f"{name!r} is not a canonical signal; use spindle.load, spindle.speed, tool.number, "
            "tool.life, part.count, program.name, execution, part.complete, part.id or probe.<name>"
        )
    return name


SignalName = Annotated[str, AfterValidator(_check_signal_name)]


class StoreConfig(BaseModel):
    """Where the monitor keeps its evidence: an embedded SQLite file (the default, nothing to install),
    or with ``url`` a PostgreSQL database that several cell daemons share (docs/plant.md).

    Parts, measurements and alerts are the batch's evidence and are never deleted. Raw signal
    history is opt-in (``signals``, the same modes as the InfluxDB sink's) and is deleted after
    ``signal_retention_days``; ``monitor signals`` reads it, ``monitor backup`` copies the store."""

    model_config = _STRICT
    path: Path = Field(
        default=Path("monitor.db"),
        description="SQLite file; relative to the site file's folder. With `url` set it only names where the daemon "
        "keeps its local runtime files (<path>.daemon.json)",
    )
    url: str | None = Field(
        default=None,
        description="PostgreSQL store shared by several cell daemons: postgresql://USER@HOST:PORT/DATABASE "
        "(no password here: set PGPASSWORD in the daemon's environment or use ~/.pgpass); needs the postgres extra "
        "(pip install 'cnc-drift-monitor[postgres]')",
    )
    lease_s: float = Field(
        default=15.0,
        ge=2.0,
        le=600.0,
        description="shared store only: how long a daemon's hold on its machines lasts without a heartbeat; a standby "
        "takes over within about this long after the owner dies",
    )
    signals: dict[SignalName, RawSignalConfig] = Field(
        default_factory=dict,
        description="raw signals kept in the store for troubleshooting (monitor signals), by canonical name: "
        "{mode: change} or {mode: downsample, interval_s: 1.0}; unlisted signals are not kept",
    )
    signal_retention_days: float = Field(
        default=14.0, gt=0, description="raw signal history older than this many days is deleted (checked hourly)"
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v)


MIN_TOKEN_LENGTH = 16
"""A dashboard reachable from the network needs a token at least this long..."""
MIN_TOKEN_DISTINCT = 8
"""...with at least this many different characters (refuses "aaaaaaaaaaaaaaaa" and "1212121212121212")."""


class DashboardConfig(BaseModel):
    """The web dashboard the daemon serves."""

    model_config = _STRICT
    enabled: bool = Field(default=True, description="serve the dashboard from the daemon")
    bind: str = Field(default="127.0.0.1", description="address to listen on; anything but loopback needs a token")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port; 0 = any free port")
    token: str | None = Field(
        default=None,
        description="bearer token that allows acknowledging and closing alerts; use ${DASHBOARD_TOKEN}. Off loopback at "
        f"least {MIN_TOKEN_LENGTH} characters with {MIN_TOKEN_DISTINCT} different ones (e.g. `openssl rand -hex 24`)",
    )
    max_event_streams: int = Field(
        default=64, ge=1, description="live event streams (/api/events) served at once; more are refused with 503"
    )

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        if v and v != v.strip():
            raise ValueError("the token starts or ends with whitespace (or is only whitespace); no browser can send that")
        return v or None

    @model_validator(mode="after")
    def _token_off_loopback(self) -> DashboardConfig:
        if not self.enabled or _is_loopback(self.bind):
            return self
        if not self.token:
            raise ValueError(
                f"binding the dashboard to {self.bind} without a token exposes it to the network; "
                "set dashboard.token (e.g. ${DASHBOARD_TOKEN}) or bind to 127.0.0.1"
            )
        if len(self.token) < MIN_TOKEN_LENGTH or len(set(self.token)) < MIN_TOKEN_DISTINCT:
            raise ValueError(
                f"dashboard.token is too weak for a dashboard bound to {self.bind} ({len(self.token)} characters, "
                f"{len(set(self.token))} different): use at least {MIN_TOKEN_LENGTH} characters with "
                f"{MIN_TOKEN_DISTINCT} different ones, e.g. `openssl rand -hex 24`"
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TrackingConfig(BaseModel):
    """How a machine's observations are cut into parts, and how probe results are attributed to them."""

    model_config = _STRICT
    grace_s: float = Field(default=5.0, ge=0, description="probe values this late still belong to the part")
    results: Literal["before_count", "after_count"] = Field(
        default="before_count",
        description="when the probing macro writes a part's results: before_count (before or together with the "
        "part end that counts the part, e.g. the counter increment) or after_count (after it, within grace_s); "
        "a result stamped within jitter_s on the other side of a part end goes by this rule, counted and "
        "flagged attributed_by_rule on the part",
    )
    jitter_s: float = Field(
        default=0.25,
        ge=0,
        description="values the controller writes together may carry timestamps this far apart (a server "
        "stamps each item when it samples it, in its own order: up to one sampling interval)",
    )
    part_id: Literal["counter", "label"] = Field(
        default="counter",
        description="what the mapped part.id signal holds: counter (the part counter value of the part the "
        "results belong to; attribution by it, whatever the timestamps) or label (a serial or result sequence: "
        "results written with one id stay together on one part, placed by `results`)",
    )
    max_skew_s: float = Field(default=0.0, ge=0, description="tolerated clock difference between sources")
    clock_offset_s: float = Field(default=0.0, description="added to this source's timestamps")
    max_counter_jump: int = Field(
        default=1000,
        ge=1,
        description=(
            "a part counter that jumps further than this is taken as a new baseline (a preset, another counter), "
            "not as parts made unseen; smaller jumps are accounted part by part as `not_observed`"
        ),
    )
    probe_clock_tolerance_s: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "a probe value stamped further than this (and than 4 x max_skew_s) from the machine's clock is kept at "
            "the machine's clock with a note, and its part is not complete; 0 = no check"
        ),
    )


class _MachineBase(BaseModel):
    model_config = _STRICT
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="the machine's name (letters, digits, . _ -)")
    kind: MachineKind = Field(
        default="mill",
        description="mill, lathe or mill-turn: which offset registers correct its features (a hole position on a "
        "mill: the work offset; a turned diameter: the tool's X wear)",
    )
    probe_tool: str | None = Field(
        default=None,
        min_length=1,
        description="the tool number of the spindle probe (e.g. 99): never shown or advised as a cutting tool",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="see machines[].tracking")


class OpcUaMachine(_MachineBase):
    """A machine read over OPC UA; signals map to NodeIds or browse paths."""

    source: OpcUaSource
    signals: dict[SignalName, OpcUaAddress] = Field(default_factory=dict)
    offsets: OpcUaOffsets | None = Field(
        default=None,
        description="the registers the monitor may write (work offsets, tool wear) and their limits: see offsets; "
        "without it the monitor only advises",
    )

    @model_validator(mode="after")
    def _addresses(self) -> OpcUaMachine:
        """Every address parses and every browse-path prefix is known, so `check` (and `run` at load)
        refuses what the server could never resolve: a namespace index, an unknown prefix."""
        known = {*PREFIXES, APP_PREFIX, *self.source.namespaces}
        problems = []
        addresses = {f"signals.{signal}": spec if isinstance(spec, str) else spec.node for signal, spec in self.signals.items()}
        if self.offsets is not None:
            for i, reg in enumerate(self.offsets.registers):
                addresses[f"offsets.registers[{i}].node"] = reg.node
            between = self.offsets.between_parts
            if between.node is not None:
                addresses["offsets.between_parts.node"] = between.node
            elif between.signal is not None and between.signal not in self.signals:
                problems.append(
                    f"offsets.between_parts.signal: {between.signal} is not among this machine's signals; map it "
                    "or give between_parts.node"
                )
        for key, text in addresses.items():
            try:
                address = parse_address(text)
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
                continue
            if isinstance(address, BrowsePathAddress):
                unknown = sorted({p for p, _ in address.elements if p not in known})
                if unknown:
                    problems.append(
                        f"{key}: unknown browse-path prefix {', '.join(unknown)} in {text!r}; known: "
                        f"{', '.join(sorted(known))}; add it to source.namespaces as {{prefix: namespace URI}} "
                        "(`monitor discover` prints the line to add) or write a NodeId nsu=<uri>;s=<id>"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class MtConnectMachine(_MachineBase):
    """A machine read from an MTConnect agent; signals map to data item ids, names or types."""

    source: MtConnectSource
    signals: dict[SignalName, MtConnectAddress] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _read_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and "offsets" in data:
            raise ValueError(
                "offsets: MTConnect is read-only, the monitor cannot write this machine's registers; remove "
                "offsets (the advice names the register and the value to type at the control), or read the "
                "machine over OPC UA to have offsets applied"
            )
        return data


class ReplayMachine(_MachineBase):
    """A machine whose observations come from a recorded file (canonical names already)."""

    source: ReplaySource
    signals: dict[SignalName, str] = Field(default_factory=dict)


def _source_type(v: Any) -> str | None:
    if isinstance(v, dict):
        src = v.get("source")
        if isinstance(src, dict):
            t = src.get("type")
            return t if isinstance(t, str) else None
        return None
    src = getattr(v, "source", None)
    return getattr(src, "type", None)


MachineConfig = Annotated[
    Annotated[OpcUaMachine, Tag("opcua")]
    | Annotated[MtConnectMachine, Tag("mtconnect")]
    | Annotated[ReplayMachine, Tag("replay")],
    Discriminator(
        _source_type,
        custom_error_type="source_type",
        custom_error_message="source.type must be one of opcua, mtconnect, replay",
    ),
]


class UserConfig(BaseModel):
    """A named user: a role and a token of their own, taken from the environment."""

    model_config = _STRICT
    role: Role = Field(description="operator (acknowledge, record actions) or engineer (also close conditions by hand)")
    token: str = Field(
        min_length=MIN_TOKEN_LENGTH,
        description="the user's bearer token for the dashboard and the command line; write ${MONITOR_TOKEN_<NAME>} "
        f"so it comes from the environment; at least {MIN_TOKEN_LENGTH} characters with {MIN_TOKEN_DISTINCT} different ones",
    )

    @field_validator("token")
    @classmethod
    def _strong(cls, v: str) -> str:
        if v != v.strip() or len(set(v)) < MIN_TOKEN_DISTINCT:
            raise ValueError(
                f"the token is too weak or has whitespace at an end ({len(set(v))} different characters); "
                "use e.g. `openssl rand -hex 24`"
            )
        return v


class SiteConfig(BaseModel):
    """The site file: one daemon's machines, store, sinks and dashboard."""

    model_config = _STRICT
    site: str = Field(min_length=1, description="name of this cell; tags alerts, MQTT topics and InfluxDB points")
    store: StoreConfig = Field(default_factory=StoreConfig, description="see store")
    programs: Path = Field(default=Path("programs"), description="folder of part-program files, relative to the site file")
    machines: list[MachineConfig] = Field(
        default_factory=list,
        description="one entry per source: id, source (OPC UA, MTConnect or Replay source), signals "
        "(canonical signal -> address, or signal with options), tracking",
    )
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="see sinks")
    inspection: InspectionSiteConfig = Field(
        default_factory=InspectionSiteConfig, description="CMM and gauge result files: see inspection (site)"
    )
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig, description="see dashboard")
    users: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")], UserConfig] = Field(
        default_factory=dict,
        description="named users by login name: {alice: {role: engineer, token: ${MONITOR_TOKEN_ALICE}}}; each "
        "acknowledgement and action is recorded with its user and role",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="warning", description="daemon log level")
    log_format: Literal["text", "json"] = Field(default="text", description="text lines, or one JSON object per line")

    @model_validator(mode="after")
    def _sources_of_one_machine(self) -> SiteConfig:
        owner: dict[tuple[str, str], int] = {}
        for i, m in enumerate(self.machines):
            for signal in m.signals:
                first = owner.setdefault((m.id, signal), i)
                if first != i:
                    raise ValueError(
                        f"machine {m.id}: signal {signal} is mapped by machines[{first}] and machines[{i}]; "
                        "sources of one machine must map different signals"
                    )
        seen_tokens: dict[str, str] = {}
        for name, user in self.users.items():
            other = seen_tokens.setdefault(user.token, name)
            if other != name:
                raise ValueError(f"users {other} and {name} have the same token; each user needs a token of their own")
        kinds: dict[str, tuple[int, str, str | None]] = {}
        for i, m in enumerate(self.machines):
            first_k, kind, probe = kinds.setdefault(m.id, (i, m.kind, m.probe_tool))
            if (kind, probe) != (m.kind, m.probe_tool):
                raise ValueError(
                    f"machine {m.id}: machines[{first_k}] and machines[{i}] disagree on kind or probe_tool; "
                    "set them alike on every source of one machine"
                )
        rules: dict[str, tuple[int, str, str]] = {}
        for i, m in enumerate(self.machines):
            first_i, results, part_id = rules.setdefault(m.id, (i, m.tracking.results, m.tracking.part_id))
            if (results, part_id) != (m.tracking.results, m.tracking.part_id):
                raise ValueError(
                    f"machine {m.id}: machines[{first_i}] and machines[{i}] disagree on tracking.results or "
                    "tracking.part_id; one machine's probing macro follows one rule"
                )
        return self


# ---------------------------------------------------------------------------------------- loading
@dataclass
class Site:
    """A loaded site: the validated site file, its programs by name, and where they came from."""

    config: SiteConfig
    path: Path
    programs: dict[str, ProgramConfig] = field(default_factory=dict)
    program_files: dict[str, Path] = field(default_factory=dict)

    @property
    def store_path(self) -> Path:
        """The SQLite file, or with a shared store where this daemon's local runtime files go."""
        p = self.config.store.path
        return p if p.is_absolute() else self.path.parent / p

    @property
    def store_location(self) -> Path | str:
        """What :func:`monitor.store.open_store` opens: the PostgreSQL URL, else the SQLite file."""
        return self.config.store.url or self.store_path

    def machine_ids(self) -> list[str]:
        return list(dict.fromkeys(m.id for m in self.config.machines))

    def machine_kind(self, machine: str) -> str:
        """mill, lathe or mill-turn (mill for a machine the site does not name)."""
        return next((m.kind for m in self.config.machines if m.id == machine), "mill")

    def probe_tools(self, machine: str) -> frozenset[str]:
        """Tool numbers that are the machine's probe, not a cutting tool."""
        return frozenset(m.probe_tool for m in self.config.machines if m.id == machine and m.probe_tool)


def _issues_from(doc: LoadedYaml, exc: ValidationError, tags: frozenset[str]) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p in tags or p.startswith("function-"))))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against configs/README.md"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error") and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        msg = msg.removeprefix("Value error, ")
        issues.append(doc.issue(loc, msg))
    return issues


_TAGS = frozenset({"opcua", "mtconnect", "replay", "size", "position", "angle", "one_sided", "attribute", "str", "spec", "[key]"})


def _validate(model: type[_M], doc: LoadedYaml) -> tuple[_M | None, list[ConfigIssue]]:
    issues = list(doc.issues)
    if doc.data is None:
        return None, issues
    if not isinstance(doc.data, dict):
        return None, [*issues, doc.issue((), "expected a mapping of keys at the top of the file")]
    try:
        return model.model_validate(doc.data), issues
    except ValidationError as exc:
        return None, issues + _issues_from(doc, exc, _TAGS)


def load_program(path: Path, environ: dict[str, str] | None = None) -> ProgramConfig:
    """Load one part-program file; raises ConfigError with every issue in it."""
    program, issues = _validate(ProgramConfig, load_yaml(path, environ))
    if issues or program is None:
        raise ConfigError(issues)
    return program


def load_site_file(path: Path, environ: dict[str, str] | None = None) -> Site:
    """The site file alone, without its program files: enough to find a running daemon's store and
    API even while a program file being edited has errors (``monitor status`` still works)."""
    config, issues = _validate(SiteConfig, load_yaml(path, environ))
    if issues or config is None:
        raise ConfigError(issues or [ConfigIssue(str(path), None, "", "empty site file")])
    return Site(config, path)


def load_site(path: Path, environ: dict[str, str] | None = None) -> Site:
    """Load a site file and every program file in its programs folder, reporting all issues at once."""
    doc = load_yaml(path, environ)
    config, issues = _validate(SiteConfig, doc)
    # the programs are checked even when the site file has errors, so all problems come out at once
    raw = doc.data if isinstance(doc.data, dict) else {}
    programs_key: Any = config.programs if config is not None else raw.get("programs", "programs")
    site = Site(config, path) if config is not None else None
    programs: dict[str, ProgramConfig] = {}
    program_files: dict[str, Path] = {}
    if isinstance(programs_key, (str, Path)):
        folder = Path(programs_key)
        folder = folder if folder.is_absolute() else path.parent / folder
        if not folder.is_dir():
            issues.append(doc.issue(("programs",), f"program folder {folder} does not exist; create it or fix the path"))
        else:
            for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                program, more = _validate(ProgramConfig, load_yaml(file, environ))
                issues += more
                if program is None:
                    continue
                if program.program in programs:
                    issues.append(
                        ConfigIssue(
                            str(file),
                            1,
                            "program",
                            f"program {program.program} is also defined in {program_files[program.program]}",
                        )
                    )
                    continue
                programs[program.program] = program
                program_files[program.program] = file
    if config is not None:
        machine_ids = {m.id for m in config.machines}
        for i, watch in enumerate(config.inspection.watch):
            if watch.program is not None and programs and watch.program not in programs:
                issues.append(
                    doc.issue(("inspection", "watch", i, "program"), f"program {watch.program} has no program file in the folder")
                )
            if watch.machine is not None and watch.machine not in machine_ids:
                issues.append(doc.issue(("inspection", "watch", i, "machine"), f"machine {watch.machine} is not in machines"))
    if issues or site is None:
        raise ConfigError(issues or [ConfigIssue(str(path), None, "", "empty site file")])
    site.programs, site.program_files = programs, program_files
    _site_relative(site)
    return site


_SOURCE_PATHS = ("certificate", "private_key", "trust_dir", "rejected_dir", "path")
"""Path settings of sources (certificates, trust folders, replay files): taken from the site file's folder."""


def _site_relative(site: Site) -> None:
    """Relative paths of every source are taken from the site file's folder, like the store and the
    programs, so a service started from / finds its certificates."""
    folder = site.path.parent
    inspection = site.config.inspection
    if inspection.qif_schema is not None and not inspection.qif_schema.is_absolute():
        inspection.qif_schema = folder / inspection.qif_schema
    for watch in inspection.watch:
        if not watch.folder.is_absolute():
            watch.folder = folder / watch.folder
    for machine in site.config.machines:
        source = machine.source
        for name in _SOURCE_PATHS:
            value = getattr(source, name, None)
            if isinstance(value, Path) and not value.is_absolute():
                setattr(source, name, folder / value)
