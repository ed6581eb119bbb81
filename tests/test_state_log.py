"""Engine state saved as what changed: exact whatever the state, small per part, resumed exactly."""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import statelog
from monitor.codec import alert_to_dict, part_to_dict
from monitor.commands import Acknowledge
from monitor.config import Site, load_site
from monitor.engine import DriftEngine
from monitor.model import AlertState, Observation, PartRecord, PartStatus
from monitor.pipeline import ENGINE_STATE, Pipeline
from monitor.sim import SimCell, load_scenario
from monitor.sim.process import PROGRAMS_DIR
from monitor.store import SqliteStore, StateDelta

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, width=32), st.sampled_from("abc"))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.sampled_from("uvwxyz"), inner, max_size=4)),
    max_leaves=25,
)
_states = st.dictionaries(st.sampled_from("abcdefgh"), _values, max_size=6)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(_states, _states, st.integers(0, 4), st.lists(_values, max_size=4))
def test_patch_of_the_difference_is_the_new_state(old: dict[str, Any], other: dict[str, Any], drop: int, tail: list[Any]) -> None:
    # a new state that shares some values, drops and appends in a window, and changes others
    new = {**old, **other}
    new["window"] = [*old.get("window", [])[drop:], *tail] if isinstance(old.get("window"), list) else tail
    change = statelog.diff(old, new)
    assert (statelog.patch(old, _json(change)) if change is not None else old) == new
    assert change is None or json.dumps(change)  # a difference is JSON-able


def test_what_is_the_same_object_in_both_states_is_unchanged_unless_it_is_a_container() -> None:
    """The difference looks at a value that is the very object of the old state first (most of a
    state: settings, counts, None): a scalar is then as it was, NaN too, but a list or dict may
    have changed in place (a state that handed out its live container), so it is written whole.
    A value of another type is written even when it compares equal (1 and 1.0, True and 1)."""
    nan, live, inner = float("nan"), [1.0, 2.0], {"a": 1}
    old = {"nan": nan, "big": 10**20, "live": live, "inner": inner, "one": 1, "flag": True, "x": 0.5, "nested": {"k": [live]}}
    live.append(3.0)  # changed in place after the old state was taken
    inner["a"] = 2
    new = {**old, "one": 1.0, "flag": 1, "x": 0.5 + 0.0, "nested": {"k": [live]}}
    assert statelog.diff(old, new) == {
        "live": ["=", [1.0, 2.0, 3.0]],
        "inner": ["=", {"a": 2}],
        "one": ["=", 1.0],
        "flag": ["=", 1],
    }  # "nested": fresh dicts that compare equal (the live list inside is the same object) are as they were
    assert statelog.diff({"w": [1, 2, 3], "d": {"a": 1}}, {"w": [2, 3, 4], "d": {"a": 1, "b": None}}) == {
        "w": ["w", 1, [4]],
        "d": ["d", {"b": ["=", None]}],
    }
    assert statelog.diff({"a": 1, "gone": 2}, {"a": 1}) == {"gone": ["-"]}
    other = float("nan")
    assert statelog.diff({"nan": nan}, {"nan": other}) == {"nan": ["=", other]}  # another NaN object: not equal


def _records(parts: int, seed: int = 4) -> tuple[SimCell, list[PartRecord]]:
    cell = SimCell(load_scenario("demo"), seed=seed, parts=parts)
    records = [
        PartRecord(f"{p.machine}/{p.program}/{p.end.isoformat()}", p.machine, p.program, p.part, p.start, p.end,
                   PartStatus.COMPLETE, {k: v for k, v in p.measured.items() if v is not None}, counter=p.part)
        for p in sorted(cell.parts(), key=lambda p: p.end)
    ]  # fmt: skip
    return cell, records


def test_every_engine_share_changes_only_by_appending_to_its_windows() -> None:
    """The contract the difference relies on: a state's list entries are never changed in place after
    they were appended. Checked against the JSON of each share as it was when written."""
    cell, records = _records(60)
    engine = DriftEngine(cell.programs())
    written: dict[str, tuple[dict[str, Any], Any]] = {}
    small = 0
    for record in records:
        engine.process(record)
        for name, share in engine.shares(record.machine, record.program).items():
            key = record.machine + name
            if key in written:
                before, as_json = written[key]
                change = statelog.diff(before, share)
                assert (statelog.patch(as_json, _json(change)) if change is not None else as_json) == _json(share)
                small += change is not None and len(json.dumps(change)) < len(json.dumps(share)) / 5
            written[key] = (share, _json(share))
    assert small > len(records)  # most changes are a small part of the share


def _site(tmp: Path, cell: SimCell) -> Path:
    (tmp / "empty.jsonl").write_text("")
    path = tmp / "site.yaml"
    machines = [{"id": m.id, "source": {"type": "replay", "path": "empty.jsonl"}} for m in cell.machines]
    path.write_text(yaml.safe_dump({"site": "t", "store": {"path": "s.db"}, "programs": str(PROGRAMS_DIR), "machines": machines}))
    return path


def _demo(tmp_path: Path) -> tuple[SimCell, Site, list[Observation]]:
    """The demo cell of 90 parts (seed 4), a replay site for it and its observations in order."""
    cell = SimCell(load_scenario("demo"), seed=4, parts=90)
    events = [e.observation() for e in cell.events(include_spindle_samples=False)]
    return cell, load_site(_site(tmp_path, cell)), events


def test_the_pipeline_writes_changes_and_a_restart_resumes_exactly(tmp_path: Path) -> None:
    cell, site, events = _demo(tmp_path)
    cut = len(events) * 2 // 3
    with SqliteStore(site.store_path) as store:
        running = Pipeline(site, store)
        resume = running.observe(events[: cut // 2]).resume_points
        opened = next(a for a in running.engine.open_alerts() if a.state is AlertState.OPEN)
        assert running.alert_command(Acknowledge(opened.id)).alert is not None  # a person's change goes into the book share
        resume |= running.observe(events[cut // 2 : cut]).resume_points
        changes, change_bytes = store._db.execute("SELECT COUNT(*), SUM(LENGTH(change)) FROM detector_state_log").fetchone()
        (whole,) = store._db.execute("SELECT COUNT(*) FROM detector_state WHERE name LIKE ?", (ENGINE_STATE + "%",)).fetchone()
        shares = [json.dumps(s) for m in cell.machines for s in running.engine.shares(m.id).values()]
        assert changes > 10 * whole  # most writes were changes ...
        assert change_bytes / changes < sum(map(len, shares)) / len(shares) / 5  # ... much smaller than whole shares
        with _restarted(site, store, tmp_path) as restarted:
            for machine in cell.machines:
                assert _json(restarted.engine.state(machine.id)) == _json(running.engine.state(machine.id))
            # both go on alike: the same alert changes, evidence and all, from the same later parts
            replayed = _replayed(events, cut, resume)
            assert replayed and not _fed(restarted, replayed)
            expected = _fed(running, events[cut:])
            assert expected and _fed(restarted, events[cut:]) == expected


def test_a_restart_from_the_stored_position_makes_the_same_parts(tmp_path: Path) -> None:
    """A source resumes just after the observation that ended the last stored part, so the part that
    was open (its start, its tools, its spindle load, results of the stored part still in their grace
    window) is read again and made exactly as without the restart; before, it resumed after the
    observation that made the part final (its grace over) and the next part lost its first minutes."""
    _cell, site, events = _demo(tmp_path)
    cut = len(events) * 2 // 3
    with SqliteStore(site.store_path) as store:
        running = Pipeline(site, store)
        resume = running.observe(events[:cut]).resume_points
        with _restarted(site, store, tmp_path) as restarted:
            assert not restarted.observe(_replayed(events, cut, resume)).parts  # nothing stored twice
            expected = [part_to_dict(p) for o in events[cut:] for p in running.observe([o]).parts]
            made = [part_to_dict(p) for o in events[cut:] for p in restarted.observe([o]).parts]
            assert len(expected) > 20 and all(p["tools"] and p["spindle"]["mean_load"] for p in expected)
            assert made == expected


@contextmanager
def _restarted(site: Site, store: SqliteStore, tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline started on a copy of ``store`` as a daemon stopped now leaves it."""
    copy = tmp_path / "restarted.db"
    with sqlite3.connect(copy) as target:
        store._db.backup(target)
    with SqliteStore(copy) as stored:
        yield Pipeline(site, stored)


def _replayed(events: list[Observation], cut: int, resume: dict[str, Observation]) -> list[Observation]:
    """What a restarted daemon reads again before the cut: each machine's observations after the one
    that ended its last stored part (where its source's saved position points)."""
    at = {machine: next(i for i in range(cut) if events[i] is obs) for machine, obs in resume.items()}
    assert set(at) == {e.machine for e in events[:cut]}  # every machine has stored a part to resume after
    return [e for i, e in enumerate(events[:cut]) if i > at[e.machine]]


def _fed(pipeline: Pipeline, events: list[Any]) -> list[str]:
    return [json.dumps(alert_to_dict(a), sort_keys=True) for o in events for a in pipeline.observe([o]).alerts]


def test_a_reader_of_a_store_not_migrated_yet_reads_states_and_series(tmp_path: Path) -> None:
    """The CLI opens the store read-only and never migrates it: a store the daemon has not upgraded
    yet still answers the queries that read what the newest schema added."""
    from monitor.store.sqlite import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:  # before the series table (4) and the state log (5)
        db.executescript(migration)
    db.execute("PRAGMA user_version = 3")
    db.execute("INSERT INTO detector_state (name, state, updated) VALUES ('tracker:m1', '{\"counter\": 3}', 'now')")
    db.commit()
    db.close()
    _, records = _records(3)
    with SqliteStore(tmp_path / "new.db") as new:
        for record in records:
            new.record_part(record)
        rows = new._db.execute(
            "SELECT key, machine, program, part_number, start, end, status, counter, data, stored_at FROM parts"
        )
        old_parts = rows.fetchall()
        measured = new._db.execute("SELECT part_key, signal, value FROM measurements").fetchall()
        expected = new.measurement_series(records[0].machine, records[0].program, ["probe.bore_dia", "probe.hole1_dia"])
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", old_parts)
        db.executemany("INSERT INTO measurements VALUES (?, ?, ?)", measured)
    with SqliteStore(path, read_only=True) as reader:
        assert reader.load_detector_state("tracker:m1") == {"counter": 3}
        got = reader.measurement_series(records[0].machine, records[0].program, ["probe.bore_dia", "probe.hole1_dia"])
        assert got == expected and got


def _book_entries(store: SqliteStore, machine: str) -> list[dict[str, Any]]:
    book = store.load_detector_state(ENGINE_STATE + machine)
    assert book is not None
    return list(book["alerts"])


def test_a_restart_takes_open_conditions_from_the_alerts_table_identically(tmp_path: Path) -> None:
    """The book share names each open condition whose alert the alerts table holds as it stands (its
    id, state and counters); a restart takes the alert from the table and is the same engine: the
    same open alerts, evidence and all, and the same changes from the same later parts. A condition
    whose latest refresh never reached the table (a same-level refresh of an inspection source, a
    detection error) keeps its whole alert in the share."""
    cell, site, events = _demo(tmp_path)
    cut = len(events) * 2 // 3
    with SqliteStore(site.store_path) as store:
        running = Pipeline(site, store)
        resume = running.observe(events[:cut]).resume_points
        open_now = running.engine.open_alerts()
        assert len(open_now) >= 3
        assert all(len(json.dumps(a.evidence)) > 1000 for a in open_now)  # what the share no longer repeats
        entries = [e for m in cell.machines for e in _book_entries(store, m.id)]
        assert len(entries) == len(open_now)
        assert all("alert" not in e and e["id"] == store.alert(e["id"]).id for e in entries)  # type: ignore[union-attr]
        with _restarted(site, store, tmp_path) as restarted:
            assert restarted.engine.open_alerts() == open_now
            for machine in cell.machines:
                assert _json(restarted.engine.state(machine.id)) == _json(running.engine.state(machine.id))
            assert not _fed(restarted, _replayed(events, cut, resume))
            expected = _fed(running, events[cut:])
            assert expected and _fed(restarted, events[cut:]) == expected


def test_a_condition_changed_without_its_alert_stored_keeps_it_whole_in_the_share(tmp_path: Path) -> None:
    cell = SimCell(load_scenario("demo"), seed=4, parts=60)
    site = load_site(_site(tmp_path, cell))
    events = [e.observation() for e in cell.events(include_spindle_samples=False)]
    with SqliteStore(site.store_path) as store:
        running = Pipeline(site, store)
        running.observe(events)
        alert = running.engine.open_alerts()[0]
        # as the engine's own people change at start (an acknowledgement already in the store) does
        changed = running.engine.acknowledge(alert.id, alert.time)
        assert changed is not None
        for name, state in running._engine_writes(alert.machine, program=""):
            store.save_detector_state(name, state)
        held = {e["id"] if "id" in e else e["alert"]["id"]: e for e in _book_entries(store, alert.machine)}
        assert held[alert.id]["alert"]["state"] == "acknowledged"  # the table still has it open: kept whole
        restarted = Pipeline(site, store)
        assert [a for a in restarted.engine.open_alerts() if a.id == alert.id] == [changed]


def test_the_engine_state_a_part_writes_is_small_and_does_not_repeat_alerts(tmp_path: Path) -> None:
    """Bytes, not time: what each part writes of the engine state (the changes of its program's
    shares) stays within the issue's 10 KB, and the machine's alert book adds tens of bytes per
    part however large the open conditions' evidence is (their alerts go to the alerts table)."""
    cell, site, _ = _demo(tmp_path)
    written: list[tuple[int, int, int]] = []  # per part: book bytes, engine bytes, open conditions' alert bytes

    def size(state: Any) -> int:
        change = state.change if isinstance(state, StateDelta) else state
        return len(change if isinstance(change, str) else json.dumps(change))

    class CountingStore(SqliteStore):
        def record_part(self, part: PartRecord, alerts: Any = (), states: Any = (), refreshed: Any = ()) -> bool:
            states = list(states)
            book = sum(size(s) for n, s in states if n == ENGINE_STATE + part.machine)
            engine = sum(size(s) for n, s in states if n.startswith(ENGINE_STATE))
            conditions = sum(
                len(json.dumps(alert_to_dict(a))) for a in pipeline.engine.open_alerts() if a.machine == part.machine
            )
            written.append((book, engine, conditions))
            return super().record_part(part, alerts, states, refreshed)

    with CountingStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        pipeline.observe([e.observation() for e in cell.events(include_spindle_samples=False)])
    with_conditions = [w for w in written if w[2] > 3000]
    assert len(with_conditions) > len(written) // 2
    assert max(book for book, _, _ in with_conditions) < 500
    assert statistics.median(engine for _, engine, _ in written) <= 10_000


def _overflow_pages(db: sqlite3.Connection, table: str) -> int:
    """Pages of ``table`` that hold the rest of rows too long for their page (SQLite's dbstat table)."""
    try:
        (n,) = db.execute("SELECT COUNT(*) FROM dbstat WHERE name = ? AND pagetype = 'overflow'", (table,)).fetchone()
    except sqlite3.OperationalError as exc:  # a SQLite built without it
        pytest.skip(f"this SQLite has no dbstat table ({exc})")
    return int(n)


def test_the_state_log_keeps_a_feature_sized_change_in_its_page_and_its_migration_keeps_every_change(tmp_path: Path) -> None:
    """A change of a feature's watch is about 1 KB: the log (schema 7) keeps it in its table's page,
    where the log of schema 5 and 6 (a table without row ids) gave each such change an overflow
    page of its own. A store of schema 6 is migrated with every change, in order."""
    change = {"values": ["w", 1, [i / 7 for i in range(1, 61)]], "n": ["=", 61]}  # ~1.2 KB of JSON
    assert 1000 < len(json.dumps(change)) < 1500
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.save_detector_state("a", {"values": [], "n": 0})
        for _ in range(40):
            store.save_detector_state("a", StateDelta(change))
        expected = store.load_detector_state("a")
        assert expected is not None and _overflow_pages(store._db, "detector_state_log") == 0
    # the same store as schema 6 wrote it
    db = sqlite3.connect(path)
    rows = db.execute("SELECT name, seq, change FROM detector_state_log ORDER BY name, seq").fetchall()
    db.executescript(
        """
        DROP TABLE detector_state_log;
        CREATE TABLE detector_state_log (name TEXT NOT NULL, seq INTEGER NOT NULL, change TEXT NOT NULL,
            PRIMARY KEY (name, seq)) WITHOUT ROWID;
        PRAGMA user_version = 6;
        """
    )
    db.executemany("INSERT INTO detector_state_log VALUES (?, ?, ?)", rows[::-1])
    db.commit()
    assert _overflow_pages(db, "detector_state_log") >= 40
    db.close()
    with SqliteStore(path, read_only=True) as reader:  # not migrated: read as it is
        assert reader.schema_version == 6 and reader.load_detector_state("a") == expected
    with SqliteStore(path) as store:
        assert store.schema_version >= 7  # migrated through 7 (and any later migration)
        assert store._db.execute("SELECT name, seq, change FROM detector_state_log ORDER BY name, seq").fetchall() == rows
        assert store.load_detector_state("a") == expected
        store.save_detector_state("a", StateDelta({"n": ["=", 99]}))  # the next change follows the migrated ones
        assert store.load_detector_state("a") == {**expected, "n": 99}
        assert _overflow_pages(store._db, "detector_state_log") == 0


def test_a_parts_state_writes_are_the_same_rows_as_the_same_writes_one_at_a_time(tmp_path: Path) -> None:
    """record_part writes a run of changes as one batch: the log, the whole states and what loads
    are what the same writes give one by one, in their order (a whole write between two changes
    of its name drops the one before it and keeps the one after it)."""
    end = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    part = PartRecord(key="m1/O1/1", machine="m1", program="O1", part_number=1, start=end, end=end, status=PartStatus.COMPLETE)
    writes: list[tuple[str, Any]] = [
        ("a", StateDelta({"n": ["=", 1]})),
        ("b", StateDelta('{"n":["=",1]}')),  # already text
        ("a", StateDelta({"n": ["=", 2]})),
        ("a", {"n": 3, "w": [1.5, None]}),  # whole: the changes of a before it are dropped
        ("b", StateDelta({"m": ["=", 5]})),
        ("c", "{}"),
        ("a", StateDelta({"n": ["=", 4]})),  # the last: a run that ends the writes
    ]
    rows = "SELECT name, seq, change FROM detector_state_log ORDER BY name, seq"
    with SqliteStore(tmp_path / "one.db") as one, SqliteStore(tmp_path / "part.db") as whole:
        for store in (one, whole):
            store.save_detector_state("a", {"n": 0})
            store.save_detector_state("b", {"n": 0})
            store.save_detector_state("b", StateDelta({"k": ["=", 1]}))
        for name, state in writes:
            one.save_detector_state(name, state)
        assert whole.record_part(part, states=writes)
        assert whole._db.execute(rows).fetchall() == one._db.execute(rows).fetchall()
        assert whole._db.execute(rows).fetchall() == [
            ("a", 1, '{"n":["=",4]}'),
            ("b", 1, '{"k":["=",1]}'),
            ("b", 2, '{"n":["=",1]}'),
            ("b", 3, '{"m":["=",5]}'),
        ]
        states = "SELECT name, state FROM detector_state ORDER BY name"
        assert whole._db.execute(states).fetchall() == one._db.execute(states).fetchall()
        assert (
            whole.load_detector_states("")
            == one.load_detector_states("")
            == {
                "a": {"n": 4, "w": [1.5, None]},
                "b": {"n": 1, "k": 1, "m": 5},
                "c": {},
            }
        )
