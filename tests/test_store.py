"""The store contract, for every backend (SQLite and PostgreSQL, the ``backend`` fixture): transactions
per part, stable keys, migrations, and surviving a killed writer."""

from __future__ import annotations

import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.errors import StoreError
from monitor.model import (
    Action,
    ActionKind,
    Alert,
    AlertKind,
    AlertState,
    ConditionState,
    PartRecord,
    PartStatus,
    Register,
    RegisterKind,
    Role,
    Severity,
    SpindleStats,
    ToolUse,
)
from monitor.store import SCHEMA_VERSION, SqliteStore
from tests.stores import Backend

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def part(n: int, machine: str = "m1", program: str = "O1001") -> PartRecord:
    end = T0 + timedelta(minutes=n)
    return PartRecord(
        key=f"{machine}/{program}/{end.isoformat()}",
        machine=machine,
        program=program,
        part_number=n,
        start=end - timedelta(seconds=50),
        end=end,
        status=PartStatus.COMPLETE,
        measurements={"probe.hole1_dia": 10.0 + n * 1e-4, "probe.hole1_x": 25.0},
        tools=(ToolUse("12", 100.0, 101.0, 30.0),),
        spindle=SpindleStats(40.0, 55.0, 30.0, 1200.0),
        counter=n,
    )


def alert(n: int, state: AlertState = AlertState.OPEN) -> Alert:
    return Alert(
        id=f"m1/O1001/hole1_dia/forecast/{n}",
        machine="m1",
        program="O1001",
        feature="hole1_dia",
        kind=AlertKind.FORECAST,
        severity=Severity.WARNING,
        state=state,
        part_number=n,
        message="hole1_dia drifting",
        time=T0 + timedelta(minutes=n),
        evidence={"slope_um_per_part": -1.2},
    )


def test_part_round_trips_and_is_stored_once(backend: Backend) -> None:
    with backend.open() as store:
        assert store.record_part(part(1), [alert(1)], [("engine", {"x": 1})]) is True
        assert store.record_part(part(1), [alert(1)]) is False
        assert store.parts() == [part(1)]
        assert store.alerts()[0].evidence == {"slope_um_per_part": -1.2}
        assert store.load_detector_state("engine") == {"x": 1}
        assert len(store.alert_events()) == 1  # the duplicate part wrote no alert either


def test_a_part_with_nan_and_infinite_measurements_is_stored_whole_and_read_back(backend: Backend) -> None:
    """A part whose probe wrote NaN or an infinity (the tracker leaves such a value out and counts it;
    the store's API takes what a part carries, from whatever calls it): stored in one piece with every
    value as measured, found by its part id, and the other parts' ids still found. SQLite refused it
    ('malformed JSON': the index on the part id read it from the record's JSON, which writes NaN as
    json does), and with it any later part id lookup. Both backends' rows leave NaN out (a SQLite REAL
    column cannot hold it), so a chart and a capability read the same from either."""
    odd = replace(
        part(2),
        measurements={"probe.hole1_dia": math.nan, "probe.hole1_x": math.inf, "probe.hole1_y": -math.inf},
        part_id="S-2",
    )
    with backend.open() as store:
        assert store.record_part(replace(part(1), part_id="S-1"))
        assert store.record_part(odd)
        assert store.record_part(replace(part(3), part_id="S-3"))
        assert not store.record_part(odd)  # a repeat, as any part
        got = store.part(odd.key)
        assert got is not None and math.isnan(got.measurements["probe.hole1_dia"])
        assert (got.measurements["probe.hole1_x"], got.measurements["probe.hole1_y"]) == (math.inf, -math.inf)
        assert replace(got, measurements={}) == replace(odd, measurements={})
        assert [p.part_number for p in store.parts()] == [1, 2, 3]
        assert [p.key for p in store.parts_with_id("S-2")] == [odd.key]
        assert [p.part_number for p in store.parts_with_id("S-3", machine="m1")] == [3]
        assert store.has_part_ids(machine="m1", program="O1001")
        assert store.integrity_problems() == []
        dia = [v for (v,) in store.feature_values("m1", "O1001", ["probe.hole1_dia"])]  # no NaN row in either backend
        assert dia == [part(1).measurements["probe.hole1_dia"], part(3).measurements["probe.hole1_dia"]]
        series = store.measurement_series("m1", "O1001", ["probe.hole1_x"])
        assert [(p.part_number, p.values["probe.hole1_x"]) for p in series] == [(1, 25.0), (2, math.inf), (3, 25.0)]


def test_a_store_of_schema_8_keeps_its_part_ids_read_as_it_is_and_migrated(tmp_path: Path) -> None:
    """Migration 9 copies the ids stored in the records into the part_id column; a reader of a store
    not yet migrated reads them from the records as before."""
    path = tmp_path / "old.db"
    with SqliteStore(path) as store:
        for n in (1, 2, 3):
            store.record_part(replace(part(n), part_id=f"S-{n}" if n != 2 else None))
    db = sqlite3.connect(path)
    db.executescript(  # as schema 8 left it
        "DROP INDEX parts_by_part_id; ALTER TABLE parts DROP COLUMN part_id;"
        "CREATE INDEX parts_by_part_id ON parts (json_extract(data, '$.part_id')); PRAGMA user_version = 8;"
    )
    db.close()
    with SqliteStore(path, read_only=True) as reader:
        assert reader.schema_version == 8
        assert [p.part_number for p in reader.parts_with_id("S-3")] == [3] and reader.has_part_ids(machine="m1")
    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [p.part_number for p in store.parts_with_id("S-1")] == [1] and store.parts_with_id("S-2") == []
        assert store.record_part(replace(part(4), measurements={"probe.hole1_dia": math.nan}, part_id="S-4"))
        assert [p.part_number for p in store.parts_with_id("S-4")] == [4]
    db = sqlite3.connect(path)
    assert db.execute("SELECT part_number, part_id FROM parts ORDER BY part_number").fetchall() == [
        (1, "S-1"),
        (2, None),
        (3, "S-3"),
        (4, "S-4"),
    ]
    db.close()


def test_migration_9_runs_again_on_a_store_holding_a_nan_part(tmp_path: Path) -> None:
    """A store whose version was set back to 8 after a part with NaN was stored (its record is no JSON
    to SQLite): migration 9 runs again without reading that record, the store opens, every id is kept,
    and nothing reads as torn."""
    path = tmp_path / "again.db"
    with SqliteStore(path) as store:
        store.record_part(replace(part(1), part_id="S-1"))
        store.record_part(replace(part(2), measurements={"probe.hole1_dia": math.nan, "probe.hole1_x": 25.0}, part_id="S-2"))
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 8")
    db.commit()
    db.close()
    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [p.part_number for p in store.parts_with_id("S-2")] == [2]
        assert [p.part_number for p in store.parts_with_id("S-1")] == [1]
        assert store.integrity_problems() == []


def test_filters_and_next_part_numbers(backend: Backend) -> None:
    with backend.open() as store:
        for n in range(1, 6):
            store.record_part(part(n))
        store.record_part(part(3, program="O2002"))
        store.record_part(part(1, machine="m2"))
        assert [p.part_number for p in store.parts(machine="m1", program="O1001", last=2)] == [4, 5]
        assert store.next_part_numbers("m1") == {"O1001": 6, "O2002": 4}
        assert store.part_count(machine="m2") == 1
        assert store.part_count(machine="m1", status=PartStatus.COMPLETE) == 6
        assert store.part_count(status=PartStatus.ABORTED) == 0
        assert [p.part_number for p in store.parts(program="O1001", first_part=2, last_part=3, machine="m1")] == [2, 3]


def test_alert_changes_update_one_row_and_keep_history(backend: Backend) -> None:
    with backend.open() as store:
        store.record_alerts([alert(1)])
        store.record_alerts([alert(1, AlertState.ACKNOWLEDGED)])
        assert [a.state for a in store.alerts()] == [AlertState.ACKNOWLEDGED]
        assert [a.state for _, a in store.alert_events()] == [AlertState.OPEN, AlertState.ACKNOWLEDGED]
        assert store.alerts(open_only=True) and not store.alerts(state=AlertState.CLOSED)


def test_adapter_positions(backend: Backend) -> None:
    with backend.open() as store:
        store.save_position("m1", "mtconnect", {"instance": 7, "next": 1234})
        store.save_position("m1", "mtconnect", {"instance": 7, "next": 1300})
        assert store.load_position("m1", "mtconnect") == {"instance": 7, "next": 1300}
        assert store.load_position("m1", "opcua") is None


def test_schema_version_and_newer_store_is_refused(backend: Backend) -> None:
    with backend.open() as store:
        assert store.schema_version == SCHEMA_VERSION
    with backend.open(read_only=True) as store:
        assert store.schema_version == SCHEMA_VERSION
    backend.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer than this monitor"):
        backend.open()
    with pytest.raises(StoreError, match="newer than this monitor"):
        backend.open(read_only=True)


def test_a_failed_part_transaction_leaves_nothing(backend: Backend) -> None:
    with backend.open() as store:
        bad_alert = alert(1)
        object.__setattr__(bad_alert, "evidence", {"bad": object()})  # not JSON-able: fails mid-transaction
        with pytest.raises(TypeError):
            store.record_part(part(1), [bad_alert])
        assert store.parts() == [] and store.alerts() == []
        assert store.record_part(part(1)) is True


WRITER = textwrap.dedent(
    """
    import sys
    from tests.test_store import part, alert
    from monitor.store import open_store
    store = open_store(sys.argv[1])
    for n in range(1, int(sys.argv[2]) + 1):
        store.record_part(part(n), [alert(n)] if n % 3 == 0 else [], [("engine", {"n": n})])
        print(n, flush=True)
    """
)


def _writer(db: Path | str, count: int) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(count)], stdout=subprocess.PIPE, text=True, cwd=root)


def test_killed_writer_leaves_no_torn_or_duplicated_part(backend: Backend) -> None:
    db = backend.location
    total = 400
    proc = _writer(db, total)
    assert proc.stdout is not None
    acknowledged = 0
    for line in proc.stdout:  # kill it while it is writing, after a fair number of commits
        acknowledged = int(line)
        if acknowledged >= 60:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with backend.open() as store:
        assert store.integrity_problems() == []
        stored = store.parts()
        assert len(stored) >= acknowledged  # every acknowledged commit survived
        assert len(stored) < total
        assert [p.part_number for p in stored] == list(range(1, len(stored) + 1))
        state = store.load_detector_state("engine")
        assert state is not None and state["n"] == len(stored)  # state moved with its part
        assert {a.part_number for a in store.alerts()} == {n for n in range(1, len(stored) + 1) if n % 3 == 0}
    # the restarted writer sees the same parts again: nothing is stored twice
    proc = _writer(db, total)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    with backend.open() as store:
        assert store.integrity_problems() == []
        assert [p.part_number for p in store.parts()] == list(range(1, total + 1))
        events = store.alert_events(limit=10_000)
        assert len(events) == len({a.id for _, a in events}) == total // 3
    assert out.split()[-1] == str(total)


def test_two_processes_creating_the_store_at_once(backend: Backend) -> None:
    db = backend.location
    code = "import sys; from monitor.store import open_store; open_store(sys.argv[1]).close()"
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(db)], cwd=root, stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    with backend.open() as store:
        assert store.schema_version == SCHEMA_VERSION


def test_actions_are_kept_once_in_order_and_found_by_feature_or_condition(backend: Backend) -> None:
    """Issue 15's record of what people did (schema 6 on both backends): an action stored twice is
    stored once; read oldest first, by machine/program/feature or by the condition it answered."""
    condition_id = "m1/O1001/hole1_dia/1"
    register = Register(RegisterKind.TOOL_DIAMETER_WEAR, "value", 1.0, tool="12")
    kinds = (ActionKind.ACKNOWLEDGE, ActionKind.OFFSET_APPLIED, ActionKind.TOOL_CHANGED)
    acts = [
        Action(
            id=f"a{i}",
            time=T0 + timedelta(minutes=2, seconds=i),
            kind=kind,
            machine="m1",
            program="O1001",
            feature="hole1_dia",
            user="olga",
            role=Role.OPERATOR,
            condition_id=condition_id if i < 2 else None,
            part_number=1,
            register=register if kind is ActionKind.OFFSET_APPLIED else None,
            change=-0.004 if kind is ActionKind.OFFSET_APPLIED else None,
            tool="12" if kind is ActionKind.TOOL_CHANGED else None,
            comment="re-probed" if kind is ActionKind.ACKNOWLEDGE else "",
        )
        for i, kind in enumerate(kinds)
    ]
    other = replace(acts[2], id="b0", machine="m2", time=T0 + timedelta(minutes=3))
    with backend.open() as store:
        assert store.actions() == []
        for a in [*acts, other]:
            store.record_action(a)
        store.record_action(acts[0])  # the same action twice is stored once
        assert store.actions() == [*acts, other]
        assert store.actions(condition_id=condition_id) == acts[:2]
        assert store.actions(machine="m1", program="O1001", feature="hole1_dia", last=1) == acts[2:]
        assert store.actions(machine="m2") == [other]
        assert store.actions(feature="hole2_dia") == []
    with backend.open(read_only=True) as reader:
        assert reader.actions(last=2) == [acts[2], other]


def test_a_refreshed_condition_changes_its_row_but_not_the_history(backend: Backend) -> None:
    """A part that refreshes a condition (same level, fresher advice, strongest evidence of another
    kind) sets the alert's row as it now stands, in the part's transaction, with no history event."""
    condition = replace(alert(1), id="m1/O1001/hole1_dia/1", condition=ConditionState.WARNING, last_part=1)
    refreshed = replace(condition, kind=AlertKind.EWMA, last_part=2, message="fresher advice", time=T0 + timedelta(minutes=2))
    with backend.open() as store:
        store.record_part(part(1), [condition])
        assert store.record_part(part(2), refreshed=[refreshed]) is True
        assert store.alerts() == [refreshed]
        assert [a for _, a in store.alert_events()] == [condition]
        assert store.record_part(part(2), refreshed=[replace(refreshed, message="again")]) is False  # stored: nothing written
        assert store.alert(condition.id) == refreshed
