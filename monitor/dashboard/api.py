"""The dashboard's JSON API under ``/api/``: every page is drawn from these answers.

Numbers come from the same places the CLI reads (``monitor.queries.part_row`` / ``alert_row`` over
the store), so ``monitor parts`` and the dashboard never disagree. Everything goes through the
core's :class:`~monitor.core.MonitorApi`: store reads run on its thread (``api.read``), alert
changes are commands to it (``api.execute``); the event loop only waits. Every list answer is capped
(``last``) so no request can ask for an unbounded amount of work.

Writes (acknowledge, close) need ``Authorization: Bearer <dashboard.token>``; without a token in
the site file they are refused. See docs/dashboard.md for the reference.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from aiohttp import web

from monitor.codec import json_bytes, json_safe, loads, orjson_bytes
from monitor.commands import Acknowledge, CloseAlert, Command, OffsetApply, RecordAction, action_command, apply_offset_command
from monitor.core import MonitorApi
from monitor.dashboard.floor import floor_cards
from monitor.errors import ActionError, MonitorError, NotAllowed
from monitor.model import AlertState, AttributeFeature, PositionFeature, Severity, SizeFeature
from monitor.queries import action_row, alert_row, cell_machines, plant_rows, stored_alert_row, stored_part_rows
from monitor.report.compare import feature_parts
from monitor.report.stored import capability_of_values, feature_array, stored_capability, stored_values
from monitor.users import PERMISSIONS, User, user_for_token

if TYPE_CHECKING:
    from monitor.config import Site
    from monitor.detect.capability import CapabilityResult
    from monitor.model import Feature
    from monitor.store import SeriesPoint, StoreReader

__all__ = [
    "ALERTS_DEFAULT",
    "ALERTS_MAX",
    "API_KEY",
    "OFFSET_KEY",
    "PARTS_DEFAULT",
    "PARTS_MAX",
    "SERIES_MAX",
    "FeatureCache",
    "PartRowCache",
    "add_api_routes",
    "feature_answer",
    "feature_series",
    "machines_snapshot",
]

API_KEY: web.AppKey[MonitorApi] = web.AppKey("monitor")
OFFSET_KEY: web.AppKey[OffsetApply | None] = web.AppKey("offsets")
"""The daemon's offset service (None: the dashboard only advises)."""
"""Where the application keeps the monitor it shows (the daemon's core)."""
FEATURE_CACHE_KEY: web.AppKey[FeatureCache] = web.AppKey("feature_cache")
"""What feature charts read from the store, kept while it is unchanged (see :class:`FeatureCache`)."""
PART_ROWS_KEY: web.AppKey[PartRowCache] = web.AppKey("part_rows")
"""The rows ``/api/parts`` made, kept by each part's stored JSON (see :class:`PartRowCache`)."""

PARTS_DEFAULT, PARTS_MAX = 100, 5000
SOURCES_DEFAULT = 500
"""Most recent complete parts the feature page compares its measurement sources over (``last`` up to SERIES_MAX)."""
ALERTS_DEFAULT, ALERTS_MAX = 500, 5000
SERIES_MAX = 2000
"""Most parts a feature chart plots (the most recent ones)."""

_ALERT_STATES = {"open", "acknowledged", "closed", "active"}


def _api(request: web.Request) -> MonitorApi:
    return request.app[API_KEY]


def _error(status: int, message: str, **headers: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound}[status]
    return cls(text=json_bytes({"error": message}).decode(), content_type="application/json", headers=headers or None)


def _json(obj: Any, status: int = 200) -> web.Response:
    """An answer as :func:`~monitor.codec.json_bytes` writes it (NaN and infinities as null)."""
    return web.Response(body=json_bytes(obj), status=status, content_type="application/json")


def _last(request: web.Request, default: int, cap: int) -> int:
    text = request.query.get("last")
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _error(400, f"last must be a whole number, not {text!r}") from None
    if value < 1:
        raise _error(400, "last must be at least 1")
    return min(value, cap)


def _opt(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return value if value else None


# ----------------------------------------------------------------------------------- machines
def machines_snapshot(site: Site, status: dict[str, Any], store: StoreReader) -> list[dict[str, Any]]:
    """Every configured machine as the cell page shows it, from the monitor's ``status`` machines
    and the store (runs on the core's thread)."""
    open_alerts = store.alerts(open_only=True)
    by_machine: dict[str, Counter[str]] = {}
    lost_alert: set[str] = set()
    for alert in open_alerts:
        by_machine.setdefault(alert.machine, Counter())[str(alert.severity)] += 1
        if str(alert.kind) == "signal_lost":
            lost_alert.add(alert.machine)
    out = []
    for machine in site.machine_ids():
        st = status.get(machine, {})
        sources = st.get("sources", [])
        connection = str(st.get("connection", "unknown"))
        programs = []
        for name, program in site.programs.items():
            count = store.part_count(machine=machine, program=name)
            if count or name == st.get("program"):
                programs.append({"program": name, "parts": count, "features": [f.name for f in program.feature_models()]})
        current = st.get("program")
        if current is not None and current not in site.programs:
            programs.append(
                {
                    "program": current,
                    "parts": store.part_count(machine=machine, program=current),
                    "features": [],
                    "configured": False,
                }
            )
        counts = by_machine.get(machine, Counter())
        out.append(
            {
                "machine": machine,
                "connection": connection,
                "signal_lost": connection == "lost"
                or machine in lost_alert
                or any(s.get("state") in ("lost", "failed") for s in sources),
                "program": current,
                "counter": st.get("counter"),
                "parts": st.get("parts", 0),
                "not_observed": st.get("not_observed", 0),
                "last_part_end": st.get("last_part_end"),
                "last_seen": st.get("last_seen"),
                "sources": [{"type": s.get("type"), "state": s.get("state"), "reason": s.get("reason") or ""} for s in sources],
                "open_alerts": {str(s): counts.get(str(s), 0) for s in reversed(Severity)},
                "kind": site.machine_kind(machine),
                "probe_tools": sorted(site.probe_tools(machine)),
                "programs": programs,
            }
        )
    return out


# ----------------------------------------------------------------------------------- features
def _feature(site: Site, program: str, feature: str) -> Feature | None:
    config = site.programs.get(program)
    if config is None:
        return None
    return next((f for f in config.feature_models() if f.name == feature), None)


def _points(feature: Feature, series: list[SeriesPoint]) -> list[dict[str, Any]]:
    """The plotted value of each part, judged as the drift engine judges it; unusable parts left out.

    Every point is JSON-safe as built (a non-finite true position is None). For a position feature
    the true position is computed here from the same deviations as
    :meth:`~monitor.model.PositionFeature.true_position` (same order of the same operations: the same
    float), once per point without its per-call lookups: a chart has up to ``SERIES_MAX`` points."""
    out: list[dict[str, Any]] = []
    isfinite, sqrt = math.isfinite, math.sqrt
    if isinstance(feature, AttributeFeature):
        for part in series:
            passed = feature.passed(part.values)
            if passed is not None:  # charted as the part's share of failures
                failed = 0.0 if passed else 1.0
                out.append(
                    {
                        "part_number": part.part_number,
                        "value": failed,
                        "passed": passed,
                        "end": part.end,
                        "key": part.key,
                    }
                )
        return out
    if isinstance(feature, SizeFeature):
        signal = feature.signal
        if signal is None:
            return out
        for part in series:
            value = part.values.get(signal)
            if value is not None and isfinite(value):
                out.append({"part_number": part.part_number, "value": value, "end": part.end, "key": part.key})
        return out
    axes = [(name, axis.signal, axis.nominal) for name, axis in feature.axes]
    if len(axes) == 2:
        return _points_xy(axes, series)
    for part in series:
        m = part.values
        devs: dict[str, float] = {}
        total = 0.0
        for name, signal, nominal in axes:
            raw = m.get(signal)
            if raw is None or not isfinite(raw):
                break
            dev = devs[name] = raw - nominal
            try:
                total += dev**2
            except OverflowError:  # a reading beyond float range: no true position to plot
                total = math.inf
        else:
            value = 2.0 * sqrt(total)
            point = {"part_number": part.part_number, "value": value, "axes": devs, "end": part.end, "key": part.key}
            out.append(point if isfinite(value) else json_safe(point))  # a deviation beyond float range
    return out


def _points_xy(axes: list[tuple[str, str, float]], series: list[SeriesPoint]) -> list[dict[str, Any]]:
    """:func:`_points` of a position on two axes (most of them) without the loop over the axes:
    the same operations in the same order (``0.0 + dx**2 + dy**2``: the first sum is exact)."""
    out: list[dict[str, Any]] = []
    isfinite, sqrt, inf = math.isfinite, math.sqrt, math.inf
    (nx, sx, ox), (ny, sy, oy) = axes
    for part in series:
        m = part.values
        x = m.get(sx)
        if x is None or not isfinite(x):
            continue
        y = m.get(sy)
        if y is None or not isfinite(y):
            continue
        dx, dy = x - ox, y - oy
        try:
            tx = dx**2
        except OverflowError:  # a reading beyond float range: no true position to plot
            tx = inf
        try:
            ty = dy**2
        except OverflowError:
            ty = inf
        value = 2.0 * sqrt(tx + ty)
        point = {"part_number": part.part_number, "value": value, "axes": {nx: dx, ny: dy}, "end": part.end, "key": part.key}
        out.append(point if isfinite(value) else json_safe(point))  # a deviation beyond float range
    return out


_CHART_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _chart_json(points: list[dict[str, Any]]) -> bytes:
    """:func:`~monitor.codec.json_bytes` of a chart's points, the same bytes: orjson without the
    options only other values need (text keys, numbers and None are all a point holds), which
    writes the points' dicts in ~0.6 of the time (OPT_NON_STR_KEYS takes orjson's slower path for
    every dict); anything it refuses without them (a key not text, a numpy number, an integer
    beyond 64 bits) goes through ``json_bytes`` as before. The datetime and dataclass options
    are kept: without them orjson would write those itself, differently."""
    try:
        return orjson.dumps(points, option=_CHART_OPTIONS)
    except TypeError:
        return json_bytes(points)


def _tp_cone(forecast: dict[str, Any]) -> dict[str, Any]:
    """True-position forecast from the per-axis forecasts: mean from the axis means, the cone from
    the box of the per-axis 90% intervals (its nearest and farthest corner from nominal)."""
    axes = forecast.get("axes", {})
    names = list(axes)
    n = len(forecast.get("parts", []))
    mean, lo, hi = [], [], []
    for i in range(n):
        m2 = near2 = far2 = 0.0
        for a in names:
            am, al, ah = axes[a]["mean"][i], axes[a]["lo"][i], axes[a]["hi"][i]
            m2 += am * am
            near2 += 0.0 if al <= 0.0 <= ah else min(al * al, ah * ah)
            far2 += max(al * al, ah * ah)
        mean.append(2 * math.sqrt(m2))
        lo.append(2 * math.sqrt(near2))
        hi.append(2 * math.sqrt(far2))
    return {**forecast, "mean": mean, "lo": lo, "hi": hi}


def _evidence_rank(alert: dict[str, Any]) -> tuple[bool, str]:
    """The condition the feature page shows: the living one (there is at most one per feature), else
    the latest closed one."""
    return (alert["state"] != "closed", alert["time"])


@dataclass(slots=True)
class _Chart:
    """What :class:`FeatureCache` keeps of one feature."""

    version: int
    feature: Feature
    points: bytes
    """The chart's points as the JSON the answer carries."""
    capability: CapabilityResult | None
    study: Any
    """The capability's values: every complete part of the machine/program, in production order."""
    mark: tuple[str, str] | None
    """(end, key) of the latest part in the measurement series when they were read."""
    parts: int
    """The machine/program's stored parts then (every status)."""
    series: list[SeriesPoint]
    """The chart's read (the points were made from it): brought up to date by the parts after it."""


class FeatureCache:
    """Per feature, what its chart reads from the measurement series: the points (as the JSON text
    the answer carries) and the capability of all its complete parts. Kept while the store's series
    of that machine and program stays the same (:meth:`~monitor.store.StoreReader.series_version`),
    so a feature page that polls costs one read and one encoding per new part of that machine and
    program, not one per request; a changed feature definition (a reload) is read afresh.

    After new parts, the chart is not read again when every part stored since is a part of its
    series ending after its last (:func:`_series_since`: the latest of them read, appended); nor are
    the capability's values read again from the store (every part of the
    batch: 5,000 parts of two signals cost more than the rest of the request) when the parts stored
    since are exactly those after the kept ones in the new chart read (the stored part count grew
    by their number): their values are appended. A part stored out of order (an earlier end), one
    without the feature's signals, or more parts than a chart holds: all values are read afresh.
    Used on the core's thread only (where every store read and write runs); holds at most
    ``size`` features."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str, str], _Chart] = OrderedDict()
        self.appended = 0
        """How many times a capability was brought up to date from the chart's read alone."""
        self.extended = 0
        """How many times a chart was brought up to date from the parts after it alone."""

    def clear(self) -> None:
        """Forget everything kept (the next request of each feature reads the store)."""
        self._entries.clear()

    def read(self, store: StoreReader, machine: str, program: str, feature: Feature) -> tuple[bytes, CapabilityResult | None]:
        """(the chart points as JSON, the capability) of ``feature``, from the cache or the store."""
        points, capability, _ = self.counted_read(store, machine, program, feature)
        return points, capability

    def counted_read(
        self, store: StoreReader, machine: str, program: str, feature: Feature
    ) -> tuple[bytes, CapabilityResult | None, int | None]:
        """:meth:`read` with the machine/program's stored part count when this read counted them
        (a chart read afresh or brought up to date: the answer's ``total_parts`` without counting
        them twice), else None."""
        version = store.series_version(machine, program)
        key = (machine, program, feature.name)
        hit = self._entries.get(key)
        if version is not None and hit is not None and hit.version == version and hit.feature == feature:
            self._entries.move_to_end(key)
            return hit.points, hit.capability, None
        if version is None:
            series = store.measurement_series(machine, program, feature.signals, last=SERIES_MAX)
            points = _chart_json(_points(feature, series))
            return points, capability_of_values(feature, _study(store, machine, program, feature, series)), None
        parts = store.part_count(machine=machine, program=program)
        since = (
            _series_since(store, machine, program, hit, version, parts) if hit is not None and hit.feature == feature else None
        )
        series = since if since is not None else store.measurement_series(machine, program, feature.signals, last=SERIES_MAX)
        if since is not None:
            self.extended += 1
        points = _chart_json(_points(feature, series))
        study = _appended(hit, feature, series, parts) if hit is not None and hit.feature == feature else None
        if study is None:
            study = _study(store, machine, program, feature, series)
        else:
            self.appended += 1
        capability = capability_of_values(feature, study)
        mark = (series[-1].end, series[-1].key) if series else None
        self._entries[key] = _Chart(version, feature, points, capability, study, mark, parts, series)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return points, capability, parts


def _study(store: StoreReader, machine: str, program: str, feature: Feature, series: list[SeriesPoint]) -> Any:
    """The capability's values of every complete part (:func:`~monitor.report.stored_values`), the
    parts the chart read holds taken from it: only the older ones are read (the chart's first part
    and those before it; every later part with all the feature's signals is in the chart, see
    :meth:`~monitor.store.StoreReader.measurement_series`)."""
    if not series or isinstance(feature, AttributeFeature) or not feature.signals:
        return stored_values(store, machine, program, feature)
    signals = feature.signals
    older = feature_array(feature, store.feature_values(machine, program, signals, through=series[0].key))
    every = set(signals)
    later = [p.values for p in series[1:]]
    later = [v for v in later if v.keys() >= every] if any(len(v) < len(every) for v in later) else later
    if not later:
        return older
    table = np.array([[v[s] for v in later] for s in signals]).T  # column by column: no row objects
    return np.concatenate([older, feature_array(feature, table)])


def _series_since(
    store: StoreReader, machine: str, program: str, kept: _Chart, version: int, parts: int
) -> list[SeriesPoint] | None:
    """The chart's read brought up to date without reading it again: the kept one with the series
    parts stored since appended (the most recent SERIES_MAX kept); None unless every part stored
    since is one of those, after the kept chart's last: as many stored parts more (every status)
    as series writes more (:meth:`~monitor.store.StoreReader.series_version`, which a write that
    rolled back counts too) and as the latest of the series read, each of them ending after the kept
    chart's last part. Ends are compared as the series orders them (as text) only when they are
    UTC's (+00:00, the chart's text the stored one); any other offset, or the same end: None."""
    new = parts - kept.parts
    if kept.mark is None or not 0 < new <= SERIES_MAX or version - kept.version != new:
        return None
    latest = store.measurement_series(machine, program, kept.feature.signals, last=new)
    mark = kept.mark
    if len(latest) != new or not mark[0].endswith("+00:00"):
        return None
    for point in latest:
        if not point.end.endswith("+00:00") or point.end <= mark[0]:
            return None
    return [*kept.series, *latest][-SERIES_MAX:]


def _appended(kept: _Chart, feature: Feature, series: list[SeriesPoint], parts: int) -> Any | None:
    """The kept capability values with those of the parts after them in ``series`` appended; None
    unless those are all the parts stored since (see :class:`FeatureCache`)."""
    if isinstance(feature, AttributeFeature):
        return None
    start = 0
    if kept.mark is not None:
        for i in range(len(series) - 1, -1, -1):
            if (series[i].end, series[i].key) == kept.mark:
                start = i + 1
                break
        else:
            return None
    new = series[start:]
    if parts - kept.parts != len(new):
        return None
    signals = feature.signals
    rows = [[p.values[s] for s in signals] for p in new if all(s in p.values for s in signals)]
    return np.concatenate([kept.study, feature_array(feature, rows)]) if rows else kept.study


def feature_series(
    site: Site, view: dict[str, Any], store: StoreReader, machine: str, program: str, name: str
) -> dict[str, Any] | None:
    """Chart data of one feature (runs on the core's thread); None when the feature is not configured.

    ``values`` are read from the store's measurement series (every complete part with the
    feature's measurements, the most recent ``SERIES_MAX``: index range scans, no part record
    decoded), and so is the capability of all its complete parts
    (:func:`monitor.report.stored_capability`: what the report and the CLI show); limits, control
    limits and forecast from the engine's ``view`` (:meth:`~monitor.core.MonitorApi.feature_view`).
    """
    feature = _feature(site, program, name)
    if feature is None:
        return None
    series = store.measurement_series(machine, program, feature.signals, last=SERIES_MAX)
    capability = stored_capability(store, machine, program, feature)
    return _feature_body(store, view, machine, program, feature, _points(feature, series), capability)


def feature_answer(
    site: Site, view: dict[str, Any], store: StoreReader, machine: str, program: str, name: str, cache: FeatureCache
) -> bytes | None:
    """:func:`feature_series` as the JSON the API answers, its points and capability through
    ``cache`` (the points kept as JSON, inserted as they are); None when the feature is not configured."""
    feature = _feature(site, program, name)
    if feature is None:
        return None
    values, capability, parts = cache.counted_read(store, machine, program, feature)
    body = _feature_body(store, view, machine, program, feature, None, capability, parts)
    return json_bytes({**body, "values": orjson.Fragment(values)})


def _feature_body(
    store: StoreReader,
    view: dict[str, Any],
    machine: str,
    program: str,
    feature: Feature,
    values: list[dict[str, Any]] | None,
    capability: CapabilityResult | None,
    parts: int | None = None,
) -> dict[str, Any]:
    """The feature page's answer; ``parts``: the machine/program's stored part count when the caller
    has just counted them (on the core's thread: no part stored since), else counted here."""
    name = feature.name
    alerts = [stored_alert_row(a) for a in store.alert_data(machine=machine, program=program, feature=name, last=ALERTS_MAX)]
    forecast = view.get("forecast")
    if forecast is not None and isinstance(feature, PositionFeature):
        forecast = _tp_cone(forecast)
    evidence = max(alerts, key=_evidence_rank, default=None)
    return {
        "machine": machine,
        "program": program,
        "feature": name,
        "kind": "position" if isinstance(feature, PositionFeature) else feature.kind,
        "unit": "mm" if isinstance(feature, PositionFeature) else feature.unit,
        "nominal": view.get("nominal"),
        "limits": view.get("limits"),
        "control_limits": view.get("control_limits"),
        "forecast": forecast,
        "capability": capability.as_dict() if capability is not None else None,
        "values": values,
        "total_parts": store.part_count(machine=machine, program=program) if parts is None else parts,
        "alerts": alerts,
        "evidence": evidence,
    }


# ----------------------------------------------------------------------------------- handlers
async def _status(request: web.Request) -> web.Response:
    api = _api(request)
    status = await api.status()
    writable = bool(api.site.config.dashboard.token or api.site.config.users)
    return _json({**status, "dashboard": {"writable": writable}})


async def _machines_of(api: MonitorApi) -> list[dict[str, Any]]:
    status = (await api.status())["machines"]
    site = api.site
    return await api.read(lambda store: machines_snapshot(site, status, store))


async def _machines(request: web.Request) -> web.Response:
    api = _api(request)
    return _json({"site": api.site.config.site, "machines": await _machines_of(api)})


async def _machine(request: web.Request) -> web.Response:
    api = _api(request)
    machine = request.match_info["machine"]
    if machine not in api.site.machine_ids():
        raise _error(404, f"no machine {machine!r} in this site")
    machines = await _machines_of(api)
    return _json(next(m for m in machines if m["machine"] == machine))


async def _floor(request: web.Request) -> web.Response:
    """The shop-floor cards (monitor/dashboard/floor.py), of one machine with ``?machine=``."""
    api = _api(request)
    machine = _opt(request, "machine")
    if machine is not None and machine not in api.site.machine_ids():
        raise _error(404, f"no machine {machine!r} in this site")
    machines = [m for m in await _machines_of(api) if machine is None or m["machine"] == machine]
    site = api.site
    return _json({"site": site.config.site, "machines": await api.read(lambda store: floor_cards(site, machines, store))})


class PartRowCache:
    """Each listed part's row as JSON (:func:`~monitor.queries.stored_part_rows` encoded), kept by
    the part's stored JSON text: the same text and the same site make the same row, so a row is
    made once per change of its part, not once per request (``/api/parts`` polled by a page: the
    store's texts read, the rest kept). Bounded: emptied when it would hold more than ``limit`` rows
    (PARTS_MAX by default, the longest list: ~7 MB of texts and rows at most). Not locked: the core
    runs every store read on its one store thread, so two calls never overlap (a site reload's
    first call empties it before any row is made)."""

    def __init__(self, limit: int = PARTS_MAX) -> None:
        self.limit = limit
        self._rows: dict[str, bytes] = {}
        self._site: Site | None = None

    def rows(self, site: Site, texts: list[str]) -> list[bytes] | None:
        """The JSON of each part's row, in the order of ``texts`` (``StoreReader.part_texts``); None
        when a row is one orjson refuses (an integer beyond 64 bits: :func:`json_bytes` writes the
        whole answer through :mod:`json` then, with its own spacing)."""
        if site is not self._site:
            self._rows.clear()
            self._site = site
        kept = self._rows
        got = [kept.get(t) for t in texts]
        missing = [t for t, row in zip(texts, got, strict=True) if row is None]
        if not missing:
            return got  # type: ignore[return-value]
        fresh: dict[str, bytes] = {}
        for text, row in zip(missing, stored_part_rows(site, [loads(t) for t in missing]), strict=True):
            try:
                fresh[text] = orjson_bytes(row)
            except orjson.JSONEncodeError:
                return None
        if len(kept) + len(fresh) > self.limit:
            kept.clear()
        if len(fresh) <= self.limit:  # a list longer than the bound is made, not kept
            kept.update(fresh)
        return [row if row is not None else fresh[t] for t, row in zip(texts, got, strict=True)]


def _read_parts(
    site: Site,
    store: StoreReader,
    machine: str | None,
    program: str | None,
    last: int,
    machines: list[str] | None,
    cache: PartRowCache,
) -> bytes:
    """The ``/api/parts`` answer's JSON: ``{"parts": rows, "total": n}`` as :func:`json_bytes`
    writes it, the rows' JSON joined (each row's made once per stored text, see :class:`PartRowCache`)."""
    texts = store.part_texts(machine=machine, program=program, last=last, machines=machines)
    rows = cache.rows(site, texts)
    if machines is None:
        total = store.part_count(machine=machine, program=program)
    else:
        total = sum(store.part_count(machine=m, program=program) for m in machines if machine in (None, m))
    if rows is None:
        return json_bytes({"parts": stored_part_rows(site, [loads(t) for t in texts]), "total": total})
    return b'{"parts":[' + b",".join(rows) + b'],"total":' + str(total).encode() + b"}"


async def _cell_machines(request: web.Request) -> list[str] | None:
    """The machines of the ``cell`` the request names (a shared store's site filter), None for all."""
    cell = _opt(request, "cell")
    if cell is None:
        return None
    api = _api(request)
    try:
        return await api.read(lambda store: cell_machines(store, api.site, cell))
    except MonitorError as exc:
        raise _error(404, str(exc)) from None


async def _parts(request: web.Request) -> web.Response:
    last = _last(request, PARTS_DEFAULT, PARTS_MAX)
    machine, program = _opt(request, "machine"), _opt(request, "program")
    site = _api(request).site
    machines = await _cell_machines(request)
    cache = request.app[PART_ROWS_KEY]
    body = await _api(request).read(lambda store: _read_parts(site, store, machine, program, last, machines, cache))
    return web.Response(body=body, content_type="application/json")


async def _plant(request: web.Request) -> web.Response:
    """Every cell of the store with its machines, owners and health (the plant view)."""
    api = _api(request)
    status = (await api.status()).get("machines", {})
    rows = await api.read(lambda store: plant_rows(store, api.site, status))
    cells: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault(row["cell"], []).append(row)
    return _json({"this_cell": api.site.config.site, "cells": [{"cell": c, "machines": ms} for c, ms in cells.items()]})


def _read_alerts(
    store: StoreReader,
    machine: str | None,
    program: str | None,
    state: str | None,
    last: int,
    feature: str | None,
    severity: str | None,
    machines: list[str] | None = None,
) -> list[dict[str, Any]]:
    alerts = store.alert_data(
        machines=machines,
        machine=machine,
        program=program,
        state=AlertState(state) if state in ("open", "acknowledged", "closed") else None,
        open_only=state == "active",
        feature=feature,
        severity=severity,
        last=last,
    )
    return [stored_alert_row(a) for a in reversed(alerts)]


async def _alerts(request: web.Request) -> web.Response:
    state = _opt(request, "state")
    if state is not None and state not in _ALERT_STATES:
        raise _error(400, f"state must be one of {', '.join(sorted(_ALERT_STATES))}")
    severity = _opt(request, "severity")
    if severity is not None and severity not in {str(s) for s in Severity}:
        raise _error(400, "severity must be one of watch, warning, critical")
    last = _last(request, ALERTS_DEFAULT, ALERTS_MAX)
    machine, program, feature = _opt(request, "machine"), _opt(request, "program"), _opt(request, "feature")
    machines = await _cell_machines(request)
    rows = await _api(request).read(lambda store: _read_alerts(store, machine, program, state, last, feature, severity, machines))
    # the store cannot write: its alert is not in the store yet, but it is the one to see first
    for waiting in _api(request).unstored_alerts():
        if machines is not None and waiting.machine not in machines:
            continue
        wanted = (
            (machine, waiting.machine),
            (program, waiting.program),
            (feature, waiting.feature),
            (state if state != "active" else None, str(waiting.state)),
            (severity, str(waiting.severity)),
        )
        if all(value is None or value == expected for value, expected in wanted):
            rows = [alert_row(waiting), *rows]  # newest first
    return _json({"alerts": rows})


async def _alert(request: web.Request) -> web.Response:
    alert_id = request.match_info["alert_id"]
    alert = await _api(request).read(lambda store: store.alert(alert_id))
    if alert is None:
        raise _error(404, f"no alert {alert_id!r}")
    return _json(alert_row(alert))


async def _feature_handler(request: web.Request) -> web.Response:
    api = _api(request)
    m, p, f = (request.match_info[k] for k in ("machine", "program", "feature"))
    if m not in api.site.machine_ids():
        raise _error(404, f"no machine {m!r} in this site")
    site = api.site
    if _feature(site, p, f) is None:
        raise _error(404, f"program {p!r} has no feature {f!r} in this site")
    view = await api.feature_view(m, p, f)
    cache = request.app[FEATURE_CACHE_KEY]
    answer = await api.read(lambda store: feature_answer(site, view, store, m, p, f, cache))
    if answer is None:
        raise _error(404, f"program {p!r} has no feature {f!r} in this site")
    return web.Response(body=answer, content_type="application/json")


async def _feature_parts_handler(request: web.Request) -> web.Response:
    """Every measurement source of a feature side by side per part (probe, CMM, gauge), the probe's
    bias against each, and each part's recorded disposition (:func:`monitor.report.compare.feature_parts`)."""
    api = _api(request)
    m, p, f = (request.match_info[k] for k in ("machine", "program", "feature"))
    if m not in api.site.machine_ids():
        raise _error(404, f"no machine {m!r} in this site")
    site = api.site
    feature = _feature(site, p, f)
    if feature is None:
        raise _error(404, f"program {p!r} has no feature {f!r} in this site")
    last = _last(request, SOURCES_DEFAULT, SERIES_MAX)
    program = site.programs[p]
    return _json(await api.read(lambda store: feature_parts(store, program, feature, m, last=last)))


def _authorize(request: web.Request) -> User:
    """Writes need a user's token (``users:``) or the site's shared dashboard token as a bearer
    token; refused outright when the site has neither."""
    site = _api(request).site
    if not site.config.users and not site.config.dashboard.token:
        raise _error(
            403,
            "alert changes are disabled: no users and no dashboard token are configured "
            "(add users: with tokens, or dashboard.token, to the site file)",
        )
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise _error(
            401,
            "this needs your token: send 'Authorization: Bearer <token>'",
            **{"WWW-Authenticate": 'Bearer realm="monitor"'},
        )
    user = user_for_token(site, given)
    if user is None:
        raise _error(403, "unknown token")
    return user


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise _error(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _error(400, "the body must be a JSON object")
    return body


async def _command(request: web.Request, command: Command) -> dict[str, Any]:
    try:
        outcome = await _api(request).execute(command)
    except NotAllowed as exc:
        raise _error(403, str(exc)) from None
    except ActionError as exc:
        raise _error(400, str(exc)) from None
    if outcome.alert is None and not isinstance(command, RecordAction):
        what = "open alert" if isinstance(command, CloseAlert) else "open, unacknowledged alert"
        raise _error(404, f"no {what} {command.alert_id!r}")
    return {
        "alert": alert_row(outcome.alert) if outcome.alert is not None else None,
        "action": action_row(outcome.action) if outcome.action is not None else None,
    }


def _comment(body: dict[str, Any]) -> str:
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 2000:
        raise _error(400, "comment must be text of at most 2000 characters")
    return comment


async def _ack(request: web.Request) -> web.Response:
    user = _authorize(request)
    comment = _comment(await _body(request))
    return _json(await _command(request, Acknowledge(request.match_info["alert_id"], user, comment, "dashboard")))


async def _close(request: web.Request) -> web.Response:
    user = _authorize(request)
    comment = _comment(await _body(request))
    return _json(await _command(request, CloseAlert(request.match_info["alert_id"], user, comment, "dashboard")))


async def _record_action(request: web.Request) -> web.Response:
    user = _authorize(request)
    body = await _body(request)
    _comment(body)
    try:
        command = action_command(body, user, "dashboard")
    except ActionError as exc:
        raise _error(400, str(exc)) from None
    return _json(await _command(request, command))


async def _offset(request: web.Request) -> web.Response:
    """Write the condition's offset advice to the controller (engineers; docs/offsets.md). Answers
    once written or refused (the machine may be mid-part): each register's outcome, recorded."""
    user = _authorize(request)
    apply = request.app[OFFSET_KEY]
    if apply is None:
        raise _error(404, "this monitor does not write offsets")
    body = await _body(request)
    _comment(body)
    try:
        outcomes = await apply(apply_offset_command(request.match_info["alert_id"], body, user, "dashboard"))
    except NotAllowed as exc:
        raise _error(403, str(exc)) from None
    except ActionError as exc:
        raise _error(400, str(exc)) from None
    return _json({"outcomes": outcomes})


async def _actions(request: web.Request) -> web.Response:
    last = _last(request, ALERTS_DEFAULT, ALERTS_MAX)
    machine, program, feature = _opt(request, "machine"), _opt(request, "program"), _opt(request, "feature")
    condition = _opt(request, "condition")
    rows = await _api(request).read(
        lambda store: [
            action_row(a)
            for a in store.actions(machine=machine, program=program, feature=feature, condition_id=condition, last=last)
        ]
    )
    return _json({"actions": rows[::-1]})


async def _whoami(request: web.Request) -> web.Response:
    user = _authorize(request)
    # what the pages offer this person (the server still checks every request)
    return _json({"user": user.name, "role": str(user.role), "may": sorted(PERMISSIONS[user.role])})


def add_api_routes(app: web.Application) -> None:
    """Register the JSON API on ``app`` (which holds the monitor under :data:`API_KEY`)."""
    app[FEATURE_CACHE_KEY] = FeatureCache()
    app[PART_ROWS_KEY] = PartRowCache()
    r = app.router
    r.add_get("/api/status", _status)
    r.add_get("/api/machines", _machines)
    r.add_get("/api/machines/{machine}", _machine)
    r.add_get("/api/floor", _floor)
    r.add_get("/api/parts", _parts)
    r.add_get("/api/plant", _plant)
    r.add_get("/api/alerts", _alerts)
    r.add_post("/api/alerts/{alert_id:.+}/ack", _ack)
    r.add_post("/api/alerts/{alert_id:.+}/close", _close)
    r.add_get("/api/alerts/{alert_id:.+}", _alert)
    r.add_get("/api/actions", _actions)
    r.add_post("/api/actions", _record_action)
    r.add_post("/api/conditions/{alert_id:.+}/offset", _offset)
    r.add_get("/api/whoami", _whoami)
    r.add_get("/api/features/{machine}/{program}/{feature}", _feature_handler)
    r.add_get("/api/features/{machine}/{program}/{feature}/parts", _feature_parts_handler)
