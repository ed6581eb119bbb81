"""Builds the site's configured outputs, each wrapped in a RunningSink (buffer, retry, spool).

One function per output type; the daemon calls :func:`build_sinks` and owns the results.
"""

from __future__ import annotations

from monitor.config import Site
from monitor.sinks.base import RunningSink

__all__ = ["build_sinks"]


def build_sinks(site: Site) -> list[RunningSink]:
    """Every output the site file configures, in a fixed order (influx, mqtt, webhooks)."""
    sinks: list[RunningSink] = []
    config = site.config.sinks
    base_dir = site.path.parent
    if config.influx is not None:
        from monitor.sinks.influx import build_influx_sink

        sinks.append(build_influx_sink(config.influx, site.programs, base_dir=base_dir, site=site.config.site))
    if config.mqtt is not None:
        from monitor.sinks.mqtt import build_mqtt_sink, open_alerts_in

        seed = open_alerts_in(site.store_path)
        sinks.append(build_mqtt_sink(config.mqtt, site.config.site, base_dir=base_dir, open_alerts=seed))
    if config.webhooks:
        from monitor.sinks.webhook import build_webhook_sink

        for i, hook in enumerate(config.webhooks, start=1):
            sinks.append(build_webhook_sink(hook, site.config.site, base_dir=base_dir, name=f"webhook-{i}"))
    return sinks
