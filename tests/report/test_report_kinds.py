"""The feature kinds beyond size and position in the batch report: one-sided, angle, go/no-go."""

from __future__ import annotations

import csv
import io
import random
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import load_site
from monitor.model import PartRecord, PartStatus
from monitor.report import build_report, render_csv, render_html
from monitor.store import SqliteStore
from tests.report.conftest import T0

PROGRAM_YAML = """\
program: O3003
features:
  seal_flat:
    kind: one_sided
    signal: probe.seal_flat
    upper: 0.010
  wall:
    kind: one_sided
    signal: probe.wall
    lower: 2.0
    nominal: 2.1
  chamfer:
    kind: angle
    signal: probe.chamfer
    nominal: 45.0
    lower: 44.5
    upper: 45.5
  thread_m8:
    kind: attribute
    signal: probe.thread_ok
"""


def _site(tmp_path: Path, n: int = 24) -> Path:
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "o3003.yaml").write_text(PROGRAM_YAML)
    site_file = tmp_path / "site.yaml"
    site_file.write_text("site: cell-3\nstore: {path: monitor.db}\nprograms: programs\n")
    rng = random.Random(5)
    with SqliteStore(tmp_path / "monitor.db") as store:
        for i in range(1, n + 1):
            end = T0 + timedelta(minutes=3 * i)
            m = {
                "probe.seal_flat": 0.012 if i == 7 else abs(rng.gauss(0.004, 0.001)),
                "probe.wall": 1.98 if i == 9 else 2.1 + rng.gauss(0, 0.01),
                "probe.chamfer": 45.0 + rng.gauss(0, 0.1),
                "probe.thread_ok": 0.0 if i in (4, 17) else 1.0,
            }
            store.record_part(
                PartRecord(f"m1/O3003/{i}", "m1", "O3003", i, end - timedelta(seconds=100), end, PartStatus.COMPLETE, m),
                [],
            )
    return site_file


def test_one_sided_angle_and_go_no_go_features_in_the_report(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path))
    with SqliteStore(site.store_path) as store:
        report = build_report(store, site.programs["O3003"], site="cell-3")
    f = {x.name: x for x in report.features}
    assert [f[k].kind for k in ("seal_flat", "wall", "chamfer", "thread_m8")] == ["one_sided", "one_sided", "angle", "attribute"]
    assert f["seal_flat"].limits_text() == "≤ 0.0100 mm" and f["wall"].limits_text() == "≥ 2.0000 mm"
    assert f["chamfer"].limits_text() == "44.5000 – 45.5000 °" and f["thread_m8"].limits_text() == "go / no-go"
    assert [v.part_number for v in f["seal_flat"].out_of_tolerance] == [7]
    assert [v.part_number for v in f["wall"].out_of_tolerance] == [9]
    assert [v.part_number for v in f["thread_m8"].out_of_tolerance] == [4, 17]
    flat, wall = f["seal_flat"].capability, f["wall"].capability
    assert flat is not None and flat.cp is None and flat.pp is None and flat.cpk is not None
    assert flat.cpk.value == pytest.approx((0.010 - flat.mean) / (3 * flat.sigma_within))  # type: ignore[operator]
    assert wall is not None and wall.cp is None and wall.cpk is not None
    assert wall.cpk.value == pytest.approx((wall.mean - 2.0) / (3 * wall.sigma_within))  # type: ignore[operator]
    angle = f["chamfer"].capability
    assert angle is not None and angle.cp is not None  # two limits: Cp exists
    assert f["thread_m8"].capability is None  # a proportion, not an index
    html = render_html(report)
    assert "≤ 0.0100 mm" in html and "2 of 24 parts failed" in html and "measured (\\u00b0)" in html
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [r["part"] for r in rows if r["thread_m8_ok"] == "no"] == ["4", "17"]
