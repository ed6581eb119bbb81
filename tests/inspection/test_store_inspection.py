"""The store's inspection tables: a store of the previous schema migrates and finds its old parts by
serial; results and actuals are stored once whatever file brings them; --replace forgets a file."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

from monitor.codec import part_to_dict
from monitor.inspection.model import Actual, Characteristic, InspectionResult, MatchMethod
from monitor.model import PartRecord, PartStatus
from monitor.store import SCHEMA_VERSION, SqliteStore
from monitor.store.sqlite import MIGRATIONS
from tests.inspection.conftest import T0
from tests.stores import Backend


def _part(n: int, part_id: str | None) -> PartRecord:
    return PartRecord(
        f"m1/O1/{n}",
        "m1",
        "O1",
        n,
        T0 + timedelta(minutes=n),
        T0 + timedelta(minutes=n, seconds=50),
        PartStatus.COMPLETE,
        part_id=part_id,
    )


def test_a_store_of_the_previous_schema_migrates_and_finds_old_parts_by_serial(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 2")
    old = _part(1, "SN-A")
    db.execute(
        "INSERT INTO parts (key, machine, program, part_number, start, end, status, counter, data, stored_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            old.key,
            "m1",
            "O1",
            1,
            old.start.isoformat(),
            old.end.isoformat(),
            "complete",
            None,
            json.dumps(part_to_dict(old)),
            "x",
        ),
    )
    db.commit()
    db.close()
    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 3  # through every later migration too
        store.record_part(_part(2, "SN-B"))
        store.record_part(_part(3, None))
        assert [p.part_number for p in store.parts_with_id("SN-A")] == [1]
        assert [p.part_number for p in store.parts_with_id("SN-B", machine="m1", program="O1")] == [2]
        assert store.parts_with_id("SN-B", machine="m2") == []
        assert store.has_part_ids(program="O1") and not store.has_part_ids(program="O2")
        assert [p.part_number for p in store.parts_ended_before(T0 + timedelta(minutes=3), program="O1")] == [2, 1]


def test_results_are_stored_once_and_replace_forgets_a_file(backend: Backend) -> None:
    dia = Characteristic("DIA", "Diameter", "7")
    result = InspectionResult(
        actuals=(Actual(dia, 10.01, "mm", "PASS", 10.0, 9.99, 10.02), Actual(dia, 10.012, "mm", "PASS", 10.0, 9.99, 10.02)),
        where="MeasurementResults id=1",
        serial="SN-A",
    )
    key, actual_keys = result.key(), result.actual_keys()
    assert len(set(actual_keys)) == 2  # a "2X" callout: two actuals of one characteristic
    with backend.open() as store:
        changed, added = store.record_inspection("/a.qif", "qif", "sha-a", {}, [(key, result, actual_keys)])
        assert changed == [key] and added == 2
        seq = store.last_inspection_seq()
        changed, added = store.record_inspection("/b.qif", "qif", "sha-b", {}, [(key, result, actual_keys)])
        assert changed == [] and added == 0 and store.last_inspection_seq() == seq
        store.set_inspection_matches([(key, "m1/O1/1", MatchMethod.SERIAL, None)])
        assert store.last_inspection_seq() == seq + 1
        [stored] = store.inspection_results(after_seq=seq)
        assert stored.part_key == "m1/O1/1" and stored.matched_by is MatchMethod.SERIAL
        assert [a.value for a in stored.result.actuals] == [10.01, 10.012]
        assert store.inspection_results(unmatched=True) == []
        assert store.forget_inspection_file("sha-b") == 0  # it brought nothing new
        assert store.forget_inspection_file("sha-a") == 2
        assert store.inspection_results() == [] and store.inspection_file("sha-a") is None


def test_parts_by_serial_in_every_backend(backend: Backend) -> None:
    with backend.open() as store:
        for n, serial in ((1, "SN-A"), (2, "SN-B"), (3, None)):
            store.record_part(_part(n, serial))
        assert [p.part_number for p in store.parts_with_id("SN-A")] == [1]
        assert [p.part_number for p in store.parts_with_id("SN-B", machine="m1", program="O1")] == [2]
        assert store.parts_with_id("SN-B", machine="m2") == []
        assert store.has_part_ids(program="O1") and not store.has_part_ids(program="O2")
        assert [p.part_number for p in store.parts_ended_before(T0 + timedelta(minutes=3), program="O1")] == [2, 1]
