"""What `monitor check` verifies beyond the schema: what the daemon would only find out later.

:func:`offline_issues` needs no server: the environment variables a source names are set, the
certificate, key and trust folder exist (paths are site-relative). :func:`connect_check` also
connects to every source and resolves every mapped signal, per machine, so a new user sees what is
missing before the first part is lost.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from monitor.config import MtConnectMachine, OpcUaMachine, ReplayMachine, Site
from monitor.errors import ConfigIssue, MonitorError
from monitor.yamlmarks import load_yaml

__all__ = ["SourceCheck", "connect_check", "offline_issues"]


def offline_issues(site: Site, environ: dict[str, str] | None = None) -> list[ConfigIssue]:
    """Problems the daemon would meet when it connects, found without connecting (file:line key)."""
    from adapters.opcua.session import security_file_problems

    env = os.environ if environ is None else environ
    doc = load_yaml(site.path, dict(env))
    out: list[ConfigIssue] = []
    for i, machine in enumerate(site.config.machines):
        source = machine.source
        for key in ("username_env", "password_env"):
            name = getattr(source, key, None)
            if isinstance(name, str) and name not in env:
                what = "user name" if key == "username_env" else "password"
                out.append(
                    doc.issue(
                        ("machines", i, "source", key),
                        f"environment variable {name} (the {what} of {machine.id}) is not set here; "
                        "set it for the daemon (e.g. in the service's environment file)",
                    )
                )
        if isinstance(machine, OpcUaMachine):
            for problem in security_file_problems(source):  # type: ignore[arg-type]
                key = problem.split(" ", 1)[0]
                out.append(doc.issue(("machines", i, "source", key), problem))
        if isinstance(machine, ReplayMachine) and not machine.source.path.is_file():
            out.append(doc.issue(("machines", i, "source", "path"), f"replay file {machine.source.path} does not exist"))
    return out


@dataclass
class SourceCheck:
    """One source after connecting: how many mapped signals resolved, and why the others did not."""

    machine: str
    source: str
    error: str | None = None
    resolved: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "source": self.source,
            "ok": self.ok,
            "error": self.error,
            "resolved": self.resolved,
            "missing": self.missing,
        }


async def connect_check(site: Site, *, timeout_s: float = 15.0) -> list[SourceCheck]:
    """Connect to every source (at the same time) and resolve every mapped signal."""

    async def one(machine: Any) -> SourceCheck:
        label = _source_label(machine)
        result = SourceCheck(machine.id, label)
        try:
            async with asyncio.timeout(timeout_s):
                if isinstance(machine, OpcUaMachine):
                    await _check_opcua(machine, result)
                elif isinstance(machine, MtConnectMachine):
                    await _check_mtconnect(machine, result)
                else:
                    result.resolved = sorted(machine.signals) if machine.source.path.is_file() else []
                    if not machine.source.path.is_file():
                        result.error = f"replay file {machine.source.path} does not exist"
        except TimeoutError:
            result.error = f"no answer within {timeout_s:g} s"
        except (MonitorError, OSError, aiohttp.ClientError) as exc:
            result.error = str(exc) or type(exc).__name__
        return result

    return list(await asyncio.gather(*(one(m) for m in site.config.machines)))


def _source_label(machine: Any) -> str:
    src = machine.source
    return f"{src.type} {getattr(src, 'endpoint', None) or getattr(src, 'url', None) or getattr(src, 'path', '')}"


async def _check_opcua(machine: OpcUaMachine, result: SourceCheck) -> None:
    from asyncua import ua

    from adapters.opcua.addressing import parse_address, resolve
    from adapters.opcua.config import OpcUaSignal
    from adapters.opcua.session import close_quietly, open_client

    client = await open_client(machine.source)
    try:
        addresses = {
            s: parse_address(spec if isinstance(spec, str) else spec.node if isinstance(spec, OpcUaSignal) else str(spec))
            for s, spec in machine.signals.items()
        }
        resolution = await resolve(client, addresses, machine.source.namespaces)
        result.missing.update(resolution.missing)
        names = list(resolution.nodes)
        if names:
            # a NodeId is not checked by resolving it: read it, as creating the monitored item would
            values = await client.uaclient.read_attributes([resolution.nodes[n] for n in names], ua.AttributeIds.Value)
            for name, dv in zip(names, values, strict=True):
                code = dv.StatusCode
                if code is not None and code.name in ("BadNodeIdUnknown", "BadNodeIdInvalid", "BadAttributeIdInvalid"):
                    result.missing[name] = f"node {addresses[name]} not on this server ({code.name})"
                else:
                    result.resolved.append(name)
    finally:
        await close_quietly(client)


async def _check_mtconnect(machine: MtConnectMachine, result: SourceCheck) -> None:
    from adapters.mtconnect.client import AgentClient
    from adapters.mtconnect.mapping import resolve

    async with aiohttp.ClientSession() as session:
        probe = await AgentClient(str(machine.source.url), session).probe(machine.source.device)
    for signal, spec in machine.signals.items():
        try:
            resolve(probe, machine.source.device, {signal: spec})
        except MonitorError as exc:
            result.missing[signal] = str(exc)
        else:
            result.resolved.append(signal)
