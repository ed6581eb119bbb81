"""Which adapter class serves which ``source: {type: ...}`` of the site file.

Entries are import paths resolved on first use, so a site with only MTConnect machines never
imports asyncua.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monitor.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from adapters.base import Adapter

__all__ = ["ADAPTERS", "adapter_class"]

ADAPTERS: dict[str, str] = {
    "opcua": "adapters.opcua.client:OpcUaAdapter",
    "mtconnect": "adapters.mtconnect.client:MtConnectAdapter",
    "replay": "adapters.replay:ReplayAdapter",
}


def adapter_class(source_type: str) -> Callable[[Any], Adapter]:
    """The adapter class for a source type; an unknown type is a config error naming the choices."""
    try:
        target = ADAPTERS[source_type]
    except KeyError:
        raise ConfigError(
            [ConfigIssue("<site>", None, "source.type", f"unknown source type {source_type!r}; one of {sorted(ADAPTERS)}")]
        ) from None
    module_name, _, attr = target.partition(":")
    cls: Callable[[Any], Adapter] = getattr(importlib.import_module(module_name), attr)
    return cls
