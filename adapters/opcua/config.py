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

__all__ = ["SECURITY_MODES", "SECURITY_POLICIES", "OpcUaAddress", "OpcUaSignal", "OpcUaSource"]

SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
"""Security policies the adapter speaks (OPC UA Part 7 names, without the URI prefix)."""

SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
"""Message security modes; ``None`` only with policy ``None``."""


class OpcUaSource(BaseModel):
    """How to reach one OPC UA server: ``source: {type: opcua, endpoint: ...}``."""

    model_config = ConfigDict(extra="forbid")

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

    model_config = ConfigDict(extra="forbid")

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
