"""Forecast after an applied offset: does the breach forecast restart from the corrected level?

Seeded runs of the drift engine on one bore that wears (a linear drift of ``--slope`` um/part from
part 10, probe noise ``--noise`` um, tolerance +-7.5 um). At the first part whose forecast says a
breach is due, the advice is applied: the parts cut after it are moved by the change (the
simulated controller), and, in the ``told`` runs, the engine is told of the step as the daemon tells
it after a write (``record_step`` with the register's shift). The ``untold`` runs (same seeds) are
the baseline: the detectors see the corrected parts as an unexplained step.

For the ``--after`` parts after the write, per part: the fitted level against the true corrected
level (um), and whether a breach forecast is raised while the true process would not reach the
forecast's risk threshold within its horizon (a stale breach forecast); where a forecast is made,
the parts until a bad part is due against the same from the true process (the first part whose
chance of being out reaches the forecast's risk threshold). Prints one JSON object with both
arms and the ratio told/untold of stale breach forecasts; for comparison, how many of the breach
forecasts that asked for the write were stale by the same measure (the forecaster's own earliness),
and the fitted slope against the true one on stale and other parts.

Usage: ``python3 bench/forecast_after_step.py [--seeds 40] [--slope 0.5] [--noise 1.0] [--after 15]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from monitor.config import ProgramConfig
from monitor.engine import DriftEngine
from monitor.model import PartRecord, PartStatus

NOMINAL, HALF = 10.0075, 0.0075
PROGRAM = ProgramConfig.model_validate(
    {
        "program": "O1001",
        "features": {
            "bore": {
                "kind": "size",
                "signal": "probe.bore",
                "nominal": NOMINAL,
                "lower": NOMINAL - HALF,
                "upper": NOMINAL + HALF,
                "form": "inside",
                "offset": {"register": "tool_diameter_wear", "tool": "T12"},
            }
        },
    }
)
T0 = datetime(2031, 1, 1, tzinfo=UTC)
ONSET = 10
CLEAR = 5
"""A breach forecast is clearly stale when the true process gets to the risk threshold more than this
many parts after the forecast's horizon (within a few parts of the horizon is the forecast's own
uncertainty, not a forecast from the old level)."""


def _true_due(level: float, slope: float, noise: float, threshold: float, searched: int) -> float:
    """Parts ahead until the true process makes a part out of tolerance with probability
    ``threshold`` (what the forecast's risk estimates; inf: not within ``searched``)."""
    for h in range(1, searched + 1):
        mean = level + slope * h
        p_out = 0.5 * math.erfc((HALF - mean) / (noise * math.sqrt(2))) + 0.5 * math.erfc((HALF + mean) / (noise * math.sqrt(2)))
        if p_out >= threshold:
            return float(h)
    return math.inf


def _run(seed: int, told: bool, slope: float, noise: float, after: int, parts: int = 150) -> dict[str, Any] | None:
    rng = np.random.default_rng(seed)
    engine = DriftEngine({"O1001": PROGRAM}, machine_kinds={"vmc-01": "mill"})
    shift = 0.0  # what the controller's register does to the parts cut after the write (mm)
    applied_at: int | None = None
    trigger_stale = False
    rows: list[dict[str, Any]] = []
    for n in range(1, parts + 1):
        true = slope * max(0, n - ONSET) + shift  # the process mean's deviation from nominal (mm)
        value = NOMINAL + true + rng.normal(0.0, noise)
        t = T0 + timedelta(minutes=n)
        part = PartRecord(f"vmc-01/O1001/{n}", "vmc-01", "O1001", n, t, t, PartStatus.COMPLETE, {"probe.bore": value})
        ev = engine.assess(part).evidence.get("bore")
        if ev is None:
            continue
        if applied_at is not None:
            fit = ev.axes["value"].fit
            fc = ev.forecast
            due = _true_due(true, slope, noise, fc.threshold if fc is not None else 0.05, fc.searched if fc is not None else 200)
            rows.append(
                {
                    "after": n - applied_at,
                    "level_error_um": abs(fit.level - true) * 1000 if fit is not None else None,
                    "slope_ratio": fit.slope / slope if fit is not None else None,
                    "breach": bool(fc is not None and fc.breach),
                    "stale": bool(fc is not None and fc.breach and due > fc.within),
                    "stale_clear": bool(fc is not None and fc.breach and due > fc.within + CLEAR),
                    "due_error": abs(fc.due_parts - due)
                    if fc is not None and fc.due_parts is not None and math.isfinite(due)
                    else None,
                }
            )
            if n - applied_at >= after:
                break
        elif ev.forecast is not None and ev.forecast.breach and ev.offsets:
            due = _true_due(true, slope, noise, ev.forecast.threshold, ev.forecast.searched)
            trigger_stale = due > ev.forecast.within  # the forecast that asked for the write was early itself
            [advice] = ev.offsets
            reg = engine.registers("vmc-01", "O1001", "bore")["value"]
            change = reg.change_for(advice.deviation)
            shift = reg.shift_for(change)  # from the next part on
            if told:
                engine.record_step("vmc-01", "O1001", "bore", {"value": shift})
            applied_at = n
    if applied_at is None:
        return None
    return {"seed": seed, "applied_at": applied_at, "trigger_stale": trigger_stale, "rows": rows}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for run in runs for r in run["rows"]]

    def mean_at(k: int) -> float | None:
        vals = [r["level_error_um"] for r in rows if r["after"] == k and r["level_error_um"] is not None]
        return round(statistics.fmean(vals), 2) if vals else None

    errors = [r["due_error"] for r in rows if r["due_error"] is not None]
    first = [r["due_error"] for r in rows if r["due_error"] is not None and r["after"] <= 3]

    def slope_ratio(stale: bool) -> float | None:
        vals = [r["slope_ratio"] for r in rows if r["stale"] == stale and r["slope_ratio"] is not None]
        return round(statistics.median(vals), 2) if vals else None

    return {
        "runs": len(runs),
        "parts_after": len(rows),
        "stale_breach_forecasts": sum(r["stale"] for r in rows),
        "breach_forecasts": sum(r["breach"] for r in rows),
        "runs_with_a_stale_forecast": sum(any(r["stale"] for r in run["rows"]) for run in runs),
        "level_error_um_after_1": mean_at(1),
        "level_error_um_after_3": mean_at(3),
        "level_error_um_after_10": mean_at(10),
        "stale_clear": sum(r["stale_clear"] for r in rows),
        "stale_at_first_part_after": sum(r["stale"] for r in rows if r["after"] == 1),
        "stale_clear_at_first_part_after": sum(r["stale_clear"] for r in rows if r["after"] == 1),
        "stale_before_the_write": sum(run["trigger_stale"] for run in runs),
        "fitted_to_true_slope_median_stale": slope_ratio(True),
        "fitted_to_true_slope_median_other": slope_ratio(False),
        "forecasts_made": len(errors),
        "due_error_parts_median": round(statistics.median(errors), 1) if errors else None,
        "due_error_parts_median_first_3": round(statistics.median(first), 1) if first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--slope", type=float, default=0.5, help="drift, um per part")
    parser.add_argument("--noise", type=float, default=1.0, help="probe noise sd, um")
    parser.add_argument("--after", type=int, default=15, help="parts followed after the write")
    args = parser.parse_args()
    arms = {}
    for told in (True, False):
        runs = [_run(s, told, args.slope / 1000, args.noise / 1000, args.after) for s in range(args.seeds)]
        arms["told" if told else "untold"] = _summary([r for r in runs if r is not None])
    untold = arms["untold"]["stale_breach_forecasts"]
    print(
        json.dumps(
            {
                **arms,
                "ratio_stale_told_to_untold": round(arms["told"]["stale_breach_forecasts"] / untold, 3) if untold else None,
            }
        )
    )


if __name__ == "__main__":
    main()
