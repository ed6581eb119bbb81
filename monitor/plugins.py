"""The plugin registry: which code serves which ``type`` of the site file, for every kind of plugin.

One table, one way to pick: a machine's ``source: {type: ...}`` picks its adapter (and how
``monitor discover`` browses that kind of controller), a ``sinks:`` section picks its output. Entries
are import paths resolved on first use, so a site with only MTConnect machines never imports
asyncua, and a site without InfluxDB never imports influxdb-client. Adding a protocol or an
output is one entry here plus its config type in :mod:`monitor.config`; no entry points until a
third party needs them (Telegraf's ``plugins/inputs/registry.go`` is the model).

Every adapter is built the same way, ``factory(spec, resume=position)`` (:class:`AdapterFactory`);
every output the same way, ``cls.from_config(section, context)`` wrapped by
:meth:`RunningSink.for_output`; every discoverer the same way, ``await discover(source, filter)``.
``tests/test_plugins.py`` checks each entry against those signatures.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from monitor.errors import ConfigError, ConfigIssue, MonitorError

if TYPE_CHECKING:
    from adapters.base import AdapterFactory, DiscoveredSignal
    from monitor.config import Site
    from monitor.model import Alert
    from monitor.sinks.base import ConfiguredSink, RunningSink, SinkContext

__all__ = [
    "SINKS",
    "SOURCES",
    "Discoverer",
    "SinkClass",
    "SinkPlugin",
    "SourcePlugin",
    "adapter_factory",
    "build_sinks",
    "discoverer",
    "sink_class",
    "source_for_url",
    "source_title",
]


class Discoverer(Protocol):
    """``monitor discover``'s view of one protocol: the readable values of a controller."""

    async def __call__(
        self, source: Any, filter: str | None = None, *, warnings: list[str] | None = None
    ) -> list[DiscoveredSignal]: ...


class SinkClass(Protocol):
    """An output class: it builds itself from its ``sinks:`` section and what it may know of the site."""

    def from_config(self, config: Any, context: SinkContext) -> ConfiguredSink: ...


@dataclass(frozen=True, slots=True)
class SourcePlugin:
    """One kind of machine source (``machines[].source.type``)."""

    type: str
    title: str
    """How people name the protocol in messages."""
    adapter: str
    """``module:Class`` of the adapter (an :class:`~adapters.base.AdapterFactory`)."""
    config: str
    """``module:Class`` of its ``source:`` settings; ``Class.for_url(url)`` builds them for discovery."""
    discover: str | None = None
    """``module:function`` listing a controller's readable values (a :class:`Discoverer`), if it can."""
    schemes: tuple[str, ...] = ()
    """URL schemes ``monitor discover URL`` sends to this plugin."""


@dataclass(frozen=True, slots=True)
class SinkPlugin:
    """One kind of output (a ``sinks:`` section; its config class says ``kind``)."""

    kind: str
    sink: str
    """``module:Class`` of the sink (a :class:`SinkClass`)."""


SOURCES: tuple[SourcePlugin, ...] = (
    SourcePlugin(
        "opcua",
        "OPC UA",
        adapter="adapters.opcua.client:OpcUaAdapter",
        config="adapters.opcua.config:OpcUaSource",
        discover="adapters.opcua.discover:discover",
        schemes=("opc.tcp",),
    ),
    SourcePlugin(
        "mtconnect",
        "MTConnect",
        adapter="adapters.mtconnect.client:MtConnectAdapter",
        config="adapters.mtconnect.config:MtConnectSource",
        discover="adapters.mtconnect.discover:discover",
        schemes=("http", "https"),
    ),
    SourcePlugin("replay", "replay", adapter="adapters.replay:ReplayAdapter", config="adapters.replay_config:ReplaySource"),
)

SINKS: tuple[SinkPlugin, ...] = (
    SinkPlugin("influx", "monitor.sinks.influx:InfluxSink"),
    SinkPlugin("mqtt", "monitor.sinks.mqtt:MqttSink"),
    SinkPlugin("webhook", "monitor.sinks.webhook:WebhookSink"),
)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _source(source_type: str) -> SourcePlugin:
    for plugin in SOURCES:
        if plugin.type == source_type:
            return plugin
    known = ", ".join(p.type for p in SOURCES)
    raise ConfigError([ConfigIssue("<site>", None, "source.type", f"unknown source type {source_type!r}; one of {known}")])


def source_title(source_type: str) -> str:
    """The protocol's name for messages: OPC UA, MTConnect..."""
    return _source(source_type).title


def adapter_factory(source_type: str) -> AdapterFactory:
    """The adapter class of a source type; an unknown type is a config error naming the choices."""
    factory: AdapterFactory = _load(_source(source_type).adapter)
    return factory


def discoverer(source_type: str) -> Discoverer:
    """How ``monitor discover`` browses a source type."""
    plugin = _source(source_type)
    if plugin.discover is None:
        raise MonitorError(f"{source_type} sources cannot be discovered; they have no controller to browse")
    found: Discoverer = _load(plugin.discover)
    return found


def source_for_url(url: str, **options: Any) -> Any:
    """The ``source:`` settings for a controller URL (the scheme picks the type), for discovery."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    for plugin in SOURCES:
        if scheme in plugin.schemes:
            return _load(plugin.config).for_url(url, **options)
    schemes = ", ".join(f"{s}://" for p in SOURCES for s in p.schemes)
    raise MonitorError(f"unsupported URL {url!r}: use one of {schemes}")


def sink_class(kind: str) -> SinkClass:
    """The output class of a ``sinks:`` section kind."""
    for plugin in SINKS:
        if plugin.kind == kind:
            cls: SinkClass = _load(plugin.sink)
            return cls
    raise ConfigError([ConfigIssue("<site>", None, "sinks", f"unknown output {kind!r}; one of {[p.kind for p in SINKS]}")])


def build_sinks(site: Site, *, open_alerts: Sequence[Alert] = ()) -> list[RunningSink]:
    """Every output the site file configures, each in its RunningSink, in the section order."""
    from monitor.sinks.base import RunningSink, SinkContext

    out: list[RunningSink] = []
    for name, config in site.config.sinks.outputs():
        context = SinkContext(site.config.site, name, site.programs, open_alerts)
        sink = sink_class(config.kind).from_config(config, context)
        out.append(RunningSink.for_output(sink, config, base_dir=site.path.parent))
    return out
