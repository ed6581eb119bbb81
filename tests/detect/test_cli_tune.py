"""``monitor tune`` through the real typer app (values checked against Lucas & Saccucci 1990 and
Montgomery, Introduction to SQC, Tables 9.3 and 9.11)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from monitor.cli import app

runner = CliRunner()


def _json(args: list[str]) -> dict[str, object]:
    result = runner.invoke(app, ["tune", *args, "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    return json.loads(lines[0])  # type: ignore[no-any-return]


def test_ewma_solves_the_width_for_arl0() -> None:
    out = _json(["--chart", "ewma", "--lambda", "0.1", "--arl0", "500"])
    assert out["chart"] == "ewma" and out["lambda"] == 0.1
    assert out["L"] == pytest.approx(2.814, abs=0.001)
    assert out["arl0"] == pytest.approx(500.0, rel=1e-3)
    arl = out["arl"]
    assert isinstance(arl, dict) and {"0.5", "1.0", "2.0"} <= set(arl)
    assert arl["1.0"] == pytest.approx(10.3, rel=0.01)


def test_cusum_solves_h_for_arl0() -> None:
    out = _json(["--chart", "cusum", "--k", "0.5", "--arl0", "370"])
    assert out["chart"] == "cusum" and out["k"] == 0.5
    assert out["h"] == pytest.approx(4.77, rel=0.01)


def test_given_limits_print_their_arls() -> None:
    out = _json(["--chart", "cusum", "--k", "0.5", "--h", "5"])
    assert out["arl0"] == pytest.approx(465, rel=0.01)
    assert out["arl"]["1.0"] == pytest.approx(10.4, rel=0.01)  # type: ignore[index]
    out = _json(["--chart", "ewma", "--lambda", "0.25", "--limit", "2.998"])
    assert out["arl0"] == pytest.approx(500, rel=0.01)


def test_table_output_and_usage_errors() -> None:
    result = runner.invoke(app, ["tune", "--chart", "ewma", "--lambda", "0.2", "--arl0", "370"])
    assert result.exit_code == 0 and "EWMA" in result.stdout and "1.0" in result.stdout
    assert runner.invoke(app, ["tune", "--chart", "ewma"]).exit_code == 2  # neither --arl0 nor --limit
    assert runner.invoke(app, ["tune", "--chart", "ewma", "--h", "4"]).exit_code == 2
    assert runner.invoke(app, ["tune", "--chart", "ewma", "--lambda", "0", "--arl0", "100"]).exit_code == 2
