"""Grafana on import: dashboards for the points the InfluxDB sink writes, and provisioning files.

Two dashboards over the same points (schema in ``docs/influx.md``), because Grafana queries them
through two kinds of data source:

- **InfluxDB (Flux)**, for InfluxDB 2.x/3.x and InfluxDB Cloud;
- **Prometheus (PromQL)**, for victoria-metrics, which stores field ``f`` of measurement ``m`` as
  the series ``m_f`` with the tags as labels and answers PromQL/MetricsQL.

Both show the same panels: per feature the measured value with its tolerance band and nominal
drawn from the ``feature`` points' own ``lower``/``upper``/``nominal`` fields (nothing typed into a
panel), the share of the tolerance used, parts by status, cycle time, spindle load and tool life,
parts left before a forecast breach, and drift alerts as annotations on every chart. Variables pick
the data source, site, machine, program and features; feature panels repeat per feature.

:func:`provisioning_files` renders everything Grafana's provisioning folder needs (data sources,
a dashboard provider and the two dashboards); ``monitor grafana`` writes it, and the repository
ships it under ``deploy/grafana/`` (a test keeps that copy current).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

__all__ = [
    "FLUX_UID",
    "PROMETHEUS_UID",
    "flux_dashboard",
    "panel_queries",
    "prometheus_dashboard",
    "provisioning_files",
]

PROMETHEUS_UID = "cnc-monitor-promql"
FLUX_UID = "cnc-monitor-flux"
_TAGS = ["cnc-monitor"]

Json = dict[str, Any]
_DASHBOARDS_PATH = PurePosixPath("/var/lib/grafana/dashboards/cnc-monitor")


# ------------------------------------------------------------------------------------ building blocks
def _grid(x: int, y: int, w: int, h: int) -> Json:
    return {"x": x, "y": y, "w": w, "h": h}


def _ds(kind: str) -> Json:
    return {"type": kind, "uid": "${datasource}"}


def _band_overrides() -> list[Json]:
    """Measured as points on a line; lower/upper dashed red with the band between them filled; nominal dashed green."""

    def by_name(name: str, *props: tuple[str, Any]) -> Json:
        return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": k, "value": v} for k, v in props]}

    dashed = {"fill": "dash", "dash": [10, 10]}
    return [
        by_name(
            "measured",
            ("custom.showPoints", "always"),
            ("custom.pointSize", 6),
            ("color", {"mode": "fixed", "fixedColor": "blue"}),
        ),
        by_name(
            "upper",
            ("custom.fillBelowTo", "lower"),
            ("custom.fillOpacity", 8),
            ("custom.lineStyle", dashed),
            ("color", {"mode": "fixed", "fixedColor": "red"}),
        ),
        by_name("lower", ("custom.lineStyle", dashed), ("color", {"mode": "fixed", "fixedColor": "red"})),
        by_name("nominal", ("custom.lineStyle", dashed), ("color", {"mode": "fixed", "fixedColor": "green"})),
    ]


def _timeseries(title: str, kind: str, targets: list[Json], grid: Json, *, unit: str = "none", **extra: Any) -> Json:
    panel: Json = {
        "type": "timeseries",
        "title": title,
        "datasource": _ds(kind),
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "decimals": extra.pop("decimals", None), "custom": {"spanNulls": True, "lineWidth": 1}},
            "overrides": extra.pop("overrides", []),
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }
    if panel["fieldConfig"]["defaults"]["decimals"] is None:
        del panel["fieldConfig"]["defaults"]["decimals"]
    panel.update(extra)
    return panel


def _stat(title: str, kind: str, targets: list[Json], grid: Json) -> Json:
    return {
        "type": "stat",
        "title": title,
        "datasource": _ds(kind),
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": "none", "decimals": 0}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "textMode": "value_and_name"},
    }


def _table(title: str, kind: str, targets: list[Json], grid: Json) -> Json:
    return {
        "type": "table",
        "title": title,
        "datasource": _ds(kind),
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "merge", "options": {}}],
    }


def _row(title: str, y: int, repeat: str | None = None) -> Json:
    row: Json = {"type": "row", "title": title, "collapsed": False, "gridPos": _grid(0, y, 24, 1), "panels": []}
    if repeat:
        row["repeat"] = repeat
    return row


def _dashboard(uid: str, title: str, kind: str, variables: list[Json], annotation: Json, panels: list[Json]) -> Json:
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": uid,
        "title": title,
        "description": "CNC process monitor: per-part measurements against their tolerance, drift alerts, "
        "cycle and tool data. Generated by `monitor grafana`; see docs/grafana.md.",
        "tags": _TAGS,
        "timezone": "",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                annotation,
            ]
        },
        "panels": panels,
        "links": [],
    }


def _datasource_variable(kind: str) -> Json:
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "data source",
        "query": kind,
        "current": {},
        "hide": 0,
        "refresh": 1,
        "options": [],
    }


def _query_variable(name: str, kind: str, query: str | Json, *, multi: bool = False, label: str | None = None) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label or name,
        "datasource": _ds(kind),
        "query": query,
        "definition": query if isinstance(query, str) else query.get("query", ""),
        "refresh": 2,  # on time range change: machines and features come and go
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "hide": 0,
    }


# ------------------------------------------------------------------------------------ PromQL (victoria)
_P = "prometheus"
_SEL = 'site="$site", machine="$machine"'
_FEATURE = 'site="$site", machine="$machine", program="$program", feature="$feature"'


def _p(ref: str, expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> Json:
    target: Json = {"refId": ref, "expr": expr, "legendFormat": legend, "datasource": _ds(_P), "format": fmt}
    if instant:
        target["instant"] = True
        target["range"] = False
    return target


def prometheus_dashboard() -> Json:
    """The dashboard for a Prometheus-type data source (victoria-metrics behind the InfluxDB write API)."""
    variables = [
        _datasource_variable(_P),
        _query_variable("site", _P, "label_values(feature_value, site)"),
        _query_variable("machine", _P, 'label_values(feature_value{site="$site"}, machine)'),
        _query_variable("program", _P, 'label_values(feature_value{site="$site", machine="$machine"}, program)'),
        _query_variable(
            "feature",
            _P,
            'label_values(feature_value{site="$site", machine="$machine", program="$program"}, feature)',
            multi=True,
            label="features",
        ),
    ]
    annotation = {
        "name": "Drift alerts",
        "datasource": _ds(_P),
        "enable": True,
        "iconColor": "red",
        "expr": f"alert_part_number{{{_SEL}}}",
        "step": "60s",
        "titleFormat": "{{severity}} {{kind}}: {{feature}}",
        "textFormat": "{{machine}} {{program}} {{feature}}: {{kind}} ({{state}})",
        "tagKeys": "machine,program,feature,severity,state",
        "useValueForTime": False,
        "target": {"refId": "Anno", "expr": f"alert_part_number{{{_SEL}}}", "interval": "60s"},
    }
    panels = [
        _stat(
            "Parts in range by status",
            _P,
            [_p("A", f"sum by (status) (count_over_time(part_part_number{{{_SEL}}}[$__range]))", "{{status}}", instant=True)],
            _grid(0, 0, 8, 4),
        ),
        _stat(
            "Alert changes in range by severity",
            _P,
            [
                _p(
                    "A",
                    f"sum by (severity) (count_over_time(alert_part_number{{{_SEL}}}[$__range]))",
                    "{{severity}}",
                    instant=True,
                )
            ],
            _grid(8, 0, 8, 4),
        ),
        _stat(
            "Last part number",
            _P,
            [_p("A", f"max by (program) (last_over_time(part_part_number{{{_SEL}}}[$__range]))", "{{program}}", instant=True)],
            _grid(16, 0, 8, 4),
        ),
        _row("$feature", 4, repeat="feature"),
        _timeseries(
            "$feature: measured with tolerance band (mm)",
            _P,
            [
                _p("A", f"feature_value{{{_FEATURE}}}", "measured"),
                _p("B", f"feature_lower{{{_FEATURE}}}", "lower"),
                _p("C", f"feature_upper{{{_FEATURE}}}", "upper"),
                _p("D", f"feature_nominal{{{_FEATURE}}}", "nominal"),
            ],
            _grid(0, 5, 16, 8),
            unit="lengthmm",
            decimals=4,
            overrides=_band_overrides(),
        ),
        _timeseries(
            "$feature: share of tolerance used (±1 = at a limit)",
            _P,
            [_p("A", f"feature_used{{{_FEATURE}}}", "used")],
            _grid(16, 5, 8, 8),
            unit="percentunit",
            thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]},
        ),
        _row("Machine", 13),
        _timeseries(
            "Cycle time (s)",
            _P,
            [_p("A", f"part_cycle_time_s{{{_SEL}}}", "{{program}}")],
            _grid(0, 14, 8, 7),
            unit="s",
        ),
        _timeseries(
            "Mean spindle load while cutting (%)",
            _P,
            [_p("A", f"part_spindle_mean_load{{{_SEL}}}", "{{program}}")],
            _grid(8, 14, 8, 7),
            unit="percent",
        ),
        _timeseries(
            "Tool life at the end of the cut",
            _P,
            [_p("A", f"part_tool_life{{{_SEL}}}", "{{program}}")],
            _grid(16, 14, 8, 7),
        ),
        _timeseries(
            "Parts left before a forecast breach (with interval)",
            _P,
            [
                _p("A", f"alert_parts_to_breach{{{_SEL}}}", "{{feature}}"),
                _p("B", f"alert_parts_to_breach_low{{{_SEL}}}", "{{feature}} low"),
                _p("C", f"alert_parts_to_breach_high{{{_SEL}}}", "{{feature}} high"),
            ],
            _grid(0, 21, 12, 7),
        ),
        _table(
            "Alerts in range (part number at each change)",
            _P,
            [
                _p(
                    "A",
                    f"last_over_time(alert_part_number{{{_SEL}}}[$__range])",
                    "",
                    instant=True,
                    fmt="table",
                )
            ],
            _grid(12, 21, 12, 7),
        ),
    ]
    # the repeated feature panels sit inside their row
    return _dashboard(PROMETHEUS_UID, "CNC process monitor (PromQL: victoria-metrics)", _P, variables, annotation, panels)


# ------------------------------------------------------------------------------------ Flux (InfluxDB)
_F = "influxdb"
_RANGE = 'from(bucket: "${bucket}")\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
_MACHINE = 'r.site == "${site}" and r.machine == "${machine}"'
_FEATURE_F = _MACHINE + ' and r.program == "${program}" and r.feature == "${feature}"'


def _f(ref: str, query: str) -> Json:
    return {"refId": ref, "query": query, "datasource": _ds(_F)}


def _flux_fields(measurement: str, where: str, fields: list[str], *, rename: dict[str, str] | None = None) -> str:
    field_test = " or ".join(f'r._field == "{f}"' for f in fields)
    query = _RANGE + f'  |> filter(fn: (r) => r._measurement == "{measurement}" and {where})\n'
    query += f"  |> filter(fn: (r) => {field_test})\n"
    if rename:
        cases = "".join(f'if r._field == "{old}" then "{new}" else ' for old, new in rename.items())
        query += f"  |> map(fn: (r) => ({{r with _field: {cases}r._field}}))\n"
    return query


def flux_dashboard() -> Json:
    """The dashboard for an InfluxDB data source with Flux (InfluxDB 2.x/3.x, InfluxDB Cloud)."""
    schema = 'import "influxdata/influxdb/schema"\n'
    variables = [
        _datasource_variable(_F),
        {
            "type": "textbox",
            "name": "bucket",
            "label": "bucket",
            "query": "cnc",
            "current": {"text": "cnc", "value": "cnc"},
            "options": [{"selected": True, "text": "cnc", "value": "cnc"}],
            "hide": 0,
        },
        _query_variable("site", _F, schema + 'schema.tagValues(bucket: "${bucket}", tag: "site", start: -90d)'),
        _query_variable(
            "machine",
            _F,
            schema + 'schema.tagValues(bucket: "${bucket}", tag: "machine", predicate: (r) => r.site == "${site}", start: -90d)',
        ),
        _query_variable(
            "program",
            _F,
            schema
            + 'schema.tagValues(bucket: "${bucket}", tag: "program", predicate: (r) => r._measurement == "feature"'
            + ' and r.site == "${site}" and r.machine == "${machine}", start: -90d)',
        ),
        _query_variable(
            "feature",
            _F,
            schema
            + 'schema.tagValues(bucket: "${bucket}", tag: "feature", predicate: (r) => r._measurement == "feature"'
            + ' and r.site == "${site}" and r.machine == "${machine}" and r.program == "${program}", start: -90d)',
            multi=True,
            label="features",
        ),
    ]
    annotation = {
        "name": "Drift alerts",
        "datasource": _ds(_F),
        "enable": True,
        "iconColor": "red",
        "target": {
            "refId": "Anno",
            "query": _RANGE + f'  |> filter(fn: (r) => r._measurement == "alert" and {_MACHINE} and r._field == "message")\n',
        },
        "textColumn": "_value",
        "tagsColumn": "feature,severity,state,kind",
        "titleColumn": "kind",
    }

    def count_by(measurement: str, column: str) -> str:
        return (
            _RANGE
            + f'  |> filter(fn: (r) => r._measurement == "{measurement}" and {_MACHINE} and r._field == "part_number")\n'
            + f'  |> group(columns: ["{column}"])\n  |> count()\n'
        )

    panels = [
        _stat("Parts in range by status", _F, [_f("A", count_by("part", "status"))], _grid(0, 0, 8, 4)),
        _stat("Alert changes in range by severity", _F, [_f("A", count_by("alert", "severity"))], _grid(8, 0, 8, 4)),
        _stat(
            "Last part number",
            _F,
            [
                _f(
                    "A",
                    _RANGE
                    + f'  |> filter(fn: (r) => r._measurement == "part" and {_MACHINE} and r._field == "part_number")\n'
                    + '  |> group(columns: ["program"])\n  |> last()\n',
                )
            ],
            _grid(16, 0, 8, 4),
        ),
        _row("$feature", 4, repeat="feature"),
        _timeseries(
            "$feature: measured with tolerance band (mm)",
            _F,
            [
                _f(
                    "A",
                    _flux_fields("feature", _FEATURE_F, ["value", "lower", "upper", "nominal"], rename={"value": "measured"})
                    + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
                    + '  |> keep(columns: ["_time", "measured", "lower", "upper", "nominal"])\n',
                )
            ],
            _grid(0, 5, 16, 8),
            unit="lengthmm",
            decimals=4,
            overrides=_band_overrides(),
        ),
        _timeseries(
            "$feature: share of tolerance used (±1 = at a limit)",
            _F,
            [_f("A", _flux_fields("feature", _FEATURE_F, ["used"]) + '  |> keep(columns: ["_time", "_value", "_field"])\n')],
            _grid(16, 5, 8, 8),
            unit="percentunit",
        ),
        _row("Machine", 13),
        _timeseries(
            "Cycle time (s)",
            _F,
            [_f("A", _flux_fields("part", _MACHINE, ["cycle_time_s"]) + '  |> group(columns: ["program"])\n')],
            _grid(0, 14, 8, 7),
            unit="s",
        ),
        _timeseries(
            "Mean spindle load while cutting (%)",
            _F,
            [_f("A", _flux_fields("part", _MACHINE, ["spindle_mean_load"]) + '  |> group(columns: ["program"])\n')],
            _grid(8, 14, 8, 7),
            unit="percent",
        ),
        _timeseries(
            "Tool life at the end of the cut",
            _F,
            [_f("A", _flux_fields("part", _MACHINE, ["tool_life"]) + '  |> group(columns: ["program"])\n')],
            _grid(16, 14, 8, 7),
        ),
        _timeseries(
            "Parts left before a forecast breach (with interval)",
            _F,
            [
                _f(
                    "A",
                    _flux_fields("alert", _MACHINE, ["parts_to_breach", "parts_to_breach_low", "parts_to_breach_high"])
                    + '  |> group(columns: ["feature", "_field"])\n',
                )
            ],
            _grid(0, 21, 12, 7),
        ),
        _table(
            "Alerts in range",
            _F,
            [
                _f(
                    "A",
                    _flux_fields("alert", _MACHINE, ["message", "part_number"])
                    + '  |> pivot(rowKey: ["_time", "feature", "kind", "severity", "state"], columnKey: ["_field"],'
                    + ' valueColumn: "_value")\n'
                    + "  |> group()\n"
                    + '  |> keep(columns: ["_time", "feature", "kind", "severity", "state", "part_number", "message"])\n'
                    + '  |> sort(columns: ["_time"], desc: true)\n',
                )
            ],
            _grid(12, 21, 12, 7),
        ),
    ]
    return _dashboard(FLUX_UID, "CNC process monitor (InfluxDB Flux)", _F, variables, annotation, panels)


# ------------------------------------------------------------------------------------ what a panel asks
def panel_queries(dashboard: Json) -> list[tuple[str, str, Json]]:
    """Every query of a dashboard: (where, query text, the target or variable it belongs to), for the
    tests that run them against a real server and for reviewers."""
    out: list[tuple[str, str, Json]] = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            out.append((f"variable {variable['name']}", query if isinstance(query, str) else query["query"], variable))
    for annotation in dashboard["annotations"]["list"]:
        target = annotation.get("target")
        if target is not None:
            out.append((f"annotation {annotation['name']}", target.get("expr") or target.get("query"), annotation))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']} {target['refId']}", target.get("expr") or target.get("query"), target))
    return out


# ------------------------------------------------------------------------------------ provisioning
def provisioning_files(
    *,
    dashboards_path: PurePosixPath = _DASHBOARDS_PATH,
    influx_url: str = "http://localhost:8086",
    influx_org: str = "plant",
    influx_bucket: str = "cnc",
    prometheus_url: str = "http://localhost:8428",
) -> dict[str, str]:
    """Relative path -> text of every file for Grafana's provisioning (see docs/grafana.md).

    ``provisioning/datasources/cnc-monitor.yaml`` declares both data sources (the InfluxDB token
    comes from ``$INFLUX_TOKEN`` in Grafana's environment, never from the file),
    ``provisioning/dashboards/cnc-monitor.yaml`` tells Grafana to load the dashboards from
    ``dashboards_path``, where ``dashboards/*.json`` are copied."""
    datasources = f"""\
# Grafana data sources for the CNC process monitor (generated by `monitor grafana`; docs/grafana.md).
# Keep the one you use. The token is read from Grafana's environment (INFLUX_TOKEN), not stored here.
apiVersion: 1
datasources:
  - name: CNC InfluxDB (Flux)
    uid: cnc-monitor-influx
    type: influxdb
    access: proxy
    url: {influx_url}
    jsonData:
      version: Flux
      organization: {influx_org}
      defaultBucket: {influx_bucket}
    secureJsonData:
      token: $INFLUX_TOKEN
  - name: CNC victoria-metrics (PromQL)
    uid: cnc-monitor-victoria
    type: prometheus
    access: proxy
    url: {prometheus_url}
    jsonData:
      timeInterval: 1s
"""
    provider = f"""\
# Grafana dashboard provider for the CNC process monitor (generated by `monitor grafana`; docs/grafana.md).
apiVersion: 1
providers:
  - name: cnc-monitor
    folder: CNC monitor
    type: file
    disableDeletion: false
    allowUiUpdates: true
    updateIntervalSeconds: 60
    options:
      path: {dashboards_path}
"""
    return {
        "provisioning/datasources/cnc-monitor.yaml": datasources,
        "provisioning/dashboards/cnc-monitor.yaml": provider,
        "dashboards/cnc-monitor-flux.json": json.dumps(flux_dashboard(), indent=2) + "\n",
        "dashboards/cnc-monitor-promql.json": json.dumps(prometheus_dashboard(), indent=2) + "\n",
    }
