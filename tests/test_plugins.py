"""The plugin registry: every entry resolves to code with the one signature of its kind, and every
source type and output section the site file accepts has an entry."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter
from monitor import config as config_module
from monitor import plugins
from monitor.errors import ConfigError, MonitorError
from monitor.sinks.config import OutputConfig, SinksConfig


@pytest.mark.parametrize("plugin", plugins.SOURCES, ids=lambda p: p.type)
def test_every_adapter_is_built_one_way(plugin: plugins.SourcePlugin) -> None:
    factory = plugins.adapter_factory(plugin.type)
    assert inspect.isclass(factory) and issubclass(factory, Adapter)
    params = inspect.signature(factory).parameters
    first = next(iter(params.values()))
    assert first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD  # the machine's spec
    assert params["resume"].kind is inspect.Parameter.KEYWORD_ONLY and params["resume"].default is None
    assert all(p.default is not inspect.Parameter.empty for p in list(params.values())[1:])


@pytest.mark.parametrize("plugin", plugins.SOURCES, ids=lambda p: p.type)
def test_every_source_config_names_its_type_and_builds_from_a_url(plugin: plugins.SourcePlugin) -> None:
    module, _, attr = plugin.config.partition(":")
    cls = getattr(__import__(module, fromlist=[attr]), attr)
    assert typing.get_args(cls.model_fields["type"].annotation) == (plugin.type,)
    url = {"opcua": "opc.tcp://cnc:4840", "mtconnect": "http://agent:5000", "replay": "file:///tmp/x.jsonl"}[plugin.type]
    assert cls.for_url(url).type == plugin.type
    for scheme in plugin.schemes:
        assert plugins.source_for_url(f"{scheme}://host:1").type == plugin.type


@pytest.mark.parametrize("plugin", [p for p in plugins.SOURCES if p.discover], ids=lambda p: p.type)
def test_every_discoverer_takes_a_source_and_a_filter(plugin: plugins.SourcePlugin) -> None:
    found = plugins.discoverer(plugin.type)
    assert inspect.iscoroutinefunction(found)
    assert list(inspect.signature(found).parameters)[:2] == ["source", "filter"]


def test_every_source_type_of_the_site_file_has_a_plugin() -> None:
    machine_types = typing.get_args(typing.get_args(config_module.MachineConfig)[0])
    types = {typing.get_args(typing.get_args(m)[0].model_fields["source"].annotation.model_fields["type"].annotation)[0]
             for m in machine_types}  # fmt: skip
    assert types == {p.type for p in plugins.SOURCES}


@pytest.mark.parametrize("plugin", plugins.SINKS, ids=lambda p: p.kind)
def test_every_output_builds_itself_from_its_section(plugin: plugins.SinkPlugin) -> None:
    cls: Any = plugins.sink_class(plugin.kind)
    assert list(inspect.signature(cls.from_config).parameters) == ["config", "context"]
    assert callable(cls.admits) and isinstance(inspect.getattr_static(cls, "secrets"), property)


def test_every_output_section_has_a_plugin() -> None:
    kinds = set()
    for field in SinksConfig.model_fields.values():
        for arg in typing.get_args(field.annotation) or (field.annotation,):
            for inner in typing.get_args(arg) or (arg,):
                if isinstance(inner, type) and issubclass(inner, OutputConfig):
                    kinds.add(inner.kind)
    assert kinds == {p.kind for p in plugins.SINKS}


def test_unknown_types_and_urls_say_what_is_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown source type 'modbus'; one of opcua, mtconnect, replay"):
        plugins.adapter_factory("modbus")
    with pytest.raises(MonitorError, match="cannot be discovered"):
        plugins.discoverer("replay")
    with pytest.raises(MonitorError, match=r"use one of opc\.tcp://, http://, https://"):
        plugins.source_for_url("modbus://plc:502")
    with pytest.raises(ConfigError, match="unknown output 'kafka'"):
        plugins.sink_class("kafka")
