"""Closed-loop benchmark: parts out of tolerance with and without the monitor applying its advice.

Runs ``monitor demo --closed-loop`` (the real daemon reading the secure simulated CNC over OPC UA,
``offset.auto_apply`` on every feature, the simulated physics moving the parts cut after each
write) for several seeds and scenarios, and counts, per run, the parts with at least one feature
out of tolerance as the loop made them against the same seeded cell untouched (the baseline, from
the same run). Wall-clock paced: ``--speed`` compresses time; a loaded machine writes later in the
batch, so figures can differ a little between runs.

Prints one JSON object: per run the two counts, offsets applied and refused; totals and the ratio
with/without. Usage: ``python3 bench/closed_loop.py [--seeds 3] [--scenarios demo,tool_wear] [--speed 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from monitor.demo import DemoOptions, run_demo


async def _run(scenario: str, seed: int, speed: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="closed-loop-") as folder:
        result = await run_demo(DemoOptions(scenario=scenario, seed=seed, speed=speed, closed_loop=True), Path(folder))
    assert result.closed_loop is not None
    return {"scenario": scenario, "seed": seed, "parts": result.parts, **result.closed_loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenarios", default="demo,tool_wear")
    parser.add_argument("--speed", type=float, default=400.0)
    args = parser.parse_args()
    runs = [asyncio.run(_run(scenario, seed, args.speed)) for scenario in args.scenarios.split(",") for seed in range(args.seeds)]
    without = sum(r["out_of_tolerance_without"] for r in runs)
    with_loop = sum(r["out_of_tolerance_with"] for r in runs)
    print(
        json.dumps(
            {
                "runs": runs,
                "out_of_tolerance_without": without,
                "out_of_tolerance_with": with_loop,
                "offsets_applied": sum(r["offsets_applied"] for r in runs),
                "offsets_refused": sum(r["offsets_refused"] for r in runs),
                "ratio_with_to_without": round(with_loop / without, 3) if without else None,
            }
        )
    )


if __name__ == "__main__":
    main()
