"""``monitor store copy``: a SQLite store moved into PostgreSQL reads back the same through the store
API, and running the copy again (after the source grew, or twice) adds only what is new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from monitor.inspection.model import Actual, Characteristic, InspectionResult, MatchMethod
from monitor.model import Action, ActionKind, AlertState, Observation, Role
from monitor.store import SqliteStore, StateDelta, StateWrite
from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import MIGRATIONS
from tests.test_store import T0, alert, part

ROOT = Path(__file__).resolve().parents[1]


def _fill(store: SqliteStore, first: int, last: int) -> None:
    for n in range(first, last + 1):
        alerts = [alert(n)] if n % 4 == 0 else []
        engine: StateWrite = {"n": n, "window": [n]} if n % 5 == 1 else StateDelta({"n": ["=", n], "window": ["w", 0, [n]]})
        store.record_part(part(n), alerts, [("drift-engine:m1", engine), ("tracker:m1", {"last": n})])
        if n % 8 == 0:
            store.record_alerts([alert(n - 4, AlertState.ACKNOWLEDGED)])
            store.record_action(_ack(n - 4))
        store.save_position("m1", "mtconnect http://agent", {"instance": 7, "next": 100 * n})
    store.record_signals([Observation("m1", "spindle.load", T0 + timedelta(seconds=i), 40.0 + i) for i in range(first, last + 1)])


def _ack(n: int) -> Action:
    """The action that acknowledged alert(n), as the CLI records it."""
    a = alert(n)
    return Action(
        id=f"ack-{n}",
        time=a.time + timedelta(minutes=4),
        kind=ActionKind.ACKNOWLEDGE,
        machine=a.machine,
        program=a.program,
        feature=a.feature,
        user="olga",
        role=Role.OPERATOR,
        source="store",
        condition_id=a.id,
        part_number=n + 4,
        comment=f"re-probed part {n}",
    )


def _inspection(store: SqliteStore) -> None:
    dia = Characteristic("DIA", "Diameter", "7")
    result = InspectionResult(actuals=(Actual(dia, 10.01, "mm", "PASS", 10.0, 9.99, 10.02),), where="r1", serial="SN-1")
    key = result.key()
    store.record_inspection("/cmm/a.qif", "qif", "sha-a", {"n": 1}, [(key, result, result.actual_keys())])
    store.set_inspection_matches([(key, part(1).key, MatchMethod.SERIAL, None)])


def _copy(source: Path, url: str) -> dict[str, dict[str, int]]:
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "store", "copy", "--from", str(source), "--to", url, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,  # PGPASSWORD from the pg_url fixture: never on the command line
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, dict[str, int]] = json.loads(proc.stdout)
    return result


def _same(source: Path, url: str) -> None:
    with SqliteStore(source, read_only=True) as a, PostgresStore(url, read_only=True) as b:
        assert a.parts() == b.parts()
        assert a.alerts() == b.alerts()
        assert [e for _, e in a.alert_events(limit=10_000)] == [e for _, e in b.alert_events(limit=10_000)]
        assert a.actions() == b.actions() and len(a.actions()) > 0
        assert a.load_detector_states("") == b.load_detector_states("")
        assert a.load_position("m1", "mtconnect http://agent") == b.load_position("m1", "mtconnect http://agent")
        assert a.signal_history("m1", "spindle.load") == b.signal_history("m1", "spindle.load")
        assert a.measurement_series("m1", "O1001", ["probe.hole1_dia"]) == b.measurement_series(
            "m1", "O1001", ["probe.hole1_dia"]
        )
        assert a.inspection_results() == b.inspection_results()
        assert a.inspection_files() == b.inspection_files()
        assert a.next_part_numbers("m1") == b.next_part_numbers("m1")


def test_copy_reads_back_the_same_and_a_second_run_adds_nothing(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "cell.db"
    with SqliteStore(source) as store:
        _fill(store, 1, 40)
        _inspection(store)
    first = _copy(source, pg_url)
    assert first["added"]["parts"] == 40 and first["added"]["alert_events"] == 15 and first["added"]["actions"] == 5
    assert not any(first["missing"].values())
    _same(source, pg_url)
    again = _copy(source, pg_url)
    assert not any(again["added"].values()), again["added"]
    _same(source, pg_url)


def test_copy_again_after_the_source_grew_brings_only_what_is_new(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "cell.db"
    with SqliteStore(source) as store:
        _fill(store, 1, 20)
    _copy(source, pg_url)
    with SqliteStore(source) as store:  # the cell's daemon went on writing before it was stopped
        _fill(store, 21, 30)
    second = _copy(source, pg_url)
    assert second["added"]["parts"] == 10 and second["read"]["parts"] == 30
    assert second["added"]["actions"] == 1 and second["read"]["actions"] == 3
    assert second["added"]["detector_state"] == 2 and second["added"]["adapter_positions"] == 1  # newer ones replace
    _same(source, pg_url)


def test_a_store_of_an_older_schema_is_copied_with_its_series_rebuilt(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "old.db"
    with SqliteStore(source) as store:
        _fill(store, 1, 6)
    import sqlite3

    db = sqlite3.connect(source)
    db.execute("DROP TABLE series")  # as a store written before schema 4
    db.execute("DROP TABLE actions")  # and before schema 6
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    db.commit()
    db.close()
    result = _copy(source, pg_url)
    assert result["added"]["series"] == 12
    with PostgresStore(pg_url, read_only=True) as b:
        assert [p.part_number for p in b.measurement_series("m1", "O1001", ["probe.hole1_dia", "probe.hole1_x"])] == list(
            range(1, 7)
        )
