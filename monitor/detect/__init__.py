"""Drift detectors: small pure classes (update in, result out), no I/O, no clock, no asyncio.

Importing the package registers every detector in :data:`monitor.detect.base.REGISTRY`, which the
contract test suite walks: defaults construct, docstrings exist, state round-trips through JSON,
NaN is skipped, and a seeded run repeats exactly.
"""

from monitor.detect.attribution import Attribution
from monitor.detect.base import REGISTRY, Detector, DetectorResult
from monitor.detect.capability import Capability, capability
from monitor.detect.cusum import Cusum
from monitor.detect.evidence import FeatureEvidence
from monitor.detect.ewma import Ewma
from monitor.detect.forecast import BreachForecast, breach_forecast
from monitor.detect.runrules import RunRules
from monitor.detect.selfstart import QStatistic, SelfStartingCusum
from monitor.detect.trend import TrendFit, TrendModel

__all__ = [
    "REGISTRY",
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
    "capability",
]
