"""Grafana on import: a demo batch goes through the real daemon and its InfluxDB sink into a real
victoria-metrics; then every query of the PromQL dashboard (variables, panels, the alert
annotation) runs there the way Grafana would send it and must return data. The Flux dashboard
cannot run on victoria: each of its queries is checked against the points the sink wrote (every
measurement, field and tag it filters on exists). The shipped files in deploy/grafana/ are the
generated ones."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from monitor.codec import observation_to_dict
from monitor.config import SizeFeatureConfig, load_site
from monitor.engine import DriftEngine
from monitor.grafana import flux_dashboard, panel_queries, prometheus_dashboard, provisioning_files
from monitor.model import Alert, PartRecord
from monitor.sim import SimCell, load_scenario
from monitor.sim.process import PROGRAMS_DIR
from monitor.sinks.influx import PointEncoder
from monitor.tracking import PartTracker
from tests.daemons import run_until_parts
from tests.requires import need_binary
from tests.servers.victoria import running_victoria

ROOT = Path(__file__).resolve().parents[2]
SITE = "grafana-cell"
PARTS = 40


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    assert body.get("status") == "success", body
    return body["data"]


class Grafana:
    """Sends a dashboard's PromQL the way Grafana's Prometheus data source does."""

    def __init__(self, base: str, start: float, end: float) -> None:
        self.base = base
        self.start = start
        self.end = end
        self.values: dict[str, str] = {}

    def substitute(self, query: str) -> str:
        text = query.replace("$__range", f"{int(self.end - self.start)}s")
        text = text.replace("$__rate_interval", "4m").replace("$__interval", "1m")
        for name, value in self.values.items():
            text = text.replace("${" + name + "}", value).replace("$" + name, value)
        assert "$" not in text, f"unresolved variable in {text!r}"
        return text

    def label_values(self, query: str) -> list[str]:
        """``label_values(selector, label)`` as Grafana resolves it: the label values API."""
        found = re.fullmatch(r"label_values\((.*), *(\w+)\)", self.substitute(query))
        assert found, query
        params = urllib.parse.urlencode({"match[]": found.group(1), "start": int(self.start), "end": int(self.end)})
        values: list[str] = _get(f"{self.base}/api/v1/label/{found.group(2)}/values?{params}")
        return values

    def run(self, target: dict[str, Any]) -> list[Any]:
        expr = self.substitute(target["expr"])
        if target.get("instant"):
            params = {"query": expr, "time": int(self.end)}
            data = _get(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")
        else:
            params = {"query": expr, "start": int(self.start), "end": int(self.end), "step": 60}
            data = _get(f"{self.base}/api/v1/query_range?{urllib.parse.urlencode(params)}")
        result: list[Any] = data["result"]
        return result


def _demo_site(tmp_path: Path, influx_url: str) -> Path:
    cell = SimCell(load_scenario("demo"), seed=1, parts=PARTS)
    machines = []
    for machine in cell.machines:
        replay = tmp_path / f"{machine.id}.jsonl"
        lines = [json.dumps(observation_to_dict(e.observation())) for e in cell.events() if e.machine == machine.id]
        replay.write_text("\n".join(lines) + "\n")
        machines.append({"id": machine.id, "source": {"type": "replay", "path": str(replay)}})
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "site": SITE,
                "programs": str(PROGRAMS_DIR),
                "dashboard": {"enabled": False},
                "machines": machines,
                "sinks": {"influx": {"url": influx_url, "token": "t", "flush_interval_s": 0.1, "spool_dir": "spool"}},
            }
        )
    )
    return site


async def test_every_promql_query_of_the_dashboard_returns_data(tmp_path: Path) -> None:
    need_binary("victoria-metrics", "victoria-metrics")
    with running_victoria(tmp_path / "vm", dedup=True) as vm:
        site = load_site(_demo_site(tmp_path, vm.url))
        seen = await run_until_parts(site, 2 * PARTS, timeout_s=120)
        assert seen.kinds >= {"part", "alert"}
        parts = [s for s in vm.export('{__name__="part_part_number"}')]
        stamps = [t / 1000 for s in parts for t in s["timestamps"]]
        grafana = Grafana(vm.url, min(stamps) - 60, max(stamps) + 60)
        dashboard = prometheus_dashboard()
        # the variables, in order, each taking its first value (as Grafana does on load)
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            values = grafana.label_values(variable["query"])
            assert values, f"variable {variable['name']} has no values"
            grafana.values[variable["name"]] = values[0]
        assert grafana.values["site"] == SITE
        checked = 0
        for where, _, target in panel_queries(dashboard):
            if where.startswith("variable"):
                continue
            query = target["target"] if where.startswith("annotation") else target
            result = grafana.run(query)
            assert result, f"{where}: no data for {grafana.substitute(query['expr'])}"
            checked += 1
        assert checked >= 14
        # the band really is the feature's tolerance, from the points themselves
        grafana.values["feature"] = "hole1_dia"
        grafana.values["program"] = "O1001"
        grafana.values["machine"] = "vmc-01"
        lower = grafana.run({"expr": 'feature_lower{site="$site", machine="$machine", program="$program", feature="$feature"}'})
        upper = grafana.run({"expr": 'feature_upper{site="$site", machine="$machine", program="$program", feature="$feature"}'})
        feature = site.programs["O1001"].features["hole1_dia"]
        assert isinstance(feature, SizeFeatureConfig)
        assert {float(v) for _, v in lower[0]["values"]} == {feature.lower}
        assert {float(v) for _, v in upper[0]["values"]} == {feature.upper}
        # and every point the sink wrote carries the site
        assert all(s["metric"].get("site") == SITE for s in vm.export('{__name__=~"(part|feature|alert)_.*"}'))


def _split(text: str, separator: str) -> list[str]:
    """Split line protocol at ``separator`` where it is neither escaped nor inside a quoted string."""
    parts, current, quoted, escaped = [], "", False, False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == '"':
            current, quoted = current + char, not quoted
        elif char == separator and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _flux_references(query: str) -> tuple[set[str], set[str], set[str]]:
    measurements = set(re.findall(r'r\._measurement == "([^"]+)"', query))
    fields = set(re.findall(r'r\._field == "([^"]+)"', query))
    tags = set(re.findall(r"\br\.([a-z_]+) ==", query)) - {"_measurement", "_field"}
    return measurements, fields, tags


def test_every_flux_query_asks_for_what_the_sink_writes() -> None:
    cell = SimCell(load_scenario("demo"), seed=1, parts=PARTS)
    encoder = PointEncoder(cell.programs(), site=SITE)
    trackers = {m.id: PartTracker(m.id, cell.programs()) for m in cell.machines}
    engine = DriftEngine.from_states(cell.programs(), [])
    events: list[PartRecord | Alert] = []
    for sim_event in cell.events():
        for part in trackers[sim_event.machine].update(sim_event.observation()):
            events += [part, *engine.process(part)]
    assert any(isinstance(e, Alert) for e in events)
    written: dict[str, tuple[set[str], set[str]]] = {}
    for event in events:
        text = encoder.encode(event) or ""
        for line in text.splitlines():
            head, field_set, _ = _split(line, " ")
            name, *tag_set = _split(head, ",")
            known = written.setdefault(name, (set(), set()))
            known[0].update(t.split("=", 1)[0] for t in tag_set)
            known[1].update(f.split("=", 1)[0] for f in _split(field_set, ","))
    for where, query, _ in panel_queries(flux_dashboard()):
        measurements, asked_fields, asked_tags = _flux_references(query)
        for measurement in measurements:
            assert measurement in written, f"{where}: measurement {measurement} is never written"
            tags, fields = written[measurement]
            assert asked_fields <= fields, f"{where}: fields {asked_fields - fields} are never written"
            assert asked_tags <= tags, f"{where}: tags {asked_tags - tags} are never written"


def test_shipped_grafana_files_are_the_generated_ones() -> None:
    for relative, text in provisioning_files().items():
        shipped = ROOT / "deploy/grafana" / relative
        assert shipped.read_text() == text, f"{shipped} is stale: run `monitor grafana --out deploy/grafana`"
    for name in ("cnc-monitor-flux.json", "cnc-monitor-promql.json"):
        dashboard = json.loads((ROOT / "deploy/grafana/dashboards" / name).read_text())
        assert dashboard["annotations"]["list"][1]["name"] == "Drift alerts"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
