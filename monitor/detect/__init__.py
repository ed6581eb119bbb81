"""Drift detectors: small pure classes (update in, result out), no I/O, no clock, no asyncio.

Importing the package registers every detector in :data:`monitor.detect.base.REGISTRY`, which the
contract test suite walks: defaults construct, docstrings exist, state round-trips through JSON,
NaN is skipped, and a seeded run repeats exactly.
"""

from monitor.detect.attribution import Attribution
from monitor.detect.base import REGISTRY
from monitor.detect.capability import Capability, capability
from monitor.detect.cusum import Cusum
from monitor.detect.ewma import Ewma
from monitor.detect.runrules import RunRules
from monitor.detect.selfstart import QStatistic, SelfStartingCusum
from monitor.detect.trend import TrendForecast

__all__ = [
    "REGISTRY",
    "Attribution",
    "Capability",
    "Cusum",
    "Ewma",
    "QStatistic",
    "RunRules",
    "SelfStartingCusum",
    "TrendForecast",
    "capability",
]
