"""Drift detectors: small pure classes (update in, result out), no I/O, no clock, no asyncio.

Every detector registers itself in :data:`monitor.detect.base.REGISTRY` when its module is imported;
``monitor.detect.REGISTRY`` imports them all first, and the contract test suite walks it: defaults
construct, docstrings exist, state round-trips through JSON, NaN is skipped, and a seeded run
repeats exactly.

The names below are imported on first use (PEP 562): loading the site's configuration, which reads
:mod:`monitor.detect.config`, must not pay for scipy and every detector (a CLI command starts in a
fraction of the time). The capability function is imported from :mod:`monitor.detect.capability`:
a lazy package cannot also name a function like one of its submodules (importing the submodule
rebinds the name).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.detect.attribute import AttributeCount
    from monitor.detect.attribution import Attribution
    from monitor.detect.base import REGISTRY, Detector, DetectorResult
    from monitor.detect.capability import Capability
    from monitor.detect.cusum import Cusum
    from monitor.detect.evidence import FeatureEvidence
    from monitor.detect.ewma import Ewma
    from monitor.detect.forecast import BreachForecast, breach_forecast, warm_up
    from monitor.detect.runrules import RunRules
    from monitor.detect.selfstart import QStatistic, SelfStartingCusum
    from monitor.detect.trend import TrendFit, TrendModel

__all__ = [
    "REGISTRY",
    "AttributeCount",
    "Attribution",
    "BreachForecast",
    "Capability",
    "Cusum",
    "Detector",
    "DetectorResult",
    "Ewma",
    "FeatureEvidence",
    "QStatistic",
    "RunRules",
    "SelfStartingCusum",
    "TrendFit",
    "TrendModel",
    "breach_forecast",
    "warm_up",
]

_WHERE = {
    "AttributeCount": "attribute",
    "Attribution": "attribution",
    "REGISTRY": "base",
    "Detector": "base",
    "DetectorResult": "base",
    "Capability": "capability",
    "Cusum": "cusum",
    "FeatureEvidence": "evidence",
    "Ewma": "ewma",
    "BreachForecast": "forecast",
    "breach_forecast": "forecast",
    "RunRules": "runrules",
    "QStatistic": "selfstart",
    "SelfStartingCusum": "selfstart",
    "TrendFit": "trend",
    "TrendModel": "trend",
    "warm_up": "forecast",
}
_DETECTORS = ("attribute", "attribution", "capability", "cusum", "ewma", "runrules", "selfstart", "trend")
"""Modules whose import registers detectors."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'monitor.detect' has no attribute {name!r}")
    if name == "REGISTRY":  # complete only once every detector module ran
        for detector in _DETECTORS:
            importlib.import_module(f"monitor.detect.{detector}")
    value = getattr(importlib.import_module(f"monitor.detect.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
