"""Site-file settings of an OPC UA source and of one OPC UA signal (validated by pydantic).

A machine read over OPC UA looks like this in the site file::

    - id: vmc-01
      source:
        type: opcua
        endpoint: "opc.tcp://10.0.0.5:4840"
        publishing_interval_ms: 500
        sampling_interval_ms: 100
        security_policy: Basic256Sha256
        security_mode: SignAndEncrypt
        certificate: pki/own/cert.der
        private_key: pki/own/key.pem
        trust_dir: pki/trusted
        username_env: VMC01_OPCUA_USER
        password_env: VMC01_OPCUA_PASSWORD
      signals:
        spindle.load: "CNC:CncInterface/CNC:CncSpindleList/app:S1/CNC:ActLoad"
        probe.hole1_x: {node: "nsu=urn:vendor:cnc;s=Macro.R500", queue_size: 20}

Addresses (``node``) are NodeIds with the namespace written as its URI (``nsu=URI;s=...`` or
``ns=URI;s=...``; a numeric index other than 0 is refused because servers may renumber their
namespaces on restart) or browse paths from the Objects folder whose elements carry a prefix from
:data:`adapters.opcua.addressing.PREFIXES` (``MA``, ``MT``, ``CNC``, ``DI``, ``IA``, ``UA``,
``app``) or from ``namespaces`` below. See docs/opcua.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from monitor.retry import check_backoff_bounds

__all__ = [
    "DEFAULT_IDLE_STATES",
    "REGISTER_KINDS",
    "SECURITY_MODES",
    "SECURITY_POLICIES",
    "BetweenParts",
    "OpcUaAddress",
    "OpcUaOffsets",
    "OpcUaRegister",
    "OpcUaSignal",
    "OpcUaSource",
]

SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
"""Security policies the adapter speaks (OPC UA Part 7 names, without the URI prefix)."""

SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
"""Message security modes; ``None`` only with policy ``None``."""


class OpcUaSource(BaseModel):
    """How to reach one OPC UA server: ``source: {type: opcua, endpoint: ...}``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port[/path]")
    publishing_interval_ms: float = Field(
        default=500.0, gt=0, description="how often the server sends the queued changes of one subscription"
    )
    sampling_interval_ms: float = Field(
        default=100.0,
        ge=0,
        description="how often the server samples each value (default for signals); 0 = as fast as it can",
    )
    queue_size: int = Field(
        default=50,
        ge=1,
        description=(
            "server-side queue per monitored item (default for signals); must cover "
            "publishing_interval_ms / sampling_interval_ms or changes between publishes are lost"
        ),
    )
    stale_after_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "reconnect when connected but neither a value nor a keep-alive arrived for this long "
            "(keep-alives arrive at least every publishing interval x keepalive_count)"
        ),
    )
    keepalive_count: int = Field(
        default=10, ge=1, description="publishing intervals without changes before the server sends a keep-alive"
    )
    request_timeout_s: float = Field(default=4.0, gt=0, description="time allowed for one request to the server")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="first wait after a lost or failed connection")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="cap of the exponential, jittered backoff")
    verify_interval_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "read every mapped value this often and compare it with what the subscription delivered; a change "
            "still not delivered at the next read means the subscription went silent: reconnect (0 = never)"
        ),
    )
    history: Literal["auto", "off"] = Field(
        default="auto",
        description=(
            "auto: after a reconnect or a restart, read what was missed from the server's history (HistoryRead) "
            "when every mapped node keeps history; off: always record the loss as a gap"
        ),
    )
    history_max_values: int = Field(
        default=200_000, ge=1, description="most values read back from history for one gap; a larger gap is recorded as lost"
    )
    notification_queue: int = Field(
        default=10_000,
        ge=1,
        description="client-side bound on received but not yet processed notifications; overflow is counted",
    )
    security_policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = Field(
        default="None", description="OPC UA security policy of the secure channel"
    )
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = Field(
        default="None", description="Sign or SignAndEncrypt when a policy is set"
    )
    certificate: Path | None = Field(
        default=None,
        description="client application certificate (DER or PEM), e.g. from `monitor opcua-cert`; relative to the site file",
    )
    private_key: Path | None = Field(
        default=None, description="private key of the client certificate (PEM or DER); relative to the site file"
    )
    trust_dir: Path | None = Field(
        default=None,
        description="folder of trusted server (or CA) certificates, relative to the site file; an unknown server "
        "certificate is refused and saved to rejected_dir for review",
    )
    rejected_dir: Path | None = Field(
        default=None,
        description="where a refused server certificate is written for review, relative to the site file "
        "(default: <trust_dir>/../rejected)",
    )
    application_uri: str | None = Field(
        default=None,
        description="client ApplicationUri; default: the URI in the certificate's SubjectAltName",
    )
    username_env: str | None = Field(
        default=None, description="name of the environment variable holding the user name (never the name itself)"
    )
    password_env: str | None = Field(default=None, description="name of the environment variable holding the password")
    namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="extra browse-path prefixes: {prefix: namespace URI}; `app` overrides the server's own namespace",
    )

    @classmethod
    def for_url(cls, url: str, **options: Any) -> Self:
        """Settings for the server at ``url`` (``monitor discover``), defaults for everything else."""
        return cls.model_validate({**options, "type": "opcua", "endpoint": url})

    @model_validator(mode="after")
    def _security_is_complete(self) -> OpcUaSource:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError("security_policy and security_mode must both be None or both be set")
        if self.security_policy != "None":
            missing = [k for k in ("certificate", "private_key", "trust_dir") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"security_policy {self.security_policy} needs {', '.join(missing)}")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        check_backoff_bounds(self.reconnect_min_s, self.reconnect_max_s, "reconnect_min_s", "reconnect_max_s")
        return self


class OpcUaSignal(BaseModel):
    """One signal mapped with options; a plain string is a NodeId or browse path with the source's defaults."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    node: str = Field(min_length=1, description="NodeId with namespace URI, or browse path from Objects")
    sampling_interval_ms: float | None = Field(default=None, ge=0, description="overrides the source's default")
    queue_size: int | None = Field(default=None, ge=1, description="overrides the source's default")
    deadband: float | None = Field(
        default=None, ge=0, description="report only changes larger than this (absolute, or percent of EURange)"
    )
    deadband_type: Literal["absolute", "percent"] = Field(
        default="absolute", description="percent needs the variable's EURange property on the server"
    )


def _address_kind(v: Any) -> str:
    return "str" if isinstance(v, str) else "spec"


OpcUaAddress = Annotated[Annotated[str, Tag("str")] | Annotated[OpcUaSignal, Tag("spec")], Discriminator(_address_kind)]
"""One ``signals:`` entry of an OPC UA machine: a NodeId or browse path, or :class:`OpcUaSignal` with options."""


REGISTER_KINDS = ("work_offset", "tool_length_wear", "tool_radius_wear", "tool_diameter_wear", "lathe_x_wear", "lathe_z_wear")
"""The register kinds of monitor.model.RegisterKind, by value (adapters do not depend on the domain's enum)."""

_TOOL_REGISTERS = frozenset(REGISTER_KINDS) - {"work_offset"}

DEFAULT_IDLE_STATES = ("READY", "STOPPED", "PROGRAM_COMPLETED", "ENDED", "IDLE")
"""Execution states (MTConnect Execution and OPC 40501 program states, compared case-insensitively)
in which no part is being cut. INTERRUPTED, FEED_HOLD and OPTIONAL_STOP are not among them: the
part is still in the machine, half cut."""


class OpcUaRegister(BaseModel):
    """One controller register the monitor may write: which one, its node, and the limits of a change.

    ``direction`` is the convention of the controller's register against the monitor's: the
    monitor computes a change so that the register *value* grows by it when the control adds the
    register to the cut as monitor/registers.py assumes (work offset: the part zero moves by +change;
    wear: the tool cuts as if that much smaller/shorter). A control that stores the register with the
    opposite sign (some store wear as a negative "compensation") is ``inverted``: the monitor then
    writes ``old - change``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: Literal["work_offset", "tool_length_wear", "tool_radius_wear", "tool_diameter_wear", "lathe_x_wear", "lathe_z_wear"] = (
        Field(alias="register", description="the register's kind, as a feature's offset.register names it")
    )
    work_offset: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\- ]{1,16}$",
        description="for register work_offset: which one (G54, G55, G54.1 P1 ...); default G54",
    )
    axis: Literal["x", "y", "z"] | None = Field(default=None, description="for register work_offset: the axis (x, y or z)")
    tool: str | None = Field(
        default=None, min_length=1, description="for a tool register: the tool as the program file names it (T12)"
    )
    node: str = Field(min_length=1, description="the register's NodeId with namespace URI, or browse path from Objects")
    max_change: float = Field(gt=0, description="largest change (mm, either sign) one write may make; larger is refused")
    max_batch_change: float = Field(
        gt=0,
        description="largest sum of the sizes of every change applied to this register in one batch (mm); "
        "a write that would pass it is refused",
    )
    auto_max_change: float | None = Field(
        default=None,
        gt=0,
        description="largest change one automatic write (a feature's offset.auto_apply) may make; default a "
        "quarter of max_change",
    )
    direction: Literal["same", "inverted"] = Field(
        default="same",
        description="same: the monitor writes old + change; inverted: the control stores the register with the "
        "opposite sign, the monitor writes old - change",
    )
    resolution: float = Field(
        default=0.0001,
        gt=0,
        description="the register's step (mm): a written value is rounded to it, and the value read back must be "
        "within half a step of it",
    )

    @model_validator(mode="after")
    def _identity(self) -> OpcUaRegister:
        if self.kind == "work_offset":
            if self.axis is None:
                raise ValueError("a work_offset register needs axis (x, y or z)")
            if self.tool is not None:
                raise ValueError("a work_offset register has no tool; give work_offset (G54 ...) and axis")
        else:
            if self.tool is None:
                raise ValueError(f"a {self.kind} register needs the tool whose register it is (tool: T12)")
            if self.work_offset is not None or self.axis is not None:
                raise ValueError(f"a {self.kind} register has no work_offset or axis; give the tool")
        if self.max_batch_change < self.max_change:
            raise ValueError(f"max_batch_change ({self.max_batch_change}) is below max_change ({self.max_change})")
        if self.auto_max_change is not None and self.auto_max_change > self.max_change:
            raise ValueError(f"auto_max_change ({self.auto_max_change}) must not exceed max_change ({self.max_change})")
        return self

    @property
    def key(self) -> str:
        """How the register is named in commands and records: ``G54.X``, ``T12.tool_diameter_wear``."""
        if self.kind == "work_offset":
            return f"{self.work_offset or 'G54'}.{(self.axis or '').upper()}"
        return f"{self.tool}.{self.kind}"

    @property
    def auto_limit(self) -> float:
        """The largest change an automatic write may make."""
        return self.auto_max_change if self.auto_max_change is not None else self.max_change / 4.0


class BetweenParts(BaseModel):
    """When the machine is between parts, so a register may be written without changing a part half cut."""

    model_config = ConfigDict(extra="forbid")

    signal: str | None = Field(
        default="execution",
        description="the machine's mapped signal that says it (default execution); or give node",
    )
    node: str | None = Field(
        default=None, description="a NodeId or browse path to watch instead of a mapped signal (e.g. a PLC 'safe to write' bit)"
    )
    idle: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IDLE_STATES),
        min_length=1,
        description="values of that signal or node meaning no part is being cut (case-insensitive; a boolean node: true)",
    )
    timeout_s: float = Field(
        default=600.0, gt=0, description="how long a write waits for the machine to be between parts before it is refused"
    )


class OpcUaOffsets(BaseModel):
    """The registers the monitor may write on this machine, and how (``offsets:`` of an OPC UA machine)."""

    model_config = ConfigDict(extra="forbid")

    registers: list[OpcUaRegister] = Field(min_length=1, description="the writable registers: see offsets.registers[]")
    between_parts: BetweenParts = Field(default_factory=BetweenParts, description="see offsets.between_parts")
    allow_insecure: bool = Field(
        default=False,
        description="allow writes over a connection that is not SignAndEncrypt (a simulator on this computer only); "
        "automatic writes are refused over it all the same",
    )
    username_env: str | None = Field(
        default=None,
        description="environment variable with the user name that writes (default: the source's user); a read-only "
        "user for the subscriptions and a write user for offsets keeps least privilege",
    )
    password_env: str | None = Field(default=None, description="environment variable with that user's password")

    @model_validator(mode="after")
    def _unique(self) -> OpcUaOffsets:
        seen: dict[str, int] = {}
        for i, reg in enumerate(self.registers):
            first = seen.setdefault(reg.key, i)
            if first != i:
                raise ValueError(f"registers[{first}] and registers[{i}] are both {reg.key}")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        if self.between_parts.signal is None and self.between_parts.node is None:
            raise ValueError("between_parts needs a signal or a node")
        return self

    def find(self, key: str) -> OpcUaRegister | None:
        """The register named ``key`` (``G54.X``, ``T12.tool_diameter_wear``; case-insensitive)."""
        return next((r for r in self.registers if r.key.lower() == key.lower()), None)
