"""Detection-quality benchmark: the drift engine against two baselines on seeded simulated batches.

Runs every scenario below over many seeds (each seed also redraws the physics with
``vary_scenario``), feeds the parts of every machine through :class:`monitor.engine.DriftEngine`
and scores the alerts against the simulator's ground truth, next to

* baseline (a) "first out-of-tolerance part": what a shop has without a monitor;
* baseline (b) an individuals chart at +-3 sigma, limits (mean, mean moving range / 1.128) from the
  first 20 parts, per axis for position features; every point beyond the limits is an alarm.

Definitions (per feature of a batch):
* drifting: the ground truth has a first out-of-tolerance part (true value, before probe noise)
  after the part where its drift starts; gradual drifts are the tool_wear, thermal and
  noisy_probe scenarios, step is scored apart. Features out of tolerance at or before their drift
  start (a setup so close to a limit that scatter alone breaks it) are counted apart and excluded;
* flagged before OOT: an alert of ours (forecast, EWMA, CUSUM, run rule; not the out-of-tolerance
  alert itself) opens at some part p with drift_starts <= p < first OOT; lead = first OOT - p
  (an alert opened before the drift started is a false alarm and does not count as flagging);
  unflagged drifts count as lead 0 in the median and 10th percentile;
* baseline (a) alarms at every part whose *measured* value is out of tolerance (probe noise can
  make that happen before the true first out-of-tolerance part, or on an in-control part);
* false alarm: an alert opened on a part before the feature's drift start (or on any part of a
  feature that never drifts); rate per 1000 in-control feature-parts, and per 1000 in-control
  parts (a part is in control when all its features are).

* drifts that never broke tolerance: features whose mean moved but stayed in tolerance, and how
  many of them got a forecast alert anyway (a breach predicted that did not come);
* attribution: for the first forecast alert of each flagged gradual drift, whether a cause was
  named and whether it matches the simulator's cause (tool life, cutting time, spindle load for
  wear; time since warm-up for thermal).

Prints one JSON object. Usage: ``python3 bench/detection_cell.py [--seeds 40] [--parts N] [--set KEY=VALUE] [--verbose]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from monitor.config import ProgramConfig
from monitor.engine import DriftEngine
from monitor.model import AlertKind, AlertState, PartRecord, PartStatus, PositionFeature, SizeFeature, SpindleStats, ToolUse
from monitor.sim import SimCell, SimPart, load_scenario, vary_scenario

SCENARIOS = ("stable", "tool_wear", "thermal", "step", "noisy_probe")
GRADUAL = frozenset({"tool_wear", "thermal", "noisy_probe"})
_CAUSE_CLASS = {"tool_life": "wear", "cutting_time": "wear", "spindle_load": "wear", "warmup": "thermal"}
"""Covariates named by the engine, by the ground-truth cause class they stand for."""
OURS = frozenset({AlertKind.FORECAST, AlertKind.EWMA, AlertKind.CUSUM, AlertKind.RUN_RULE})


def _record(p: SimPart) -> PartRecord:
    tools = tuple(ToolUse(t, None, life, 0.0) for t, life in p.tool_life.items())
    meas = {k: float(v) for k, v in p.measured.items() if v is not None}
    return PartRecord(
        f"{p.machine}/{p.program}/{p.part}",
        p.machine,
        p.program,
        p.part,
        p.start,
        p.end,
        PartStatus.COMPLETE,
        meas,
        tools=tools,
        spindle=SpindleStats(p.spindle_mean_load, None, p.cutting_time_s),
    )


@dataclass
class Tally:
    """Scores of one detector over many runs."""

    drifting: int = 0
    flagged: int = 0
    leads: list[float] = field(default_factory=list)
    false_alarms: int = 0
    false_alarm_parts: set[tuple[str, int, str, str, int]] = field(default_factory=set)
    """(scenario, seed, machine, program, part) of every false alarm, to count alarmed parts."""
    step_drifting: int = 0
    step_flagged: int = 0
    step_leads: list[float] = field(default_factory=list)
    oot_before_drift: int = 0

    def summary(self, in_control_feature_parts: int, part_limit: dict[tuple[str, int, str, str], int]) -> dict[str, Any]:
        leads = sorted(self.leads)
        in_control_parts = sum(part_limit.values())
        alarmed_parts = {k for k in self.false_alarm_parts if k[4] <= part_limit.get(k[:4], 0)}
        return {
            "gradual_drifts": self.drifting,
            "flagged_before_oot": self.flagged,
            "share_flagged_before_oot": round(self.flagged / self.drifting, 4) if self.drifting else None,
            "median_lead_parts": statistics.median(leads) if leads else None,
            "p10_lead_parts": _quantile(leads, 0.10) if leads else None,
            "unflagged_lead_counted_as": 0,
            "false_alarms": self.false_alarms,
            "false_alarms_per_1000_in_control_feature_parts": round(1000 * self.false_alarms / in_control_feature_parts, 3),
            "false_alarms_per_1000_in_control_parts": round(1000 * len(alarmed_parts) / in_control_parts, 3),
            "oot_at_or_before_drift_start_excluded": self.oot_before_drift,
            "step_drifts": self.step_drifting,
            "step_flagged_before_oot": self.step_flagged,
            "step_median_lead_parts": statistics.median(self.step_leads) if self.step_leads else None,
        }


def _quantile(sorted_values: list[float], q: float) -> float:
    """Lower empirical quantile including unflagged runs as lead 0."""
    idx = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values))))
    return sorted_values[idx]


def _score(
    tally: Tally,
    scenario: str,
    key: tuple[str, int, str, str],
    drift_start: int | None,
    first_oot: int | None,
    alarms: list[tuple[int, int | None]],
    n_parts: int,
    log: list[str] | None = None,
    feature: str = "",
) -> int:
    """Add one feature's alarms [(opened part, closed part or None)]; returns its in-control part count."""
    start = drift_start if drift_start is not None else n_parts + 1
    in_control = min(start - 1, n_parts)
    for opened, _ in alarms:
        if opened < start:
            if log is not None:
                log.append(f"false alarm {key} {feature} part {opened} (drift starts {drift_start})")
            tally.false_alarms += 1
            tally.false_alarm_parts.add((key[0], key[1], key[2], key[3], opened))
    if first_oot is not None and drift_start is not None and first_oot <= drift_start:
        tally.oot_before_drift += 1  # scatter of a setup near a limit, not a drift: nothing to forecast
    elif first_oot is not None:
        flag_part = min((o for o, _ in alarms if start <= o < first_oot), default=None)
        if scenario in GRADUAL:
            tally.drifting += 1
            if flag_part is not None:
                tally.flagged += 1
            tally.leads.append(float(first_oot - flag_part) if flag_part is not None else 0.0)
            if log is not None and flag_part is None:
                log.append(f"missed {key} {feature} drift {drift_start} first OOT {first_oot} alarms {alarms}")
        else:
            tally.step_drifting += 1
            if flag_part is not None:
                tally.step_flagged += 1
                tally.step_leads.append(float(first_oot - flag_part))
    return in_control


def _baseline_alarms(feature: Any, parts: list[SimPart]) -> tuple[list[tuple[int, int | None]], list[tuple[int, int | None]]]:
    """(first-OOT baseline, individuals-chart baseline) alarm lists for one feature."""
    axes: list[tuple[str, float]] = (
        [(str(feature.signal), feature.nominal)]
        if isinstance(feature, SizeFeature)
        else [(a.signal, a.nominal) for _, a in feature.axes]
    )
    oot: list[tuple[int, int | None]] = []
    chart: list[tuple[int, int | None]] = []
    values: dict[str, list[float]] = defaultdict(list)
    limits: dict[str, tuple[float, float]] = {}
    for p in parts:
        m = p.measured
        if any(m.get(s) is None for s, _ in axes):
            continue
        vals = {s: float(m[s]) for s, _ in axes}  # type: ignore[arg-type]
        if isinstance(feature, SizeFeature):
            bad = not feature.in_tolerance(vals[axes[0][0]])
        else:
            assert isinstance(feature, PositionFeature)
            bad = feature.true_position(vals) > feature.tolerance  # type: ignore[operator]
        if bad:
            oot.append((p.part, p.part + 1))
        for s, _ in axes:
            values[s].append(vals[s])
        if len(values[axes[0][0]]) == 20 and not limits:
            for s, _ in axes:
                v = values[s]
                mr = sum(abs(b - a) for a, b in itertools.pairwise(v)) / (len(v) - 1)
                sigma = mr / 1.128
                mean = sum(v) / len(v)
                limits[s] = (mean - 3 * sigma, mean + 3 * sigma)
        elif limits and any(not limits[s][0] <= vals[s] <= limits[s][1] for s, _ in axes):
            chart.append((p.part, p.part + 1))
    return oot, chart


def _with_detection(programs: dict[str, ProgramConfig], overrides: dict[str, Any]) -> dict[str, ProgramConfig]:
    if not overrides:
        return programs
    return {
        name: cfg.model_copy(update={"detection": cfg.detection.model_validate({**cfg.detection.model_dump(), **overrides})})
        for name, cfg in programs.items()
    }


def run(seeds: int, parts: int | None, verbose: bool = False, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    ours, forecast_only, first_oot_b, chart_b = Tally(), Tally(), Tally(), Tally()
    in_control_fp = 0
    part_limit: dict[tuple[str, int, str, str], int] = {}
    attribution = {"forecasts": 0, "named": 0, "matching": 0}
    unbroken = {"drifts": 0, "with_forecast_alert": 0}
    runs = 0
    engine_s = 0.0
    parts_fed = 0
    for scenario in SCENARIOS:
        base = load_scenario(scenario)
        for seed in range(seeds):
            cell = SimCell(vary_scenario(base, seed), seed=seed, parts=parts)
            programs = _with_detection(cell.programs(), overrides or {})
            engine = DriftEngine(programs)
            opened: dict[str, tuple[int, AlertKind, str]] = {}
            causes: dict[tuple[str, str, str], tuple[int, str | None]] = {}
            spans: dict[tuple[str, str, str], list[tuple[int, int | None, AlertKind]]] = defaultdict(list)
            all_parts = cell.parts()
            te = time.process_time()
            for sp in all_parts:
                for alert in engine.process(_record(sp)):
                    key = (alert.machine, alert.program, alert.feature)
                    if alert.state is AlertState.CLOSED:
                        if alert.id in opened:
                            o, kind, _ = opened.pop(alert.id)
                            spans[key].append((o, alert.evidence.get("closed_at_part", sp.part), kind))
                    elif alert.id not in opened:
                        opened[alert.id] = (alert.part_number, alert.kind, alert.message)
                        if alert.kind is AlertKind.FORECAST:
                            causes.setdefault(key, (alert.part_number, alert.evidence.get("likely_cause")))
            engine_s += time.process_time() - te
            parts_fed += len(all_parts)
            for aid, (o, kind, _) in opened.items():
                m, p, f = aid.split("/")[:3]
                spans[(m, p, f)].append((o, None, kind))
            runs += 1
            for g in cell.ground_truth():
                key = (g.machine, g.program, g.feature)
                fparts = [sp for sp in all_parts if sp.machine == g.machine and sp.program == g.program]
                n = len(fparts)
                feature = next(f for f in programs[g.program].feature_models() if f.name == g.feature)
                mine = [(o, c) for o, c, k in spans.get(key, []) if k in OURS]
                fc = [(o, c) for o, c, k in spans.get(key, []) if k is AlertKind.FORECAST]
                skey = (scenario, seed, g.machine, g.program)
                log: list[str] | None = [] if verbose else None
                ic = _score(ours, scenario, skey, g.drift_starts, g.first_out_of_tolerance, mine, n, log, g.feature)
                if log:
                    kinds = {(o, str(k)) for o, _, k in spans.get(key, []) if k in OURS}
                    print("\n".join(log), sorted(kinds), file=sys.stderr)
                _score(forecast_only, scenario, skey, g.drift_starts, g.first_out_of_tolerance, fc, n)
                oot_alarms, chart_alarms = _baseline_alarms(feature, fparts)
                _score(first_oot_b, scenario, skey, g.drift_starts, g.first_out_of_tolerance, oot_alarms, n)
                _score(chart_b, scenario, skey, g.drift_starts, g.first_out_of_tolerance, chart_alarms, n)
                in_control_fp += ic
                if g.drift_starts is not None and g.first_out_of_tolerance is None:
                    unbroken["drifts"] += 1
                    unbroken["with_forecast_alert"] += any(o >= g.drift_starts for o, _ in fc)
                first = causes.get(key)
                if (
                    scenario in GRADUAL
                    and g.first_out_of_tolerance is not None
                    and first is not None
                    and g.drift_starts is not None
                    and g.drift_starts <= first[0] < g.first_out_of_tolerance
                ):
                    truth = {c.split(":")[0] for c in g.causes}
                    named = _CAUSE_CLASS.get(first[1] or "")
                    attribution["named"] += named is not None
                    attribution["matching"] += named in truth
                    attribution["forecasts"] += 1
                # a part is in control only while every feature of it is
                part_limit[skey] = min(part_limit.get(skey, ic), ic)
    n_ic_parts = sum(part_limit.values())
    out: dict[str, Any] = {
        "runs": runs,
        "scenarios": list(SCENARIOS),
        "seeds_per_scenario": seeds,
        "in_control_feature_parts": in_control_fp,
        "in_control_parts": n_ic_parts,
        "ours": ours.summary(in_control_fp, part_limit),
        "ours_forecast_only": forecast_only.summary(in_control_fp, part_limit),
        "baseline_first_oot": first_oot_b.summary(in_control_fp, part_limit),
        "baseline_individuals_3sigma_first20": chart_b.summary(in_control_fp, part_limit),
        "attribution": {
            **attribution,
            "share_named_matching_truth": round(attribution["matching"] / attribution["named"], 3)
            if attribution["named"]
            else None,
        },
        "drifts_that_never_broke_tolerance": unbroken,
        "targets": {"share_flagged_before_oot": 0.95, "median_lead_parts": 8, "false_alarms_per_1000_in_control_parts": 2},
        "engine_cpu_ms_per_part": round(1000 * engine_s / max(1, parts_fed), 3),
        "detection_overrides": overrides or {},
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(time.process_time() - c0, 1),
    }
    b = out["baseline_individuals_3sigma_first20"]
    o = out["ours"]
    out["ratio_median_lead_vs_individuals"] = (
        round(o["median_lead_parts"] / b["median_lead_parts"], 2) if o["median_lead_parts"] and b["median_lead_parts"] else None
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=40, help="seeds per scenario (5 scenarios, so 200 runs by default)")
    ap.add_argument("--parts", type=int, default=None, help="parts per batch (default: the scenario's)")
    ap.add_argument("--verbose", action="store_true", help="list misses and false alarms on stderr")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a detection key of every program (value parsed as JSON), e.g. --set horizon=30",
    )
    args = ap.parse_args(argv)
    overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    json.dump(run(args.seeds, args.parts, args.verbose, overrides), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
