"""Seeded variations of a scenario, so a benchmark scores detectors over many different batches.

Seeds alone only redraw the noise; :func:`vary_scenario` also redraws the physics a shop cannot
control exactly: wear rates, setup bias, thermal growth, probe noise and when steps happen. A
stable scenario stays stable (zero wear stays zero, no steps appear), so false-alarm baselines
keep their meaning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from monitor.sim.scenario import Scenario

__all__ = ["vary_scenario"]


def vary_scenario(scenario: Scenario, seed: int) -> Scenario:
    """A copy of ``scenario`` with its physics knobs redrawn around their values.

    Wear rates scale by 0.6-1.5, biases move by up to +-2 um, thermal growths scale by 0.7-1.3,
    probe noise scales by 0.8-1.25 and every step moves by up to +-10 parts (staying within the
    batch). The result is validated like a file would be; its name gets a ``~<seed>`` suffix.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    data: dict[str, Any] = scenario.model_dump()
    data["name"] = f"{scenario.name or 'scenario'}~{seed}"
    for m in data["machines"]:
        for tool in m["tools"].values():
            if tool["wear_um_per_part"]:
                tool["wear_um_per_part"] *= float(rng.uniform(0.6, 1.5))
        m["bias_um"] = {k: v + float(rng.uniform(-2.0, 2.0)) for k, v in m["bias_um"].items()}
        for axis in ("x_um", "y_um", "z_um"):
            m["thermal"][axis] *= float(rng.uniform(0.7, 1.3))
        m["noise"]["probe_um"] *= float(rng.uniform(0.8, 1.25))
        batch = min(run["parts"] or scenario.parts for run in m["programs"])
        for step in m["steps"]:
            step["at_part"] = int(np.clip(step["at_part"] + rng.integers(-10, 11), 2, max(2, batch)))
    return Scenario.model_validate(data)
