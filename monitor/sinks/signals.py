"""Which raw observations an output keeps, shared by the InfluxDB sink and the store's signal history.

Separate from :mod:`monitor.sinks.influx` so that keeping signal history never imports an
InfluxDB client (a site without InfluxDB never loads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from monitor.model import Alert, PartRecord
from monitor.sinks.base import SinkEvent
from monitor.sinks.config import RawSignalConfig

__all__ = ["SignalFilter", "time_ns"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_ns(t: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float rounding), for an aware datetime.

    >>> time_ns(datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
    1767225600000001000
    """
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return ((t - _EPOCH) // timedelta(microseconds=1)) * 1000


class SignalFilter:
    """Which events an output keeps; a pure, bounded filter (:meth:`RunningSink.offer`, signal history).

    Part records and alerts pass unless switched off. An observation passes according to its
    signal's mode: ``off`` (or unlisted) never, ``change`` when its value differs from the last
    one that passed for that machine and signal, ``downsample`` when it is the first in its
    ``interval_s`` bucket. State is one entry per machine and configured signal.

    >>> from monitor.model import Observation
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> f = SignalFilter({"spindle.load": RawSignalConfig(mode="downsample", interval_s=1.0)})
    >>> [f(Observation("m", "spindle.load", t + timedelta(seconds=s), 1.0)) for s in (0, 0.5, 1.0, 1.2, 3.1)]
    [True, False, True, False, True]
    """

    def __init__(self, signals: Mapping[str, RawSignalConfig], *, parts: bool = True, alerts: bool = True) -> None:
        self._signals = dict(signals)
        self._parts = parts
        self._alerts = alerts
        self._last: dict[tuple[str, str], object] = {}

    def __call__(self, event: SinkEvent) -> bool:
        if isinstance(event, PartRecord):
            return self._parts
        if isinstance(event, Alert):
            return self._alerts
        mode = self._signals.get(event.signal)
        if mode is None or mode.mode == "off":
            return False
        key = (event.machine, event.signal)
        if mode.mode == "change":
            marker: object = event.value
        else:
            assert mode.interval_s is not None
            marker = time_ns(event.time) // int(mode.interval_s * 1e9)
        if key in self._last and self._last[key] == marker:
            return False
        self._last[key] = marker
        return True
