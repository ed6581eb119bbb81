"""Builds the site's configured outputs, each wrapped in a RunningSink (queue, retry, spool).

One path for every output type: the section's ``kind`` picks the sink class, which builds itself
from its section (``from_config``), and :meth:`RunningSink.for_output` adds what all outputs share.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from monitor.config import Site
from monitor.model import Alert
from monitor.sinks.base import RunningSink, SinkContext

__all__ = ["SINKS", "build_sinks"]

SINKS: dict[str, str] = {
    "influx": "monitor.sinks.influx:InfluxSink",
    "mqtt": "monitor.sinks.mqtt:MqttSink",
    "webhook": "monitor.sinks.webhook:WebhookSink",
}
"""Which sink class serves which output section; imported on first use."""


def build_sinks(site: Site, *, open_alerts: Sequence[Alert] = ()) -> list[RunningSink]:
    """Every output the site file configures, in a fixed order (influx, mqtt, webhooks)."""
    sinks: list[RunningSink] = []
    for name, config in site.config.sinks.outputs():
        module, _, attr = SINKS[config.kind].partition(":")
        cls: Any = getattr(importlib.import_module(module), attr)
        context = SinkContext(site.config.site, name, site.programs, open_alerts)
        sinks.append(RunningSink.for_output(cls.from_config(config, context), config, base_dir=site.path.parent))
    return sinks
