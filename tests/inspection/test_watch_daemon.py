"""The real daemon watches a folder for CMM result files: a file that appears while it runs is
imported, joined to the parts the daemon stored (by the serial the probing macro wrote), moved to
imported/ (or marked); a malformed one goes to failed/ with the reason; results whose part is not
stored are logged, kept and matched once it is."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import load_site
from monitor.events import HubEvent
from monitor.model import Observation
from monitor.store import SqliteStore
from tests.daemons import running_daemon
from tests.inspection.qifgen import Char, Part, qif_results
from tests.streams import PROGRAM_YAML, T0, batch, obs, write_jsonl

CHARS = [Char("DIA_H1", "Diameter", 10.0, -0.01, 0.01), Char("TP_H1", "Position", zone=0.05)]
PROGRAM = PROGRAM_YAML.replace(
    "    upper: 10.01\n", "    upper: 10.01\n    measured_by: {cmm: {characteristic: DIA_H1}}\n", 1
).replace("    tolerance: 0.05\n", "    tolerance: 0.05\n    measured_by: {cmm: {characteristic: TP_H1}}\n", 1)


def _with_serials(stream: list[Observation]) -> list[Observation]:
    """The O1001 batch, with the probing macro writing the part's serial (part.id) beside its results."""
    out: list[Observation] = []
    for o in stream:
        if o.signal == "part.count" and isinstance(o.value, int) and o.value > 0:
            out.append(obs((o.time - T0).total_seconds() - 1.0, "part.id", f"SN{o.value:04d}"))
        out.append(o)
    return out


def _site(tmp: Path, parts: int) -> Path:
    replay = write_jsonl(tmp / "m1.jsonl", _with_serials(batch(parts)))
    (tmp / "programs").mkdir()
    (tmp / "programs" / "o1001.yaml").write_text(PROGRAM, encoding="utf-8")
    for name in ("cmm-out", "bench"):
        (tmp / name).mkdir()
    site = tmp / "site.yaml"
    site.write_text(
        f"""\
site: test-cell
store: {{path: monitor.db}}
programs: programs
dashboard: {{enabled: false}}
machines:
  - id: m1
    source: {{type: replay, path: "{replay}"}}
    tracking: {{grace_s: 1.0, part_id: label}}
    signals: {{part.id: part.id}}
inspection:
  timezone: UTC
  watch:
    - {{folder: cmm-out, program: O1001, machine: m1, interval_s: 0.1, settle_s: 0.2}}
    - {{folder: bench, after: mark, interval_s: 0.1, settle_s: 0}}
""",
        encoding="utf-8",
    )
    return site


def _imported(file: str) -> object:
    def done(event: HubEvent) -> bool:
        return event.kind == "inspection" and Path(str(event.data.get("file"))).name == file

    return done


async def test_a_watched_folder_imports_new_files_while_the_daemon_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = load_site(_site(tmp_path, 6))
    caplog.set_level(logging.WARNING, logger="monitor.inspection.watch")
    async with running_daemon(site) as running:
        await running.parts(6, timeout_s=60)
        # the CMM writes its file into the folder (first half, then the rest: it is read once settled)
        content = qif_results(
            CHARS,
            [
                Part("SN0002", {"DIA_H1": 10.004, "TP_H1": 0.011}),
                Part("SN0005", {"DIA_H1": 10.012, "TP_H1": 0.02}, statuses={"DIA_H1": "FAIL"}),
                Part("SN0042", {"DIA_H1": 10.001, "TP_H1": 0.009}),
            ],
        )
        target = tmp_path / "cmm-out" / "run-0800.qif"
        with target.open("wb") as f:
            f.write(content[:400])
            f.flush()
            f.write(content[400:])
        event = await running.until(_imported("run-0800.qif"), timeout_s=30)  # type: ignore[arg-type]
        assert event.data["state"] == "imported" and event.data["matched"] == 2
        assert (tmp_path / "cmm-out" / "imported" / "run-0800.qif").read_bytes() == content
        assert not target.exists()
        (tmp_path / "cmm-out" / "broken.qif").write_bytes(content[: len(content) // 3])
        event = await running.until(_imported("broken.qif"), timeout_s=30)  # type: ignore[arg-type]
        assert event.data["state"] == "refused"
        why = (tmp_path / "cmm-out" / "failed" / "broken.qif.why.txt").read_text()
        assert "broken.qif" in why and "malformed XML" in why
        (tmp_path / "bench" / "gauge.csv").write_text("serial;characteristic;value\nSN0003;DIA_H1;10.002\n", encoding="utf-8")
        event = await running.until(_imported("gauge.csv"), timeout_s=30)  # type: ignore[arg-type]
        assert event.data["matched"] == 1
        assert (tmp_path / "bench" / "gauge.csv").exists() and (tmp_path / "bench" / "gauge.csv.imported").exists()
        status = await running.daemon.status()
        assert status["inspection"] == {"imported": 2, "refused": 1, "unmatched": 1, "rematched": 0}
    logged = caplog.text
    assert "SN0042" in logged and "not matched to a part" in logged
    with SqliteStore(site.store_path, read_only=True) as store:
        by_part = {}
        for part in store.parts(program="O1001"):
            for s in store.inspection_results(part_keys=[part.key]):
                by_part[part.part_number] = {a.characteristic.name: a.value for a in s.result.actuals}
        assert by_part == {2: {"DIA_H1": 10.004, "TP_H1": 0.011}, 5: {"DIA_H1": 10.012, "TP_H1": 0.02}, 3: {"DIA_H1": 10.002}}
        [waiting] = store.inspection_results(unmatched=True)
        assert waiting.result.serial == "SN0042" and "SN0042" in (waiting.note or "")


async def test_results_imported_before_their_part_match_when_the_daemon_stores_it(tmp_path: Path) -> None:
    site_path = _site(tmp_path, 4)
    early = tmp_path / "cmm-out" / "early.qif"
    early.write_bytes(qif_results(CHARS, [Part("SN0004", {"DIA_H1": 10.003, "TP_H1": 0.01})]))
    site = load_site(site_path)
    async with running_daemon(site) as running:

        def rematched(event: HubEvent) -> bool:
            return event.kind == "inspection" and any(r["serial"] == "SN0004" for r in event.data.get("rematched", []))

        def imported_unmatched(event: HubEvent) -> bool:
            return event.kind == "inspection" and event.data.get("file", "").endswith("early.qif")

        first = await running.until(lambda e: imported_unmatched(e) or rematched(e), timeout_s=60)
        if imported_unmatched(first) and first.data["matched"] == 0:
            await running.until(rematched, timeout_s=60)
    with SqliteStore(site.store_path, read_only=True) as store:
        [stored] = store.inspection_results()
        part = store.part(stored.part_key or "")
        assert part is not None and part.part_number == 4 and part.part_id == "SN0004"
        assert json.loads(json.dumps([a.value for a in stored.result.actuals])) == [10.003, 0.01]


async def test_the_daemon_watches_cmm_values_of_a_feature_from_the_folder_and_from_the_cli(tmp_path: Path) -> None:
    site_path = _site(tmp_path, 8)
    site = load_site(site_path)
    async with running_daemon(site) as running:
        await running.parts(8, timeout_s=60)
        # the CMM measured parts 2 and 4 (in tolerance), the folder's file arrives first
        (tmp_path / "cmm-out" / "a.qif").write_bytes(
            qif_results(
                CHARS, [Part("SN0002", {"DIA_H1": 10.002, "TP_H1": 0.01}), Part("SN0004", {"DIA_H1": 10.003, "TP_H1": 0.01})]
            )
        )
        await running.until(_imported("a.qif"), timeout_s=30)  # type: ignore[arg-type]
        assert not [a for a in running.alerts if a.get("evidence", {}).get("source") == "cmm"]
        # part 6 measured out of tolerance, imported by hand while the daemon runs
        late = tmp_path / "late.qif"
        late.write_bytes(qif_results(CHARS, [Part("SN0006", {"DIA_H1": 10.013, "TP_H1": 0.01}, statuses={"DIA_H1": "FAIL"})]))
        runner = CliRunner()
        result = await asyncio.to_thread(runner.invoke, app, ["import", str(late), "-c", str(site_path), "--json"])
        assert result.exit_code == 0, result.output

        def cmm_alert(event: HubEvent) -> bool:
            ev = event.data.get("evidence", {})
            return event.kind == "alert" and ev.get("source") == "cmm" and event.data["kind"] == "out_of_tolerance"

        event = await running.until(cmm_alert, timeout_s=30)
        assert event.data["feature"] == "hole1_dia" and event.data["part_number"] == 6
        assert "hole1_dia (cmm) out of tolerance: 10.0130 mm above upper limit 10.0100" in event.data["message"]
    with SqliteStore(site.store_path, read_only=True) as store:
        stored = [a for a in store.alerts() if a.evidence.get("source") == "cmm"]
        assert [(a.feature, a.part_number, str(a.kind)) for a in stored] == [("hole1_dia", 6, "out_of_tolerance")]
