"""``monitor demo --closed-loop``: the daemon applies the advice on the secure simulated CNC by itself
(offset.auto_apply), the simulated machine re-centres the parts cut after each write, and a batch
that would have made scrap stays (more) in tolerance."""

from __future__ import annotations

from pathlib import Path

from monitor.demo import DemoOptions, run_demo
from monitor.model import ActionKind
from monitor.sim import SimCell, load_scenario
from monitor.store import open_store


async def test_the_loop_keeps_a_drifting_batch_in_tolerance(tmp_path: Path) -> None:
    # tool_wear: the boring head's wear takes both bores out of tolerance around parts 50-60
    options = DemoOptions(scenario="tool_wear", seed=1, parts=75, speed=500.0, closed_loop=True)
    result = await run_demo(options, tmp_path)
    # every part is read: the batch starts once the daemon's SignAndEncrypt sessions are subscribed
    # (before, the first part of each machine was published while the daemon connected, and lost)
    made = SimCell(load_scenario("tool_wear"), seed=1, parts=75).parts()
    assert result.parts == len(made)
    loop = result.closed_loop
    assert loop is not None and loop["out_of_tolerance_without"] >= 10
    assert loop["offsets_applied"] >= 1
    assert loop["out_of_tolerance_with"] < loop["out_of_tolerance_without"] / 2
    with open_store(tmp_path / "demo.db", read_only=True) as store:
        applied = [a for a in store.actions() if a.kind is ActionKind.OFFSET_APPLIED]
    assert {a.user for a in applied} == {"auto-apply"} and {a.source for a in applied} == {"controller"}
    assert all(a.register is not None and a.register.label == "T12 D-wear" for a in applied)
    assert all("Basic256Sha256/SignAndEncrypt as OPC UA user monitor-writer" in a.reason for a in applied)
    assert result.as_dict()["closed_loop"] == loop
