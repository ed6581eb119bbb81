"""An applied offset of known size: the detectors' level restarts from the corrected level on the
first part after it, not from that one part's reading (a noisy first part kept the old level and
its breach forecast; bench/forecast_after_step.py measures it over many seeds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from monitor.config import ProgramConfig
from monitor.engine import DriftEngine
from monitor.model import PartRecord, PartStatus

NOMINAL = 10.0075
PROGRAM = ProgramConfig.model_validate(
    {
        "program": "O1001",
        "features": {
            "bore": {
                "kind": "size",
                "signal": "probe.bore",
                "nominal": NOMINAL,
                "lower": NOMINAL - 0.0075,
                "upper": NOMINAL + 0.0075,
                "form": "inside",
                "offset": {"register": "tool_diameter_wear", "tool": "T12"},
            }
        },
    }
)
T0 = datetime(2031, 1, 1, tzinfo=UTC)
SLOPE, NOISE = 0.0003, 0.001  # mm per part from part 10, probe noise (sd)


def _part(n: int, value: float) -> PartRecord:
    t = T0 + timedelta(minutes=n)
    return PartRecord(f"vmc-01/O1001/{n}", "vmc-01", "O1001", n, t, t, PartStatus.COMPLETE, {"probe.bore": value})


def test_the_level_after_an_applied_offset_follows_the_known_shift_not_one_noisy_reading() -> None:
    errors = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        engine = DriftEngine({"O1001": PROGRAM}, machine_kinds={"vmc-01": "mill"})
        for n in range(1, 31):  # a bore that wears 0.3 um per part from part 10
            ev = engine.assess(_part(n, NOMINAL + SLOPE * max(0, n - 10) + rng.normal(0.0, NOISE))).evidence["bore"]
        fit = ev.axes["value"].fit
        assert fit is not None and fit.level > 0.004  # worn: the advice re-centres it
        register = engine.registers("vmc-01", "O1001", "bore")["value"]
        shift = register.shift_for(register.change_for(fit.level))  # the write moves the next parts by -level
        engine.record_step("vmc-01", "O1001", "bore", {"value": shift})
        true = SLOPE * 21 + shift
        reading = true + 2 * NOISE  # the first part after the write reads two sd high
        after = engine.assess(_part(31, NOMINAL + reading)).evidence["bore"]
        assert after.known_step
        level = after.axes["value"].fit
        assert level is not None
        errors.append(abs(level.level - true))
    # one reading 2 um off does not set the level: the known shift of the write counts
    assert float(np.mean(errors)) < 0.5 * 2 * NOISE, errors
