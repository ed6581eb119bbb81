"""The InfluxDB time-series sink: part records, alert changes and chosen raw signals as points.

Three pieces, each testable alone:

- :class:`PointEncoder` turns a part record, alert or observation into one line-protocol line
  (schema in ``docs/influx.md``). Every point carries an explicit timestamp taken from the event
  (part end, alert change, controller time), so writing the same event twice writes the *same*
  point: InfluxDB keeps one point per series and timestamp, and a replay after an outage or a
  crash overwrites instead of duplicating.
- :class:`SignalFilter` decides which raw observations are written (off, every change, or
  downsampled), so a 100 Hz spindle load cannot dwarf everything else. It runs in
  :meth:`RunningSink.offer`, before anything is buffered or spooled.
- :class:`InfluxSink` writes batches through influxdb-client's aiohttp-based async API and
  translates every failure into :class:`SinkError`: connection errors, timeouts, 429 and 5xx are
  retryable (with the server's ``Retry-After``), as are 401/403/404 (a token or bucket an operator
  can fix without losing the spooled data); other 4xx (400 unparsable, 413 too large, 422 field
  type conflict) will never succeed and are set aside. The token never appears in any message.

:meth:`InfluxSink.from_config` wires the three from the site's ``sinks.influx`` section (the plugin
registry calls it; :meth:`RunningSink.for_output` adds the queue, spool and retries).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Self, cast

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from monitor.errors import SinkError
from monitor.model import Alert, AttributeFeature, Feature, Observation, PartRecord, SizeFeature
from monitor.retry import retry_after_s
from monitor.sinks.base import ProgramFeatures, RetryAfterError, SinkContext, SinkEvent
from monitor.sinks.config import InfluxConfig
from monitor.sinks.signals import SignalFilter, time_ns

__all__ = [
    "ALERT_MEASUREMENT",
    "FEATURE_MEASUREMENT",
    "PART_MEASUREMENT",
    "SIGNAL_MEASUREMENT",
    "InfluxSink",
    "Point",
    "PointEncoder",
    "SignalFilter",
    "feature_fields",
    "time_ns",
]

log = logging.getLogger(__name__)

PART_MEASUREMENT = "part"
FEATURE_MEASUREMENT = "feature"
ALERT_MEASUREMENT = "alert"
SIGNAL_MEASUREMENT = "signal"

_RETRYABLE_4XX = frozenset({401, 403, 404, 408, 429})


_NS: Any = WritePrecision.NS
_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ ", "\n": "\\n"})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n"})
_STRING_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\n"})

FieldValue = float | int | bool | str


class Point:
    """One line-protocol point; escaping per the InfluxDB line protocol reference.

    A tiny typed builder (influxdb-client's own ``Point`` is untyped and slower): tags with
    empty values and non-finite floats are skipped, as InfluxDB cannot store them.

    >>> Point("part").tag("machine", "vmc 1,a").field("msg", 'say "hi"').field("n", 3).field("ok", True).line(5)
    'part,machine=vmc\\\\ 1\\\\,a msg="say \\\\"hi\\\\"",n=3i,ok=true 5'
    """

    __slots__ = ("_fields", "_measurement", "_tags")

    def __init__(self, measurement: str) -> None:
        self._measurement = measurement.translate(_MEASUREMENT_ESCAPES)
        self._tags: list[str] = []
        self._fields: list[str] = []

    def tag(self, key: str, value: str) -> Point:
        if value:
            self._tags.append(f"{key.translate(_KEY_ESCAPES)}={value.translate(_KEY_ESCAPES)}")
        return self

    def field(self, key: str, value: FieldValue) -> Point:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = f"{value}i"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return self
            text = repr(value)
        else:
            text = '"' + value.translate(_STRING_ESCAPES) + '"'
        self._fields.append(f"{key.translate(_KEY_ESCAPES)}={text}")
        return self

    def line(self, timestamp_ns: int) -> str | None:
        """The line, or None when the point has no field (InfluxDB would refuse it)."""
        if not self._fields:
            return None
        head = ",".join([self._measurement, *sorted(self._tags)])
        return f"{head} {','.join(self._fields)} {timestamp_ns}"


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


class PointEncoder:
    """Line protocol for part records, alerts and observations (see ``docs/influx.md``).

    ``programs`` gives nominal values, so part points carry each feature's deviation and true
    position, not only the raw probe values.

    >>> from datetime import UTC, datetime, timedelta
    >>> from monitor.model import PartStatus
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> part = PartRecord("k1", "vmc-01", "O1234", 7, t, t + timedelta(seconds=90), PartStatus.COMPLETE,
    ...                   measurements={"probe.hole1_dia": 10.01})
    >>> tags, fields, stamp = PointEncoder().encode(part).split(" ")
    >>> tags
    'part,machine=vmc-01,program=O1234,status=complete'
    >>> fields.split(",")
    ['cycle_time_s=90.0', 'key="k1"', 'missing=0i', 'part_number=7i', 'probe.hole1_dia=10.01']
    >>> stamp
    '1767225690000000000'
    """

    def __init__(self, programs: Mapping[str, ProgramFeatures] | None = None, *, site: str = "") -> None:
        self._features: dict[str, list[Feature]] = {name: program.feature_models() for name, program in (programs or {}).items()}
        self.site = site

    def encode(self, event: SinkEvent) -> str | None:
        """Line protocol for one event (a part is its ``part`` point and one ``feature`` point per
        measured feature, one per line), or None when the event has nothing writable."""
        if isinstance(event, PartRecord):
            stamp = time_ns(event.end)
            lines = [self._part(event).line(stamp)]
            lines += [p.line(stamp) for p in self._feature_points(event)]
            return "\n".join(line for line in lines if line) or None
        if isinstance(event, Alert):
            return self._alert(event).line(time_ns(event.time))
        return self._signal(event).line(time_ns(event.time))

    def _point(self, measurement: str) -> Point:
        return Point(measurement).tag("site", self.site)

    def _feature_points(self, part: PartRecord) -> list[Point]:
        """One point per feature measured on the part, with its tolerance: a Grafana panel draws
        the band from the point's own ``lower``/``upper``/``nominal``, nothing typed in by hand."""
        points = []
        for feature in self._features.get(part.program, ()):
            fields = feature_fields(feature, part.measurements)
            if fields is None:
                continue
            p = (
                self._point(FEATURE_MEASUREMENT)
                .tag("machine", part.machine)
                .tag("program", part.program)
                .tag("feature", feature.name)
                .tag("kind", feature.kind if isinstance(feature, (SizeFeature, AttributeFeature)) else "position")
                .tag("status", str(part.status))
                .field("part_number", int(part.part_number))
            )
            for name in sorted(fields):
                p.field(name, fields[name])
            points.append(p)
        return points

    def encode_batch(self, batch: Sequence[SinkEvent]) -> str:
        lines = [line for line in (self.encode(e) for e in batch) if line]
        return "\n".join(lines)

    def _part(self, part: PartRecord) -> Point:
        p = (
            self._point(PART_MEASUREMENT)
            .tag("machine", part.machine)
            .tag("program", part.program)
            .tag("status", str(part.status))
        )
        fields: dict[str, FieldValue | None] = {
            "part_number": int(part.part_number),
            "key": part.key,
            "cycle_time_s": (part.end - part.start).total_seconds(),
            "missing": len(part.missing),
        }
        for signal, value in part.measurements.items():
            fields[signal] = float(value)  # one type per field, or InfluxDB refuses the batch
        for feature in self._features.get(part.program, ()):
            fields.update(_feature_fields(feature, part.measurements))
        spindle = part.spindle
        fields["spindle_mean_load"] = _finite(spindle.mean_load)
        fields["spindle_peak_load"] = _finite(spindle.peak_load)
        fields["spindle_energy"] = _finite(spindle.energy)
        fields["cutting_time_s"] = float(spindle.cutting_time) if spindle.cutting_time else None
        fields["tool_life"] = _finite(part.tool_life)
        if part.tools:
            fields["tool"] = part.tools[-1].tool
        if part.counter is not None:
            fields["counter"] = int(part.counter)
        for name in sorted(fields):
            field_value = fields[name]
            if field_value is not None:
                p.field(name, field_value)
        return p

    def _alert(self, alert: Alert) -> Point:
        p = (
            self._point(ALERT_MEASUREMENT)
            .tag("machine", alert.machine)
            .tag("program", alert.program)
            .tag("feature", alert.feature)
            .tag("kind", str(alert.kind))
            .tag("severity", str(alert.severity))
            .tag("state", str(alert.state))
            .field("message", alert.message)
            .field("part_number", int(alert.part_number))
            .field("alert_id", alert.id)
        )
        breach = _evidence_number(alert.evidence, "parts_to_breach")
        if breach is not None:
            p.field("parts_to_breach", breach)
        interval = alert.evidence.get("breach_interval")
        if interval is None and isinstance(alert.evidence.get("forecast"), dict):
            interval = alert.evidence["forecast"].get("breach_interval")
        if isinstance(interval, (list, tuple)) and len(interval) == 2:
            low, high = (_number(v) for v in interval)
            if low is not None and high is not None:
                p.field("parts_to_breach_low", low).field("parts_to_breach_high", high)
        return p

    def _signal(self, obs: Observation) -> Point:
        p = self._point(SIGNAL_MEASUREMENT).tag("machine", obs.machine).tag("signal", obs.signal)
        value = obs.value
        if isinstance(value, str):
            p.field("text", value)
        elif value is not None and obs.number is not None:
            p.field("value", obs.number)
        p.field("available", value is not None)
        return p


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _evidence_number(evidence: Mapping[str, Any], key: str) -> float | None:
    if key in evidence:
        return _number(evidence[key])
    nested = evidence.get("forecast")
    if isinstance(nested, Mapping) and key in nested:
        return _number(nested[key])
    return None


def _feature_fields(feature: Feature, measurements: Mapping[str, float]) -> dict[str, float]:
    """Deviation from nominal per feature, in mm: ``F.dev`` for sizes; ``F.dx``/``F.dy``/``F.tp``."""
    out: dict[str, float] = {}
    if isinstance(feature, AttributeFeature):
        passed = feature.passed(dict(measurements))
        if passed is not None:
            out[f"{feature.name}.passed"] = 1.0 if passed else 0.0
        return out
    if isinstance(feature, SizeFeature):
        value = measurements.get(feature.signal) if feature.signal is not None else None
        if value is not None:
            out[f"{feature.name}.dev"] = value - feature.nominal
            out[f"{feature.name}.nominal"] = feature.nominal
            if feature.lower is not None:
                out[f"{feature.name}.lower"] = feature.lower
            if feature.upper is not None:
                out[f"{feature.name}.upper"] = feature.upper
        return out
    for axis_name, axis in feature.axes:
        value = measurements.get(axis.signal)
        if value is not None:
            out[f"{feature.name}.d{axis_name}"] = value - axis.nominal
    tp = feature.true_position(dict(measurements))
    if tp is not None:
        out[f"{feature.name}.tp"] = tp
        out[f"{feature.name}.tp_used"] = tp / feature.tolerance
        out[f"{feature.name}.tolerance"] = feature.tolerance
    return out


def feature_fields(feature: Feature, measurements: Mapping[str, float]) -> dict[str, float] | None:
    """The fields of a ``feature`` point, or None when the part lacks the feature's values.

    ``value`` is what is judged (the size; the true position of a position feature), with
    ``nominal``, ``lower`` and ``upper`` (0, 0 and the zone diameter for true position), ``dev``
    (value - nominal) and ``used``: the signed share of the tolerance on the side the value lies
    (+1 at the upper limit, -1 at the lower), for position the share of the zone.

    >>> fields = feature_fields(SizeFeature("d", "probe.d", 10.0, 9.99, 10.02), {"probe.d": 10.01})
    >>> {name: round(value, 6) for name, value in (fields or {}).items()}
    {'value': 10.01, 'nominal': 10.0, 'lower': 9.99, 'upper': 10.02, 'dev': 0.01, 'used': 0.5}
    """
    if isinstance(feature, AttributeFeature):
        passed = feature.passed(dict(measurements))
        return None if passed is None else {"value": 1.0 if passed else 0.0, "passed": 1.0 if passed else 0.0}
    if isinstance(feature, SizeFeature):
        value = measurements.get(feature.signal) if feature.signal is not None else None
        if value is None or not math.isfinite(value):
            return None
        dev = value - feature.nominal
        out = {"value": value, "nominal": feature.nominal}
        if feature.lower is not None:
            out["lower"] = feature.lower
        if feature.upper is not None:
            out["upper"] = feature.upper
        out["dev"] = dev
        limit = feature.upper if dev >= 0 else feature.lower
        side = None if limit is None else abs(limit - feature.nominal)
        if side:
            out["used"] = dev / side
        return out
    tp = feature.true_position(dict(measurements))
    if tp is None or not math.isfinite(tp):
        return None
    out = {"value": tp, "nominal": 0.0, "lower": 0.0, "upper": feature.tolerance, "dev": tp, "used": tp / feature.tolerance}
    for axis_name, axis in feature.axes:
        axis_value = measurements.get(axis.signal)
        if axis_value is not None:
            out[f"d{axis_name}"] = axis_value - axis.nominal
    return out


def _server_message(exc: ApiException) -> str:
    message = getattr(exc, "message", None) or exc.reason or ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return " ".join(str(message).split())[:500]


class InfluxSink:
    """Writes batches of events to an InfluxDB v2 write API with influxdb-client's async client.

    Never blocks the event loop: encoding runs in a worker thread and the request goes through
    aiohttp. Raises :class:`SinkError` (or :class:`RetryAfterError`) for every failure.
    """

    def __init__(
        self,
        *,
        url: str,
        org: str,
        bucket: str,
        token: str = "",
        programs: Mapping[str, ProgramFeatures] | None = None,
        timeout_s: float = 10.0,
        verify_ssl: bool = True,
        name: str = "influx",
        site: str = "",
        admit: SignalFilter | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.org = org
        self.bucket = bucket
        self._token = token
        self._timeout_ms = int(timeout_s * 1000)
        self._verify_ssl = verify_ssl
        self.encoder = PointEncoder(programs, site=site)
        self._admit = admit
        self._client: InfluxDBClientAsync | None = None
        self._write_api: Any = None
        self._closed = False

    @classmethod
    def from_config(cls, config: InfluxConfig, context: SinkContext) -> Self:
        """The sink the site's ``sinks.influx`` section describes (``context.site`` tags every point)."""
        return cls(
            url=config.url,
            org=config.org,
            bucket=config.bucket,
            token=config.token.get_secret_value(),
            programs=context.programs,
            timeout_s=config.timeout_s,
            verify_ssl=config.verify_ssl,
            name=context.name,
            site=context.site,
            admit=SignalFilter(config.signals, parts=config.write_parts, alerts=config.write_alerts),
        )

    def reprogram(self, programs: Mapping[str, ProgramFeatures]) -> None:
        """A reload changed the program files: points from now on carry the new nominals and limits."""
        self.encoder = PointEncoder(programs, site=self.encoder.site)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a message (the token)."""
        return (self._token,) if self._token else ()

    def admits(self, event: SinkEvent) -> bool:
        """Parts, alerts and the configured raw signals (see :class:`SignalFilter`)."""
        return self._admit(event) if self._admit is not None else True

    def __repr__(self) -> str:
        return f"InfluxSink(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    async def write(self, batch: Sequence[SinkEvent]) -> None:
        if self._closed:
            raise SinkError(f"{self.name}: sink is closed", retryable=False)
        body = (
            await asyncio.to_thread(self.encoder.encode_batch, batch) if len(batch) > 50 else (self.encoder.encode_batch(batch))
        )
        if not body:
            return
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url, token=self._token, org=self.org, timeout=self._timeout_ms, verify_ssl=self._verify_ssl
            )
            self._write_api = self._client.write_api()
        where = f"{self.name} write to {self.url} (bucket {self.bucket})"
        try:
            await self._write_api.write(bucket=self.bucket, org=self.org, record=body, write_precision=_NS)
        except ApiException as exc:
            status = int(exc.status or 0)
            message = self._scrub(f"{where}: HTTP {status}: {_server_message(exc)}")
            if status == 429 or status >= 500 or status in _RETRYABLE_4XX:
                headers: Mapping[str, str] = exc.headers or {}
                raise RetryAfterError(message, retry_after=retry_after_s(headers.get("Retry-After"))) from None
            raise SinkError(message, retryable=False) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = self._scrub(str(exc) or type(exc).__name__)
            raise SinkError(f"{where} failed: {detail}", retryable=True) from None

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await cast(Any, client).close()
