"""Physics and ground truth of the simulated cell: wear, warm-up, steps, noise, dropouts."""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import pytest

from monitor.config import PositionFeatureConfig, SizeFeatureConfig
from monitor.model import PositionFeature, SizeFeature
from monitor.sim import SimCell, SimPart, load_scenario, vary_scenario


def _cell(name: str, seed: int = 0, parts: int | None = None) -> SimCell:
    return SimCell(load_scenario(name), seed=seed, parts=parts)


def _series(parts: list[SimPart], signal: str, view: str = "mean") -> list[float]:
    out = []
    for p in parts:
        v = getattr(p, view)[signal]
        assert v is not None
        out.append(v)
    return out


@pytest.mark.parametrize("name", ["tool_wear", "demo", "thermal", "step", "noisy_probe"])
@pytest.mark.parametrize("seed", [0, 7])
def test_ground_truth_matches_true_values(name: str, seed: int) -> None:
    """Recompute first out-of-tolerance part from true values with the domain model's own rules."""
    cell = _cell(name, seed)
    truth = cell.true_values()
    for gt in cell.ground_truth():
        program = cell.programs()[gt.program]
        feature = next(f for f in program.feature_models() if f.name == gt.feature)
        parts = sorted(p for (m, prog, p) in truth if m == gt.machine and prog == gt.program)
        assert parts == list(range(1, len(parts) + 1)), "part numbers start at 1 and are contiguous"
        bad = []
        for n in parts:
            values = truth[(gt.machine, gt.program, n)]
            if isinstance(feature, SizeFeature):
                assert feature.signal is not None
                bad.append(not feature.in_tolerance(values[feature.signal]))
            else:
                assert isinstance(feature, PositionFeature)
                tp = feature.true_position(values)
                assert tp is not None
                bad.append(tp > feature.tolerance)
        expected = next((n for n, b in zip(parts, bad, strict=True) if b), None)
        assert gt.first_out_of_tolerance == expected, gt


def test_tool_wear_crosses_tolerance_mid_batch_and_drift_starts_early() -> None:
    for seed in range(5):
        truth = {g.feature: g for g in _cell("tool_wear", seed).ground_truth()}
        dia = truth["hole1_dia"]
        assert dia.first_out_of_tolerance is not None and 40 <= dia.first_out_of_tolerance <= 70
        assert dia.drift_starts is not None and dia.drift_starts < 10
        assert truth["hole1_pos"].drift_starts is None and truth["hole1_pos"].first_out_of_tolerance is None


def test_stable_scenario_has_no_drift_and_probe_noise_of_1_to_2_um() -> None:
    cell = _cell("stable", seed=3)
    assert all(g.drift_starts is None and g.first_out_of_tolerance is None for g in cell.ground_truth())
    for program, config in cell.programs().items():
        parts = cell.measurements(program)
        for signal in config.probe_signals():
            measured = _series(parts, signal, "measured")
            std_um = statistics.stdev(measured) * 1000
            assert 1.0 <= std_um <= 2.0, (signal, std_um)
            probe_only = [p.measured[signal] - p.true[signal] for p in parts]  # type: ignore[operator]
            assert 0.7 <= statistics.stdev(probe_only) * 1000 <= 1.3


def test_wear_shrinks_the_bore_and_raises_spindle_load() -> None:
    parts = _cell("tool_wear", seed=2).measurements("O1001")
    dia = _series(parts, "probe.hole1_dia")
    per_part_um = (dia[-1] - dia[0]) / (len(dia) - 1) * 1000
    assert -0.35 < per_part_um < -0.15
    first, last = parts[0].spindle_mean_load, parts[-1].spindle_mean_load
    assert 1.02 < last / first < 1.15, "a few percent more load over the tool's life"
    assert parts[-1].tool_wear_um["T12"] > parts[0].tool_wear_um["T12"]


def test_spindle_load_samples_rise_with_wear() -> None:
    cell = _cell("tool_wear", seed=2)
    per_part: list[list[float]] = [[]]
    for event in cell.events():
        if event.signal == "spindle.load" and isinstance(event.value, float) and event.value > 0:
            per_part[-1].append(event.value)
        elif event.signal == "part.count" and event.value:
            per_part.append([])
    means = [statistics.fmean(loads) for loads in per_part if loads]
    assert len(means) == 100
    assert statistics.fmean(means[-10:]) > statistics.fmean(means[:10]) * 1.02


def test_thermal_warms_up_then_cools_during_the_break() -> None:
    parts = _cell("thermal", seed=1).measurements("O1001")
    x = [v * 1000 for v in _series(parts, "probe.hole1_x")]
    theta = [p.thermal for p in parts]
    rise = [b - a for a, b in itertools.pairwise(x[:31])]
    assert all(r > 0 for r in rise), "warming up moves X monotonically in the first parts"
    assert rise[0] > rise[-1] * 2, "growth slows toward a plateau (exponential)"
    assert x[49] - x[0] > 6.0 and abs(x[49] - x[45]) < 0.5, "a plateau of about +8 um"
    assert x[50] < x[49] - 3.0, "the 60-minute break after part 50 cooled the spindle"
    assert x[99] > x[50] + 3.0, "it warms up again"
    assert theta[50] < theta[49]
    assert parts[50].warm_min < parts[49].warm_min, "warm-up clock restarts after a break"
    face = _series(_cell("thermal", seed=1).measurements("O2002"), "probe.face_len")
    assert face[49] < face[0] - 0.006, "the spindle growing toward the part shortens the face length"


def test_steps_show_up_at_their_part() -> None:
    cell = _cell("step", seed=4)
    parts = cell.measurements("O1001")
    dia = _series(parts, "probe.hole1_dia")
    x = _series(parts, "probe.hole2_x")
    jumps = {n + 1: (dia[n] - dia[n - 1]) * 1000 for n in range(1, len(dia))}
    assert jumps[40] == pytest.approx(-6.0)
    assert all(abs(j) < 1e-9 for n, j in jumps.items() if n != 40)
    assert (x[69] - x[68]) * 1000 == pytest.approx(10.0, abs=0.2)
    assert parts[39].spindle_mean_load > parts[38].spindle_mean_load + 0.5
    truth = {g.feature: g for g in cell.ground_truth()}
    assert truth["hole1_dia"].drift_starts == 40 and truth["hole2_pos"].drift_starts == 70


def test_dropouts_produce_none_in_measurements_and_events() -> None:
    cell = _cell("dropouts", seed=0)
    parts = cell.measurements("O1001")
    for n in (10, 11, 57):
        assert all(v is None for v in parts[n - 1].measured.values())
    lost = sum(v is None for p in parts for v in p.measured.values())
    total = sum(len(p.measured) for p in parts)
    assert 3 * 6 < lost < 3 * 6 + 0.12 * total
    nones = [e for e in cell.events(include_spindle_samples=False) if e.signal.startswith("probe.") and e.value is None]
    assert len(nones) == lost
    assert all(isinstance(p.true[s], float) for p in parts for s in p.true), "truth never drops out"


def test_tool_change_and_sister_tool_reset_wear_and_life(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "parts: 30\nmachines:\n  - id: m1\n    programs: [O1001]\n"
        "    tools: {T12: {wear_um_per_part: 0.2, used_parts: 5}, T1: {life_parts: 12}}\n"
        "    steps: [{kind: tool_change, at_part: 20, tool: T12}]\n",
        encoding="utf-8",
    )
    parts = SimCell(load_scenario(path)).parts()
    assert parts[0].tool_cuts["T12"] == 6 and parts[18].tool_cuts["T12"] == 24 and parts[19].tool_cuts["T12"] == 1
    assert parts[19].tool_life["T12"] < parts[18].tool_life["T12"]
    assert parts[19].mean["probe.hole1_dia"] > parts[18].mean["probe.hole1_dia"]
    assert [p.tool_cuts["T1"] for p in parts[10:14]] == [11, 12, 1, 2]


def test_creep_moves_only_the_named_feature() -> None:
    parts = _cell("demo", seed=0).measurements("O1001")
    x1 = _series(parts, "probe.hole1_x")
    x2 = _series(parts, "probe.hole2_x")
    d = [((a - 25.0) - (b - 75.0)) * 1000 for a, b in zip(x1, x2, strict=True)]
    assert d[28] == pytest.approx(0.0, abs=1e-6) and d[29] == pytest.approx(0.4) and d[99] == pytest.approx(28.4)


def test_demo_flags_a_feature_long_before_it_fails() -> None:
    cell = _cell("demo", seed=0)
    assert [(m.id, m.programs) for m in cell.machines] == [("vmc-01", ("O1001",)), ("vmc-02", ("O2002",))]
    failing = [g for g in cell.ground_truth() if g.first_out_of_tolerance is not None]
    assert any(g.drift_starts is not None and g.first_out_of_tolerance - g.drift_starts >= 30 for g in failing)  # type: ignore[operator]


def test_position_truth_uses_true_position() -> None:
    cell = _cell("demo", seed=0)
    gt = next(g for g in cell.ground_truth() if g.feature == "hole1_pos")
    assert gt.first_out_of_tolerance is not None
    config = cell.programs()["O1001"].features["hole1_pos"]
    assert isinstance(config, PositionFeatureConfig)
    p = cell.measurements("O1001")[gt.first_out_of_tolerance - 1]
    dx = p.true["probe.hole1_x"] - config.x.nominal
    dy = p.true["probe.hole1_y"] - config.y.nominal
    assert 2 * (dx * dx + dy * dy) ** 0.5 > config.tolerance
    assert isinstance(cell.programs()["O1001"].features["hole1_dia"], SizeFeatureConfig)


def test_parts_override_and_fast_path_speed() -> None:
    scenario = load_scenario("demo")
    t0 = time.perf_counter()
    cell = SimCell(scenario, seed=5, parts=200)
    measurements = cell.measurements("O1001")
    cell.ground_truth()
    elapsed = time.perf_counter() - t0
    assert len(measurements) == 200 and len(cell.measurements("O2002")) == 200
    assert elapsed < 1.0, f"parts-only path took {elapsed:.2f} s"


def test_ground_truth_names_the_causes() -> None:
    demo = {(g.machine, g.feature): g.causes for g in _cell("demo").ground_truth()}
    assert demo[("vmc-01", "hole1_dia")] == ("wear:T12",)
    assert demo[("vmc-01", "hole1_pos")] == ("thermal", "step")
    assert demo[("vmc-02", "bore_dia")] == ("wear:T7",)
    assert all(g.causes == () for g in _cell("stable").ground_truth())
    step = {g.feature: g.causes for g in _cell("step").ground_truth()}
    assert step["hole2_pos"] == ("step",) and step["hole2_dia"] == ("wear:T12",)


def test_variants_differ_in_physics_but_stable_stays_stable() -> None:
    base = load_scenario("tool_wear")
    crossings = set()
    for k in range(12):
        variant = vary_scenario(base, k)
        assert variant.name == f"tool_wear~{k}"
        assert vary_scenario(base, k) == variant
        gt = {g.feature: g for g in SimCell(variant, seed=k).ground_truth()}
        crossings.add(gt["hole1_dia"].first_out_of_tolerance)
    assert len(crossings) >= 6, crossings
    for k in range(5):
        assert all(g.drift_starts is None for g in SimCell(vary_scenario(load_scenario("stable"), k)).ground_truth())
    step = vary_scenario(load_scenario("step"), 3)
    assert step.machines[0].steps[0].at_part != 40 or step.machines[0].steps[1].at_part != 70
