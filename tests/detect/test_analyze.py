"""``monitor analyze``: offline replay of a measurements CSV through the same detectors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import monitor.cli.analyze  # noqa: F401  (registers the command even before the CLI lists it)
from monitor.analyze import analyze_csv
from monitor.cli import app
from monitor.config import ProgramConfig
from monitor.errors import ConfigError
from monitor.sim import PROGRAMS_DIR, SimCell, load_scenario, write_program_csv

PROGRAM = PROGRAMS_DIR / "O1001.yaml"
runner = CliRunner()


def _program() -> ProgramConfig:
    from monitor.config import load_program

    return load_program(PROGRAM)


@pytest.fixture(scope="module")
def wear_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int | None]]:
    cell = SimCell(load_scenario("tool_wear"), seed=2)
    path = write_program_csv(cell, "O1001", tmp_path_factory.mktemp("csv") / "O1001.csv")
    truth = {g.feature: g.first_out_of_tolerance for g in cell.ground_truth()}
    return path, truth


def test_json_output_has_the_documented_shape_and_flags_drift_early(wear_csv: tuple[Path, dict[str, int | None]]) -> None:
    path, truth = wear_csv
    result = runner.invoke(app, ["analyze", str(path), "--program", str(PROGRAM), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out) == {"alerts", "out_of_tolerance", "capability", "features", "skipped_rows"}
    for alert in out["alerts"]:
        assert set(alert) == {
            "part",
            "feature",
            "kind",
            "condition",
            "severity",
            "message",
            "parts_to_breach",
            "breach_interval",
            "evidence",
        }
        assert "\n" not in alert["message"]
    assert set(out["features"]) == {"hole1_pos", "hole1_dia", "hole2_pos", "hole2_dia"}
    latest = out["features"]["hole1_dia"]
    assert latest["model"] in ("linear", "onset", "saturating") and latest["axes"]["value"]["fit"]["n"] > 0
    assert set(out["out_of_tolerance"]) == {"hole1_pos", "hole1_dia", "hole2_pos", "hole2_dia"}
    assert out["out_of_tolerance"]["hole1_pos"] is None
    for feature in ("hole1_dia", "hole2_dia"):
        first_oot = out["out_of_tolerance"][feature]
        assert first_oot is not None and truth[feature] is not None
        drift = [a for a in out["alerts"] if a["feature"] == feature and a["kind"] in ("forecast", "ewma", "cusum")]
        assert drift and drift[0]["part"] < first_oot - 8  # at least 8 parts of warning
        forecasts = [a for a in out["alerts"] if a["feature"] == feature and a["kind"] == "forecast"]
        assert forecasts, f"no forecast alert for {feature}"
        first = forecasts[0]
        assert first["part"] < first_oot
        assert first["parts_to_breach"] is not None and len(first["breach_interval"]) == 2
        lo, hi = first["evidence"]["first_out_interval"]
        assert lo <= first_oot <= hi
    cap = out["capability"]["hole1_dia"]
    assert {"cp", "cpk", "ppk"} <= set(cap)
    assert cap["cp"] > cap["cpk"]  # wear pulled the mean off centre


def test_bad_rows_are_reported_by_line_and_skipped(tmp_path: Path) -> None:
    program = _program()
    signals = program.probe_signals()
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["part", *signals])
        good = ["25.0", "40.0", "10.0075", "75.0", "40.0", "10.0075"]
        w.writerow(["1", *good])
        w.writerow(["2", "", *good[1:]])  # line 3: missing value
        w.writerow(["3", "abc", *good[1:]])  # line 4: text in a number column
        w.writerow(["x", *good])  # line 5: bad part number
        w.writerow(["4", *good[:2], "10.02", *good[3:]])  # line 6: out of tolerance
        w.writerow(["4", *good])  # line 7: duplicate part
    result = runner.invoke(app, ["analyze", str(path), "--program", str(PROGRAM), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["out_of_tolerance"]["hole1_dia"] == 4
    analysis = analyze_csv(path, program)
    assert [b.line for b in analysis.bad_rows] == [3, 4, 5, 7]
    assert "probe.hole1_x" in analysis.bad_rows[0].reason and "abc" in analysis.bad_rows[1].reason
    assert analysis.parts == 2
    assert f"{path}:3" in result.stderr


def test_table_output_and_missing_column(tmp_path: Path, wear_csv: tuple[Path, dict[str, int | None]]) -> None:
    result = runner.invoke(app, ["analyze", str(wear_csv[0]), "--program", str(PROGRAM)])
    assert result.exit_code == 0 and "forecast" in result.stdout and "Capability" in result.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("part,probe.hole1_x\n1,25.0\n")
    result = runner.invoke(app, ["analyze", str(bad), "--program", str(PROGRAM)])
    assert result.exit_code == 1 and "probe.hole1_y" in result.stderr
    with pytest.raises(ConfigError):
        analyze_csv(tmp_path / "absent.csv", _program())


def test_several_machines_are_analysed_apart(tmp_path: Path) -> None:
    cell = SimCell(load_scenario("stable"), seed=4)
    path = tmp_path / "two.csv"
    write_program_csv(cell, "O1001", path)
    rows = path.read_text().splitlines()
    # the same parts again as a second machine
    extra = [r.replace("vmc-01", "vmc-09", 1) for r in rows[1:]]
    path.write_text("\n".join([*rows, *extra]) + "\n")
    analysis = analyze_csv(path, _program())
    assert set(analysis.capability) == {
        f"{m}/{f}" for m in ("vmc-01", "vmc-09") for f in ("hole1_pos", "hole1_dia", "hole2_pos", "hole2_dia")
    }
    assert analysis.capability["vmc-01/hole1_dia"] == analysis.capability["vmc-09/hole1_dia"]
