"""The dashboard's (and ``monitor analyze``'s) view of one feature, drawn from detection's snapshot.

Detection (:mod:`monitor.detect`) knows models, charts and forecasts; this module turns one
feature's :class:`~monitor.detect.watch.FeatureSnapshot` into the JSON the feature page plots:
measurements by part, tolerance limits, control limits per channel, the forecast cone with its
90% interval. (Capability is not the engine's: every screen computes it from the stored values
with :func:`monitor.detect.capability.capability`.) Values are in the feature's units (mm); a position feature's values
are true positions and its channels deviations per axis.
"""

from __future__ import annotations

import math
from typing import Any

from monitor.detect.evidence import jsonable
from monitor.detect.watch import FeatureSnapshot
from monitor.model import SizeFeature

__all__ = ["feature_view"]


def feature_view(snap: FeatureSnapshot | None) -> dict[str, Any]:
    """JSON-able chart data of one feature (no NaN or infinities) from
    :meth:`monitor.engine.DriftEngine.snapshot`; None (a feature the program does not have) gives
    an empty view with an error."""
    if snap is None:
        return {"values": [], "error": "unknown feature"}
    plan = snap.plan
    f = plan.feature
    size = isinstance(f, SizeFeature)
    nominal = plan.nominal
    lim = plan.limits
    control: dict[str, Any] = {}
    for axis, a in snap.axes.items():
        s = a.sigma
        ew = lim.ewma_width * s * math.sqrt(lim.ewma_lambda / (2 - lim.ewma_lambda))
        centre = nominal + a.reference
        control[axis] = {
            "sigma": s,
            "sigma_known": a.sigma_known,
            "armed": a.armed,
            "centre": centre,
            "individuals": [centre - lim.rule1 * s, centre + lim.rule1 * s],
            "ewma": [centre - ew, centre + ew],
            "ewma_statistic": centre + a.ewma_statistic * s,
            "ewma_lambda": lim.ewma_lambda,
            "ewma_width": lim.ewma_width,
            "cusum_k": lim.cusum_k,
            "cusum_h": lim.cusum_h,
            "rule1_sigmas": lim.rule1,
            "model": a.model,
            "drift_odds": a.drift_odds,
        }
    view = {
        "program": plan.program,
        "feature": f.name,
        "kind": "size" if size else "position",
        "values": [
            {
                "part_number": p["part_number"],
                "value": p["value"],
                "deviation": p["deviation"]["value"] if size else p["value"],
                "axes": dict(p["deviation"]),
                "reprobe": bool(p.get("reprobe", False)),
            }
            for p in snap.history
        ],
        "nominal": nominal,
        "limits": plan.tolerance_limits(),
        "control_limits": control.get("value") if size else control,
        "forecast": _forecast(snap),
    }
    return dict(jsonable(view))


def _forecast(snap: FeatureSnapshot) -> dict[str, Any] | None:
    fc = snap.forecast
    if fc is None or snap.last_part is None:
        return None
    plan = snap.plan
    last = snap.last_part
    h = len(next(iter(fc.cones.values())).median)
    base = plan.nominal
    axes: dict[str, Any] = {}
    for axis, cone in fc.cones.items():
        a = snap.axes[axis]
        axes[axis] = {
            "mean": [base + v for v in cone.median],
            "lo": [base + v for v in cone.lo],
            "hi": [base + v for v in cone.hi],
            "slope": a.slope,
            "slope_interval": list(a.slope_interval) if a.slope_interval else None,
            "model": a.model,
            "drift_odds": a.drift_odds,
        }
    lo, mid, hi = fc.first_out
    out: dict[str, Any] = {
        "parts": [last + i for i in range(1, h + 1)],
        "p_out": list(fc.p_out[:h]),
        "parts_to_breach": fc.risk_parts,
        "breach_part": last + fc.risk_parts if fc.risk_parts is not None else None,
        "mean_limit_part": last + fc.mean_limit_parts if fc.mean_limit_parts is not None else None,
        "first_out_part": last + mid if math.isfinite(mid) else None,
        "breach_interval": [lo, hi] if math.isfinite(lo) else None,
        "breach_share": fc.breach_share,
        "significant": any((a.drift_odds or 0.0) >= plan.limits.forecast_odds for a in snap.axes.values()),
        "interval": 0.9,
    }
    if isinstance(plan.feature, SizeFeature):
        out.update({k: axes["value"][k] for k in ("mean", "lo", "hi", "slope", "slope_interval", "model", "drift_odds")})
    else:
        out["axes"] = axes
    return out
