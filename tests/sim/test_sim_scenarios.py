"""Scenario and program files: every packaged file loads, bad files fail with file:line key messages."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

import monitor.sim
from monitor.config import load_program
from monitor.errors import ConfigError
from monitor.sim import PROCESSES, SimCell, list_scenarios, load_programs, load_scenario
from monitor.sim.process import PROGRAMS_DIR

REPO = Path(__file__).resolve().parents[2]


def test_all_lists_public_names() -> None:
    public = {
        name
        for name, value in vars(monitor.sim).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    }
    assert public == set(monitor.sim.__all__)


def test_packaged_scenarios_include_the_required_set() -> None:
    assert {"stable", "tool_wear", "thermal", "step", "noisy_probe", "dropouts", "demo"} <= set(list_scenarios())


@pytest.mark.parametrize("name", list_scenarios())
def test_every_scenario_loads_and_simulates(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.description
    cell = SimCell(scenario, seed=0)
    assert cell.parts()
    # ground truth of every feature the simulated probe measures (inspection-only features have none)
    probed = sum(1 for m in cell.machines for p in m.programs for f in cell.programs()[p].feature_models() if f.signals)
    assert len(cell.ground_truth()) == probed


def test_load_by_path_equals_load_by_name() -> None:
    assert load_scenario(PROGRAMS_DIR.parent / "scenarios" / "demo.yaml") == load_scenario("demo")


def test_programs_validate_and_match_the_process_table() -> None:
    programs = load_programs()
    assert set(programs) == {"O1001", "O2002"}
    for name, program in programs.items():
        assert program.program == name
        assert set(program.probe_signals()) == set(PROCESSES[name].probe_signals)
        for signal in PROCESSES[name].size_effects:
            assert signal in program.probe_signals()


def test_config_copies_match_the_packaged_programs() -> None:
    for name, program in load_programs().items():
        copy = load_program(REPO / "configs" / "programs" / f"{name}.yaml")
        assert copy.model_dump() == program.model_dump(), f"configs/programs/{name}.yaml differs from the packaged one"


def test_demo_program_tolerances_are_realistic() -> None:
    o1001 = load_programs()["O1001"]
    dia = o1001.features["hole1_dia"]
    pos = o1001.features["hole1_pos"]
    assert dia.kind == "size" and (dia.lower, dia.upper) == (10.0, 10.015)
    assert pos.kind == "position" and pos.tolerance == 0.05


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "parts: 10\nmachines:\n  - id: m1\n    programs: [O1001]\n    cycle_seconds: 90\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    text = str(info.value)
    assert f"{path}:5 machines[0].cycle_seconds: unknown key" in text


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "parts: 0\nmachines:\n  - id: m1\n    programs: [O9999]\n    steps:\n      - {kind: explode, at_part: 3}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    keys = {issue.key for issue in info.value.issues}
    assert "parts" in keys
    assert "machines[0].programs[0].program" in keys
    assert any(k.startswith("machines[0].steps[0]") for k in keys)
    assert "unknown program 'O9999'" in str(info.value)


def test_cross_references_are_checked(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "machines:\n  - id: m1\n    programs: [O1001]\n    tools: {T7: {wear_um_per_part: 1}}\n"
        "    bias_um: {probe.bore_dia: 2}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    text = str(info.value)
    assert "tools.T7: not used" in text and "probe.bore_dia: not a probe signal" in text
    assert f"{path}:2 machines[0]" in text


def test_step_must_name_program_on_multi_program_machine(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "machines:\n  - id: m1\n    programs: [O1001, {program: O2002, parts: 5}]\n"
        "    steps: [{kind: chipped_tool, at_part: 3, tool: T12, wear_um: 2}]\n",
    )
    with pytest.raises(ConfigError, match="say which program"):
        load_scenario(path)


def test_late_probe_must_fit_in_idle(tmp_path: Path) -> None:
    path = _write(tmp_path, "late_probe_s: 40\nmachines:\n  - {id: m1, programs: [O1001], idle_s: 30}\n")
    with pytest.raises(ConfigError, match="late_probe_s"):
        load_scenario(path)


def test_yaml_syntax_error_and_unknown_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "machines: [\n")
    with pytest.raises(ConfigError, match="YAML syntax"):
        load_scenario(path)
    with pytest.raises(ConfigError, match="packaged scenarios are"):
        load_scenario("no_such_scenario")


def test_unknown_creep_feature_is_a_config_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "machines:\n  - id: m1\n    programs: [O1001]\n"
        "    steps: [{kind: creep, at_part: 3, dx_um_per_part: 1, features: [hole9_pos]}]\n",
    )
    with pytest.raises(ConfigError, match="hole9_pos"):
        SimCell(load_scenario(path))


def test_readme_key_reference_is_a_valid_scenario(tmp_path: Path) -> None:
    """The documented example uses every key; it must load, so the reference cannot rot."""
    text = (PROGRAMS_DIR.parent / "scenarios" / "README.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "reference.yaml"
    path.write_text(block, encoding="utf-8")
    cell = SimCell(load_scenario(path), parts=90)
    assert len(cell.measurements("O1001")) == 90
