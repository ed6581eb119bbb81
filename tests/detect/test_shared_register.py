"""One register, several features: G54 X moves every hole of the setup, so the advice of one hole's
condition weighs where the other holes are. A loose clamp that moved one hole: the change that
leaves both holes closest to nominal, and the advice says why; the holes moved apart (opposite
ways): no work offset is advised, and the advice says to find what moved; the whole part moved:
the hole's own change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from monitor.config import ProgramConfig
from monitor.engine import DriftEngine
from monitor.model import Alert, ConditionState, PartRecord, PartStatus
from monitor.registers import format_mm

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PROGRAM = ProgramConfig.model_validate(
    {
        "program": "O1001",
        "features": {
            f"hole{i}_pos": {
                "kind": "position",
                "x": {"signal": f"probe.hole{i}_x", "nominal": x},
                "y": {"signal": f"probe.hole{i}_y", "nominal": 40.0},
                "tolerance": 0.05,
            }
            for i, x in ((1, 25.0), (2, 75.0))
        },
    }
)


def _run(shift1: float, shift2: float, *, seed: int) -> list[Alert]:
    """12 parts at nominal (2 um of probe noise), then 3 parts with hole 1 moved ``shift1`` and hole 2
    ``shift2`` in X: every change and refresh of hole1_pos's condition, in order."""
    rng = np.random.default_rng(seed)
    engine = DriftEngine({"O1001": PROGRAM}, machine_kinds={"vmc-01": "mill"})
    seen: list[Alert] = []
    for n in range(1, 16):
        d1, d2 = (shift1, shift2) if n > 12 else (0.0, 0.0)
        noise = rng.normal(0.0, 0.002, 4)
        t = T0 + timedelta(minutes=n)
        values = {
            "probe.hole1_x": 25.0 + d1 + noise[0],
            "probe.hole1_y": 40.0 + noise[1],
            "probe.hole2_x": 75.0 + d2 + noise[2],
            "probe.hole2_y": 40.0 + noise[3],
        }
        part = PartRecord(f"vmc-01/O1001/{n}", "vmc-01", "O1001", n, t, t, PartStatus.COMPLETE, values)
        out = engine.assess(part)
        seen += [a for a in [*out.alerts, *out.refreshed] if a.feature == "hole1_pos"]
    return seen


def _x_advice(alert: Alert) -> dict[str, Any] | None:
    offsets = alert.evidence["advice"]["offsets"]
    return next((o for o in offsets if o["label"] == "G54 X"), None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_hole_moved_the_work_offset_is_split_between_both_holes(seed: int) -> None:
    last = _run(0.030, 0.0, seed=seed)[-1]
    assert last.condition is ConditionState.OUT_OF_TOLERANCE
    [shared] = last.evidence["advice"]["shared"]
    hole2 = shared["features"]["hole2_pos"]
    assert shared["register"] == "G54 X" and abs(hole2) < 0.004  # hole 2 stayed where it was
    assert shared["alone_mm"] == pytest.approx(-0.030, abs=0.004)  # hole 1 alone would take it all
    advice = _x_advice(last)
    assert advice is not None
    # the mid-range: both holes end equally far from nominal, on either side
    assert advice["change_mm"] == shared["change_mm"] == pytest.approx((shared["alone_mm"] - hole2) / 2, abs=1e-5)
    after1 = advice["deviation_mm"] + advice["change_mm"]  # G54 X's factor is -1: a hole moves by -change
    after2 = hole2 + advice["change_mm"]
    assert after1 == pytest.approx(-after2, abs=1e-5) and abs(after1) < 0.02
    assert "also moves hole2_pos" in last.evidence["advice"]["action"] and "also moves hole2_pos" in last.message


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_holes_moved_apart_get_no_work_offset_and_are_told_why(seed: int) -> None:
    last = _run(0.030, -0.030, seed=seed)[-1]
    assert last.condition is ConditionState.OUT_OF_TOLERANCE
    assert _x_advice(last) is None  # no G54 X: it would push hole 2 further out
    [shared] = last.evidence["advice"]["shared"]
    assert shared["change_mm"] is None and shared["features"]["hole2_pos"] == pytest.approx(-0.030, abs=0.004)
    action = last.evidence["advice"]["action"]
    assert "G54 X not advised" in action and "one register cannot correct both" in action
    assert f"hole2_pos needs {format_mm(-shared['features']['hole2_pos'])} mm" in action  # against hole 1's


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_whole_part_moved_the_work_offset_corrects_both(seed: int) -> None:
    last = _run(0.030, 0.030, seed=seed)[-1]
    advice = _x_advice(last)
    assert advice is not None and advice["change_mm"] == pytest.approx(-0.030, abs=0.004)
    assert last.evidence["advice"]["shared"] == []
