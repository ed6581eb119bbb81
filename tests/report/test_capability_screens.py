"""One capability: the report, ``monitor parts --capability``, ``monitor analyze`` and the dashboard's
feature page give the same numbers for the same feature, through their real interfaces."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import load_site
from monitor.dashboard.api import feature_series
from monitor.detect.capability import capability, stability_signals
from monitor.model import PartStatus
from monitor.store import SqliteStore
from tests.report.conftest import PROGRAM, Batch

KEYS = ("n", "cp", "cp_ci", "cpk", "cpk_ci", "pp", "pp_ci", "ppk", "ppk_ci", "stable")


def _pick(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in KEYS}


def _close(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float | list):
            assert a[k] == pytest.approx(b[k], rel=1e-12), k
        else:
            assert a[k] == b[k], k


def test_every_screen_shows_the_same_capability(batch: Batch, tmp_path: Path) -> None:
    runner = CliRunner()
    site = load_site(batch.site_file)
    out = runner.invoke(app, ["report", "-c", str(batch.site_file), "-p", PROGRAM, "-o", str(tmp_path / "r.html"), "--json"])
    assert out.exit_code == 0, out.output
    report = {f["feature"]: f for f in json.loads(out.output)["features"]}
    out = runner.invoke(app, ["parts", "-c", str(batch.site_file), "--capability", "--json"])
    assert out.exit_code == 0, out.output
    cli = {r["feature"]: r for r in map(json.loads, out.output.splitlines())}
    with SqliteStore(site.store_path) as store:
        dashboard = {
            name: feature_series(site, {}, store, "vmc-01", PROGRAM, name)["capability"]  # type: ignore[index]
            for name in ("hole1_pos", "bore_dia")
        }
    # monitor analyze over the same probe values (a row with a value missing is skipped there:
    # part 8 has no bore diameter, so bore_dia is compared, which leaves part 8 out everywhere)
    complete = [p for p in batch.parts if p.status is PartStatus.COMPLETE]
    signals = ["probe.hole1_x", "probe.hole1_y", "probe.bore_dia"]
    with (tmp_path / "m.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["part", *signals])
        for p in complete:
            w.writerow([p.part_number, *(p.measurements.get(s, "") for s in signals)])
    out = runner.invoke(
        app, ["analyze", str(tmp_path / "m.csv"), "-p", str(batch.site_file.parent / "programs" / "program.yaml"), "--json"]
    )
    assert out.exit_code == 0, out.output
    analyze = json.loads(out.stdout.strip().splitlines()[-1])["capability"]

    for name in ("hole1_pos", "bore_dia"):
        _close(_pick(report[name] | {"n": cli[name]["n"]}), _pick(cli[name]))
        _close(_pick(dashboard[name]), _pick(cli[name]))
    _close(_pick(analyze["bore_dia"]), _pick(cli["bore_dia"]))

    # the numbers are those of the one implementation on the values in part order
    dia = [p.measurements["probe.bore_dia"] for p in complete if "probe.bore_dia" in p.measurements]
    expected = capability(dia, 10.000, 10.015)
    assert cli["bore_dia"]["cpk"] == pytest.approx(expected.cpk.value if expected.cpk else None)
    # true position has one limit: no Cp or Pp on any screen
    assert all(s["hole1_pos"]["cp"] is None and s["hole1_pos"]["pp"] is None for s in (report, cli, dashboard))
    assert cli["hole1_pos"]["cpk"] is not None and cli["hole1_pos"]["ppk"] is not None
    # the drifting hole is not a stable process, and the table says so next to its indices
    assert cli["hole1_pos"]["stable"] is False and cli["hole1_pos"]["signals"]
    table = runner.invoke(app, ["parts", "-c", str(batch.site_file), "--capability"], env={"COLUMNS": "250"})
    line = next(x for x in table.output.splitlines() if "hole1_pos" in x and "│" in x)
    assert "NO: not meaningful" in line
    assert f"hole1_pos: not stable: {cli['hole1_pos']['signals'][0]}" in table.output


def test_stability_tests_hold_their_false_alarm_rate_and_see_drift() -> None:
    rng = np.random.default_rng(3)
    stable = [bool(stability_signals(list(rng.normal(10.0, 0.001, 50)))) for _ in range(1000)]
    assert sum(stable) / 1000 < 0.04  # two tests at 1% each: a stable batch keeps its verdict
    drifted = [bool(stability_signals(list(rng.normal(10.0, 0.001, 100) + np.linspace(0, 0.003, 100)))) for _ in range(200)]
    assert sum(drifted) / 200 > 0.8  # a drift of 3 sigma over the batch is seen
    steady = list(10.0 + rng.normal(0, 0.001, 40))
    spike = [*steady[:30], 10.01, *steady[31:]]
    signals = stability_signals(spike)
    assert signals[0].startswith("a value beyond the control limits: 10.0100 (limits ")
    shifted = [*steady[:20], *(x + 0.003 for x in steady[20:])]
    assert any(s.endswith("a drift or a shift") for s in stability_signals(shifted))


def test_capability_of_one_sided_and_unstable_values() -> None:
    rng = np.random.default_rng(11)
    flat = np.abs(rng.normal(0.006, 0.0015, 50))
    r = capability(flat, None, 0.02)
    assert r.cp is None and r.pp is None and r.cpk is not None and r.ppk is not None
    assert r.cpk.value == pytest.approx((0.02 - flat.mean()) / (3 * r.sigma_within))  # type: ignore[operator]
    assert r.ppk.value == pytest.approx((0.02 - flat.mean()) / (3 * flat.std(ddof=1)))
    assert r.normal is not None and r.n == 50 and r.meaningful == r.stable
    wall = capability(flat + 2.0, 2.0, None)  # a minimum wall: lower limit only
    assert wall.cpk is not None and wall.cpk.value == pytest.approx((wall.mean - 2.0) / (3 * wall.sigma_within))  # type: ignore[operator]
    few = capability(flat[:5], None, 0.02)
    assert few.cpk is not None and not few.meaningful  # too few parts to judge
    # NaN left out, with its label
    gappy = capability([1.0, float("nan"), 1.2, 0.9, 1.1], 0.0, 2.0)
    assert gappy.n == 4
    # the running detector and the batch function agree on the indices
    from monitor.detect.capability import Capability

    running = Capability(9.99, 10.01)
    values = 10.0 + rng.normal(0, 0.002, 30)
    for v in values:
        last = running.update(float(v))
    batch = capability(values, 9.99, 10.01)
    for name in ("cp", "cpk", "pp", "ppk"):
        a, b = last.index(name), batch.index(name)
        assert a is not None and b is not None and a.value == pytest.approx(b.value) and a.lo == pytest.approx(b.lo)


def test_a_features_values_are_the_same_from_the_stores_rows_as_from_an_array() -> None:
    """feature_array reads the store's rows (tuples, one per part) in one pass; the floats are those
    of the same table as an array, and rows of different widths are refused as before."""
    from monitor.model import AxisRef, PositionFeature, SizeFeature
    from monitor.report.stored import feature_array

    rng = np.random.default_rng(7)
    table = rng.normal(0.0, 0.01, size=(500, 2)) + np.array([10.0, 20.0])
    rows = [tuple(float(v) for v in row) for row in table]
    position = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 10.0), AxisRef("probe.hole1_y", 20.0), 0.05)
    assert np.array_equal(feature_array(position, rows), feature_array(position, table))
    assert np.array_equal(feature_array(position, rows), 2.0 * np.sqrt(((table - [10.0, 20.0]) ** 2).sum(axis=1)))
    size = SizeFeature("hole1_dia", "probe.hole1_dia", 10.0, 9.98, 10.02)
    assert np.array_equal(feature_array(size, [(r[0],) for r in rows]), table[:, 0])
    assert feature_array(size, []).shape == (0,)
    with pytest.raises(ValueError):
        feature_array(position, [(1.0, 2.0), (1.0,), (1.0, 2.0, 3.0)])  # as many floats as 3 rows of 2


def test_the_stores_rows_of_a_known_width_give_the_same_floats() -> None:
    """stored_values takes the store's rows at the width it asked for (one column per signal) without
    counting each row: the same floats as the general reading; a first row of another width is read
    the general way (and rows of different widths refused as before)."""
    from monitor.report.stored import _float_table, _store_table

    rng = np.random.default_rng(11)
    table = rng.normal(10.0, 0.01, size=(300, 2))
    rows = [tuple(float(v) for v in row) for row in table]
    singles = [(r[0],) for r in rows]
    assert np.array_equal(_store_table(rows, 2), _float_table(rows)) and _store_table(rows, 2).shape == (300, 2)
    assert np.array_equal(_store_table(singles, 1), table[:, :1]) and _store_table(singles, 1).shape == (300, 1)
    assert np.array_equal(_store_table(rows, 1), _float_table(rows))  # not the width asked for: read as it is
    assert _store_table([], 2).size == 0
    with pytest.raises(ValueError):
        _store_table([(1.0,), (1.0, 2.0)], 2)
