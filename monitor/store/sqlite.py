"""SQLite store: one transaction per part, stable part keys, schema migrations from the start.

Why SQLite: nothing to install, WAL mode lets the CLI read while the daemon writes, and one
transaction per part means a crash leaves either the whole part (with its measurements and the
alerts it raised) or none of it. Re-recording a part with a key already stored is a no-op, so a
daemon that restarts and sees the same part again never counts it twice.

The class is synchronous and meant to be used from one thread; the daemon's core calls it on its
single worker thread so commits never block the event loop. It is the reference implementation of
:class:`monitor.store.base.Store`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from monitor import statelog
from monitor.codec import (
    action_from_dict,
    action_to_dict,
    alert_from_dict,
    alert_to_dict,
    dumps,
    loads,
    part_from_dict,
    part_to_dict,
)
from monitor.errors import StoreError
from monitor.inspection.model import (
    InspectionResult,
    MatchMethod,
    StoredResult,
    actual_from_dict,
    actual_to_dict,
    result_from_dict,
    result_to_dict,
)
from monitor.model import Action, Alert, AlertState, Observation, PartRecord, PartStatus
from monitor.store.base import DecodedReads, SeriesPoint, StateDelta, StateWrite, row_measurements, torn

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "store_error"]

MIGRATIONS: list[str] = [
    # 1: first release
    """
    CREATE TABLE parts (
        key TEXT PRIMARY KEY,
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        start TEXT NOT NULL,
        end TEXT NOT NULL,
        status TEXT NOT NULL,
        counter INTEGER,
        data TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX parts_by_program ON parts (machine, program, part_number);
    CREATE INDEX parts_by_end ON parts (end);
    CREATE TABLE measurements (
        part_key TEXT NOT NULL REFERENCES parts (key) ON DELETE CASCADE,
        signal TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (part_key, signal)
    );
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        feature TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        opened TEXT NOT NULL,
        updated TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX alerts_by_machine ON alerts (machine, program, updated);
    CREATE TABLE alert_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL,
        time TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE detector_state (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE TABLE adapter_positions (
        machine TEXT NOT NULL,
        source TEXT NOT NULL,
        position TEXT NOT NULL,
        updated TEXT NOT NULL,
        PRIMARY KEY (machine, source)
    );
    """,
    # 2: raw signal history (opt-in per signal, deleted after store.signal_retention_days); time in
    # seconds since the epoch, one row per machine, signal and time (a repeat replaces)
    """
    CREATE TABLE signals (
        machine TEXT NOT NULL,
        signal TEXT NOT NULL,
        time REAL NOT NULL,
        value REAL,
        text TEXT,
        PRIMARY KEY (machine, signal, time)
    ) WITHOUT ROWID;
    """,
    # 3: inspection results from CMM and gauge files (QIF, CSV), joined to parts (monitor import);
    # parts findable by the serial their probing macro wrote (part.id)
    """
    CREATE TABLE inspection_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        format TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        info TEXT NOT NULL
    );
    CREATE TABLE inspection_results (
        key TEXT PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES inspection_files (id),
        seq INTEGER NOT NULL,
        serial TEXT,
        part_number INTEGER,
        machine TEXT,
        program TEXT,
        time TEXT,
        part_key TEXT,
        matched_by TEXT,
        note TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX inspection_results_by_part ON inspection_results (part_key);
    CREATE INDEX inspection_results_by_seq ON inspection_results (seq);
    CREATE TABLE inspection_actuals (
        key TEXT PRIMARY KEY,
        results_key TEXT NOT NULL REFERENCES inspection_results (key) ON DELETE CASCADE,
        file_id INTEGER NOT NULL REFERENCES inspection_files (id),
        position INTEGER NOT NULL,
        characteristic TEXT NOT NULL,
        value REAL,
        status TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX inspection_actuals_by_results ON inspection_actuals (results_key, position);
    CREATE INDEX parts_by_part_id ON parts (json_extract(data, '$.part_id'));
    """,
    # 4: queries that do not grow with the store. Parts by machine/program (or either) in end order
    # without a temporary sort; alerts newest first by machine or overall; each complete part's
    # measurements kept again in feature-chart order (one range scan per signal serves a chart, a
    # capability, without reading any part record)
    """
    CREATE INDEX parts_by_machine_program_end ON parts (machine, program, end);
    CREATE INDEX parts_by_machine_end ON parts (machine, end);
    CREATE INDEX parts_by_program_end ON parts (program, end);
    CREATE INDEX alerts_by_updated ON alerts (updated);
    CREATE INDEX alerts_by_machine_updated ON alerts (machine, updated);
    CREATE TABLE series (
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        signal TEXT NOT NULL,
        end TEXT NOT NULL,
        key TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (machine, program, signal, end, key)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO series (machine, program, signal, end, key, part_number, value)
        SELECT p.machine, p.program, m.signal, p.end, p.key, p.part_number, m.value
        FROM parts p JOIN measurements m ON m.part_key = p.key WHERE p.status = 'complete';
    """,
    # 5: named states (the drift engine's) written as what changed since their last whole write,
    # applied in order when loaded: a part writes a few hundred bytes of state, not the whole
    """
    CREATE TABLE detector_state_log (
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        change TEXT NOT NULL,
        PRIMARY KEY (name, seq)
    ) WITHOUT ROWID;
    """,
    # 6: people's actions (issue 15): acknowledge with a comment, offset applied, tool changed, part
    # quarantined, close; who (user, role), on what (machine, program, feature, condition), the rest
    # as JSON. Alerts stored before it are kept as they are (see docs/actions.md, "migration").
    """
    CREATE TABLE actions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        feature TEXT NOT NULL,
        condition_id TEXT,
        user TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX actions_by_feature ON actions (machine, program, feature, seq);
    CREATE INDEX actions_by_condition ON actions (condition_id);
    """,
    # 7: the state log as a table with row ids: a change of a feature's watch is about 1 KB, more than
    # a row of a table without them holds in its page (about 1,000 bytes in 4 KB pages), so every
    # change took an overflow page of its own (a part's changes wrote ~4 pages more, and cost a
    # third of the part's store time); the same rows, in the same (name, seq) order
    """
    ALTER TABLE detector_state_log RENAME TO detector_state_log_6;
    CREATE TABLE detector_state_log (
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        change TEXT NOT NULL,
        PRIMARY KEY (name, seq)
    );
    INSERT INTO detector_state_log (name, seq, change) SELECT name, seq, change FROM detector_state_log_6;
    DROP TABLE detector_state_log_6;
    """,
    # 8: a stamp per (machine, program) of the measurement series, set to a new random number by every
    # insert, update or delete of its rows, in the same transaction (triggers: no writer can miss it):
    # a reader that kept what it computed from a group's series (the CLI's capability cache) knows
    # from one small read that the rows are still the same. Random rather than counted, so that a
    # store restored from a backup and written again does not come back to a number seen before.
    # Each statement may run again (a store whose version was set back) and leaves the same.
    """
    CREATE TABLE IF NOT EXISTS series_stamps (
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        stamp INTEGER NOT NULL,
        PRIMARY KEY (machine, program)
    ) WITHOUT ROWID;
    CREATE TRIGGER IF NOT EXISTS series_stamp_insert AFTER INSERT ON series BEGIN
        INSERT INTO series_stamps (machine, program, stamp) VALUES (NEW.machine, NEW.program, random())
            ON CONFLICT (machine, program) DO UPDATE SET stamp = excluded.stamp;
    END;
    CREATE TRIGGER IF NOT EXISTS series_stamp_delete AFTER DELETE ON series BEGIN
        INSERT INTO series_stamps (machine, program, stamp) VALUES (OLD.machine, OLD.program, random())
            ON CONFLICT (machine, program) DO UPDATE SET stamp = excluded.stamp;
    END;
    CREATE TRIGGER IF NOT EXISTS series_stamp_update AFTER UPDATE ON series BEGIN
        INSERT INTO series_stamps (machine, program, stamp) VALUES (OLD.machine, OLD.program, random())
            ON CONFLICT (machine, program) DO UPDATE SET stamp = excluded.stamp;
        INSERT INTO series_stamps (machine, program, stamp) VALUES (NEW.machine, NEW.program, random())
            ON CONFLICT (machine, program) DO UPDATE SET stamp = excluded.stamp;
    END;
    INSERT OR IGNORE INTO series_stamps (machine, program, stamp)
        SELECT machine, program, random() FROM series GROUP BY machine, program;
    """,
    # 9: a part's id (part.id, what its probing macro wrote) as a column of its own, indexed, instead
    # of an index on json_extract(data, '$.part_id'): SQLite's JSON functions refuse the text json
    # writes for NaN and infinities, so a part with such a measurement could not be stored (the index
    # evaluates the expression on every insert: "malformed JSON"). Ids stored before are copied. May
    # run again (a store whose version was set back): the column, if there, is not added twice, and a
    # record SQLite cannot read as JSON (one with NaN, stored since) is skipped: its id is in the column.
    """
    ALTER TABLE parts ADD COLUMN part_id TEXT;
    UPDATE parts SET part_id = CASE WHEN json_valid(data) THEN json_extract(data, '$.part_id') END
        WHERE part_id IS NULL AND (CASE WHEN json_valid(data) THEN json_extract(data, '$.part_id') END) IS NOT NULL;
    DROP INDEX IF EXISTS parts_by_part_id;
    CREATE INDEX parts_by_part_id ON parts (part_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_READ_OLD_SCHEMA: list[tuple[int, str]] = [
    (
        4,
        "CREATE TEMP VIEW series AS SELECT p.machine AS machine, p.program AS program, m.signal AS signal, p.end AS end,"
        " p.key AS key, p.part_number AS part_number, m.value AS value"
        " FROM parts p JOIN measurements m ON m.part_key = p.key WHERE p.status = 'complete'",
    ),
    (5, "CREATE TEMP TABLE detector_state_log (name TEXT NOT NULL, seq INTEGER NOT NULL, change TEXT NOT NULL)"),
]
"""What a reader of an older store (read-only: not migrated) lacks, by the schema version that brings
it, made up in its temp schema (derived from what the store has)."""

log = logging.getLogger(__name__)

_LOG_CHANGE = (
    "INSERT INTO detector_state_log (name, seq, change) VALUES"
    " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM detector_state_log WHERE name = ?), ?)"
)
"""A named state's change, after its last one (seq one more than its highest)."""

_CHECKPOINT_PAGES = 4000
"""Pages in the write-ahead log before a commit copies them into the database (SQLite's default:
1,000, 4 MB). A part rewrites the same hot pages (the ends of the parts' indexes, the open alerts,
the state log): the longer the log, the more of its pages a checkpoint copies once for many parts
(the 50-machine cell's part store, checkpoints included: 1.09 -> 0.94 ms at part 100). 16 MB of log
at most between checkpoints; readers find pages in it through its index."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteStore(DecodedReads):
    """The monitor's embedded database, a :class:`~monitor.store.base.Store`. Open with
    ``SqliteStore(path)`` or ``with SqliteStore(path) as s:``.

    ``read_only=True`` is for readers (the CLI's ``parts``, ``alerts``, ``report``): the file is
    opened read-only, so it works on a read-only mount, from a user who may not write it, and while
    the disk is full; nothing is created or migrated. A store that does not exist yet reads as empty.
    """

    def __init__(self, path: Path | str, *, timeout_s: float = 30.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.on_write: Callable[[str, float], None] | None = None
        """Told the duration of each write transaction, by kind (part, alerts, signals): the metrics."""
        self.read_only = read_only
        self._lock = threading.Lock()
        self._series_versions: dict[tuple[str, str], int] = {}
        """Per (machine, program), how often parts were written to its series (see series_version)."""
        self._part_id = "part_id"
        """The SQL of a part's id: its column, or read from its JSON in a store of an older schema read as it is."""
        if read_only:
            self._db = self._open_read_only(timeout_s)
            if not any(row[1] == "part_id" for row in self._db.execute("PRAGMA table_info(parts)")):
                self._part_id = "json_extract(data, '$.part_id')"
            return
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self._set_wal(timeout_s)
            self._db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise store_error(self.path, f"cannot open store {path}", exc) from exc
        except OSError as exc:
            raise StoreError(f"cannot open store {path}: {exc.strerror}; check the path and permissions") from exc

    def _open_read_only(self, timeout_s: float) -> sqlite3.Connection:
        """A read-only connection. A WAL store on a read-only mount cannot get its shared-memory file:
        it is then read as immutable (exact when the daemon stopped cleanly: its log is empty)."""
        if str(self.path) == ":memory:" or not self.path.exists():
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            for migration in MIGRATIONS:  # nothing stored yet: an empty store of the current schema
                for statement in _statements(migration):
                    db.execute(statement)
            return db
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                log.warning(
                    "%s: read-only and its write-ahead log (%d bytes) cannot be read here: the newest changes may be missing",
                    self.path,
                    wal.stat().st_size,
                )
            try:
                db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error as exc:
                raise store_error(self.path, f"cannot open store {self.path} for reading", exc) from exc
        except sqlite3.Error as exc:
            raise store_error(self.path, f"cannot open store {self.path} for reading", exc) from exc
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this monitor ({SCHEMA_VERSION}); upgrade the monitor"
            )
        # an older schema reads as it is (the daemon migrates it when it next starts), with what newer
        # queries read derived in the temp schema
        for since, statement in _READ_OLD_SCHEMA:
            if version < since:
                db.execute(statement)
        return db

    def _set_wal(self, timeout_s: float) -> None:
        """Switch to WAL. SQLite answers "locked" at once, without its busy handler, when another
        connection is switching the same new file at that moment: retry briefly."""
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this monitor ({SCHEMA_VERSION}); upgrade the monitor"
            )
        for number in range(version, SCHEMA_VERSION):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # another process (the CLI, a second daemon) may have migrated while we waited for the lock
                if self._db.execute("PRAGMA user_version").fetchone()[0] > number:
                    self._db.execute("COMMIT")
                    continue
                for statement in _statements(MIGRATIONS[number]):
                    if not _added_already(self._db, statement):
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # ---------------------------------------------------------------------- writes
    def record_part(
        self,
        part: PartRecord,
        alerts: Sequence[Alert] = (),
        states: Iterable[tuple[str, StateWrite]] = (),
        refreshed: Sequence[Alert] = (),
    ) -> bool:
        """Store a part with its measurements, the alerts it raised and the named states after it
        (detectors, the machine's tracker; a state may come JSON-encoded already). ``refreshed``
        conditions are set as they now stand without a new history event (fresher advice, same level).

        All in one transaction. Returns False (and writes nothing) when the part's key is already
        stored: the same part seen again after a restart or a replay.
        """
        started = time.perf_counter()
        try:
            with self._lock, self._tx():
                return self._write_part(part, alerts, states, refreshed)
        finally:  # as _timed, without a generator's context manager (two of its frames a part)
            if self.on_write is not None:
                self.on_write("part", time.perf_counter() - started)

    def _write_part(
        self, part: PartRecord, alerts: Sequence[Alert], states: Iterable[tuple[str, StateWrite]], refreshed: Sequence[Alert]
    ) -> bool:
        end = part.end.isoformat()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO parts"
            " (key, machine, program, part_number, start, end, status, counter, data, stored_at, part_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                part.key,
                part.machine,
                part.program,
                part.part_number,
                part.start.isoformat(),
                end,
                str(part.status),
                part.counter,
                dumps(part_to_dict(part)),
                _now(),
                part.part_id,
            ),
        )
        if cur.rowcount == 0:
            return False
        measurements = row_measurements(part.measurements)  # NaN: kept in the part's record only
        self._db.executemany(
            "INSERT INTO measurements (part_key, signal, value) VALUES (?, ?, ?)",
            [(part.key, s, v) for s, v in measurements.items()],
        )
        if part.status is PartStatus.COMPLETE and measurements:
            group = (part.machine, part.program)
            self._series_versions[group] = self._series_versions.get(group, 0) + 1  # also if it rolls back
            self._db.executemany(
                "INSERT OR IGNORE INTO series (machine, program, signal, end, key, part_number, value)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(part.machine, part.program, s, end, part.key, part.part_number, v) for s, v in measurements.items()],
            )
        self._write_alerts(alerts)
        self._write_alerts(refreshed, event=False)
        self._write_states(states)
        return True

    def record_alerts(self, alerts: Iterable[Alert]) -> None:
        """Store alert changes not tied to a part (acknowledge, close, signal lost)."""
        with self._timed("alerts"), self._lock, self._tx():
            self._write_alerts(alerts)

    def record_action(self, action: Action) -> None:
        """Store what a person did (a repeat of the same action id is a no-op)."""
        with self._timed("actions"), self._lock, self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO actions (id, time, kind, machine, program, feature, condition_id, user, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    action.id,
                    action.time.isoformat(),
                    str(action.kind),
                    action.machine,
                    action.program,
                    action.feature,
                    action.condition_id,
                    action.user,
                    dumps(action_to_dict(action)),
                ),
            )

    def save_detector_state(self, name: str, state: StateWrite) -> None:
        with self._lock, self._tx():
            self._write_states([(name, state)])

    def save_position(self, machine: str, source: str, position: dict[str, Any]) -> None:
        """Remember where an adapter was (for example the MTConnect instanceId and next sequence)."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT INTO adapter_positions (machine, source, position, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (machine, source) DO UPDATE SET position = excluded.position, updated = excluded.updated",
                (machine, source, dumps(position), _now()),
            )

    def record_signals(self, observations: Sequence[Observation]) -> None:
        """Keep raw observations as signal history (one transaction for the batch)."""
        rows = [
            (o.machine, o.signal, o.time.timestamp(), o.number, o.value if isinstance(o.value, str) else None)
            for o in observations
        ]
        with self._timed("signals"), self._lock, self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO signals (machine, signal, time, value, text) VALUES (?, ?, ?, ?, ?)", rows
            )

    def prune_signals(self, older_than: datetime, *, chunk: int = 10_000) -> int:
        """Delete signal history before ``older_than``, in short transactions (the daemon's parts
        never wait long behind it); returns how many rows went."""
        cutoff = older_than.timestamp()
        with self._lock:
            pairs = self._db.execute("SELECT DISTINCT machine, signal FROM signals").fetchall()
        deleted = 0
        for machine, signal in pairs:
            while True:
                with self._lock, self._tx():
                    cur = self._db.execute(
                        "DELETE FROM signals WHERE machine = ? AND signal = ? AND time IN"
                        " (SELECT time FROM signals WHERE machine = ? AND signal = ? AND time < ? LIMIT ?)",
                        (machine, signal, machine, signal, cutoff, chunk),
                    )
                deleted += cur.rowcount
                if cur.rowcount < chunk:
                    break
        return deleted

    def signal_history(
        self,
        machine: str,
        signal: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        last: int | None = None,
    ) -> list[Observation]:
        """Kept observations of one machine's signal, oldest first; ``last`` keeps the most recent N."""
        sql = "SELECT time, value, text FROM signals WHERE machine = ? AND signal = ? AND time >= ? AND time <= ?"
        args: list[Any] = [machine, signal, since.timestamp() if since else 0.0, until.timestamp() if until else 1e300]
        sql += " ORDER BY time DESC" + (" LIMIT ?" if last is not None else "")
        if last is not None:
            args.append(last)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            Observation(machine, signal, datetime.fromtimestamp(t, UTC), text if text is not None else value)
            for t, value, text in reversed(rows)
        ]

    def signal_names(self) -> list[tuple[str, str]]:
        """(machine, signal) pairs that have history."""
        with self._lock:
            return [(m, s) for m, s in self._db.execute("SELECT DISTINCT machine, signal FROM signals ORDER BY 1, 2")]

    def _write_alerts(self, alerts: Iterable[Alert], *, event: bool = True) -> None:
        for alert in alerts:
            data = dumps(alert_to_dict(alert))
            t = alert.time.isoformat()
            self._db.execute(
                "INSERT INTO alerts (id, machine, program, feature, kind, severity, state, part_number, opened, updated, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, severity = excluded.severity, state = excluded.state,"
                " part_number = excluded.part_number, updated = excluded.updated, data = excluded.data",
                (
                    alert.id,
                    alert.machine,
                    alert.program,
                    alert.feature,
                    str(alert.kind),
                    str(alert.severity),
                    str(alert.state),
                    alert.part_number,
                    t,
                    t,
                    data,
                ),
            )
            if event:
                self._db.execute("INSERT INTO alert_events (alert_id, time, data) VALUES (?, ?, ?)", (alert.id, t, data))

    def _write_states(self, states: Iterable[tuple[str, StateWrite]]) -> None:
        """The states in order, each run of changes (a part's engine shares) as one executemany:
        the same statements one after another (each change's seq reads the rows inserted before it)."""
        deltas: list[tuple[str, str, str]] = []
        for name, state in states:
            if isinstance(state, StateDelta):
                change = state.change if isinstance(state.change, str) else dumps(state.change)
                deltas.append((name, name, change))
                continue
            if deltas:
                self._db.executemany(_LOG_CHANGE, deltas)
                deltas = []
            self._write_whole_state(name, state)
        if deltas:
            self._db.executemany(_LOG_CHANGE, deltas)

    def _write_whole_state(self, name: str, state: dict[str, Any] | str) -> None:
        """A whole state (the changes logged before it are dropped)."""
        self._db.execute(
            "INSERT INTO detector_state (name, state, updated) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated = excluded.updated",
            (name, state if isinstance(state, str) else dumps(state), _now()),
        )
        self._db.execute("DELETE FROM detector_state_log WHERE name = ?", (name,))

    @contextlib.contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.on_write is not None:
                self.on_write(kind, time.perf_counter() - started)

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self.path)

    # ----------------------------------------------------------------------- reads
    def part_texts(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        status: PartStatus | None = None,
        last: int | None = None,
        first_part: int | None = None,
        last_part: int | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[str]:
        """:meth:`part_data` before decoding: each part's stored JSON text."""
        where, args = _filters(machine=machine, program=program, status=str(status) if status else None)
        if machines is not None:
            where.append(f"machine IN ({','.join('?' * len(machines))})")
            args.extend(machines)
        if first_part is not None:
            where.append("part_number >= ?")
            args.append(first_part)
        if last_part is not None:
            where.append("part_number <= ?")
            args.append(last_part)
        sql = "SELECT data FROM parts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY end DESC, rowid DESC"
        if last is not None:
            sql += " LIMIT ?"
            args.append(last)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [r[0] for r in reversed(rows)]

    def has_part(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM parts WHERE key = ?", (key,)).fetchone() is not None

    def part_count(self, *, machine: str | None = None, program: str | None = None, status: PartStatus | None = None) -> int:
        where, args = _filters(machine=machine, program=program, status=str(status) if status else None)
        sql = "SELECT COUNT(*) FROM parts" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def next_part_numbers(self, machine: str) -> dict[str, int]:
        """Per program, the part number the tracker should give the next part of this machine."""
        with self._lock:
            rows = self._db.execute(
                "SELECT program, MAX(part_number) FROM parts WHERE machine = ? AND status != 'aborted' GROUP BY program",
                (machine,),
            ).fetchall()
        return {program: int(n) + 1 for program, n in rows}

    def alert_data(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        since: datetime | None = None,
        state: AlertState | None = None,
        open_only: bool = False,
        feature: str | None = None,
        severity: str | None = None,
        last: int | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """What :meth:`alerts` returns, as the stored JSON of each alert decoded (``alert_from_dict``'s input)."""
        where, args = _filters(
            machine=machine, program=program, state=str(state) if state else None, feature=feature, severity=severity
        )
        if machines is not None:
            where.append(f"machine IN ({','.join('?' * len(machines))})")
            args.extend(machines)
        if since is not None:
            where.append("updated >= ?")
            args.append(since.isoformat())
        if open_only:
            where.append("state != 'closed'")
        sql = "SELECT data FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY updated DESC, rowid DESC"
        if last is not None:
            sql += " LIMIT ?"
            args.append(last)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [loads(r[0]) for r in reversed(rows)]

    def machine_owners(self) -> list[dict[str, Any]]:
        """A SQLite store belongs to the one daemon that holds its lock: no plant to show."""
        return []

    def part_groups(self) -> list[tuple[str, str]]:
        """Every (machine, program) that has stored parts, sorted."""
        with self._lock:
            rows = self._db.execute("SELECT machine, program FROM parts GROUP BY machine, program ORDER BY machine, program")
            return [(m, p) for m, p in rows]

    def feature_values(
        self, machine: str, program: str, signals: Sequence[str], *, through: str | None = None
    ) -> list[tuple[float, ...]]:
        """Per complete part of ``machine``/``program`` that measured every one of ``signals``, their
        values (in that order), in the order the parts ended: what a capability needs, read from the
        series index (one range scan, one key lookup per further signal and part). ``through``: only
        the parts up to that one (a stored part's key), in the same order."""
        if not signals:
            return []
        first, *others = signals
        columns = ", ".join(["s0.value", *(f"s{i}.value" for i in range(1, len(signals)))])
        joins = "".join(
            f" JOIN series s{i} ON s{i}.machine = s0.machine AND s{i}.program = s0.program"
            f" AND s{i}.signal = ? AND s{i}.end = s0.end AND s{i}.key = s0.key"
            for i in range(1, len(signals))
        )
        sql = f"SELECT {columns} FROM series s0{joins} WHERE s0.machine = ? AND s0.program = ? AND s0.signal = ?"
        args: list[Any] = [*others, machine, program, first]
        if through is not None:
            sql += " AND (s0.end, s0.key) <= (SELECT end, key FROM parts WHERE key = ?)"
            args.append(through)
        with self._lock:
            return self._db.execute(sql + " ORDER BY s0.end, s0.key", args).fetchall()

    def measurement_series(
        self, machine: str, program: str, signals: Sequence[str], *, last: int | None = None
    ) -> list[SeriesPoint]:
        """The complete parts of ``machine``/``program`` that measured any of ``signals``, with those
        values, in the order they ended (then by key; the most recent ``last`` parts): one index range
        scan per signal, no part record read. The first signal's parts give the order; the parts of
        the others are merged in only when some lack the first signal."""
        wanted = list(dict.fromkeys(signals))
        if not wanted:
            return []
        where = " FROM series WHERE machine = ? AND program = ? AND signal = ?"
        where += " ORDER BY end DESC, key DESC LIMIT ?" if last is not None else " ORDER BY end, key"
        limit: list[Any] = [] if last is None else [last]
        head = wanted[0]
        extra: list[tuple[str, str, int, float]] = []
        with self._lock:
            order = self._db.execute("SELECT end, key, part_number, value" + where, [machine, program, head, *limit]).fetchall()
            values: dict[str, dict[str, float]] = {key: {head: value} for _, key, _, value in order}
            for signal in wanted[1:]:
                args = [machine, program, signal, *limit]
                for key, value in self._db.execute("SELECT key, value" + where, args):
                    entry = values.get(key)
                    if entry is None:
                        break
                    entry[signal] = value
                else:
                    continue
                # a part without the first signal: this signal's rows again, with their ends
                for row in self._db.execute("SELECT end, key, part_number, value" + where, args):
                    entry = values.get(row[1])
                    if entry is None:
                        values[row[1]] = {signal: row[3]}
                        extra.append(row)
                    else:
                        entry[signal] = row[3]
        if last is not None:
            order.reverse()
        if extra:  # parts without the first signal: merged by (end, key)
            order = sorted([*order, *extra], key=lambda row: (row[0], row[1]))
            if last is not None:
                order = order[-last:] if last > 0 else []
        point = tuple.__new__  # SeriesPoint(...) without its __new__ in Python: half the cost of 2,000 points
        return [
            point(SeriesPoint, (number, end if end.endswith("+00:00") else _parse_time(end).isoformat(), key, values[key]))
            for end, key, number, _ in order
        ]

    def series_version(self, machine: str, program: str) -> int | None:
        """Counted in this store object, which is the store's only writer (the daemon holds its lock);
        a read-only store may be written by another process meanwhile: None."""
        if self.read_only:
            return None
        return self._series_versions.get((machine, program), 0)

    def series_stamps(self) -> dict[tuple[str, str], int] | None:
        """The stamps of migration 8 (set anew, by triggers, with any change of a group's series rows
        in that change's transaction). None from a store of an older schema read without migrating."""
        with self._lock:
            if not self._has_table("series_stamps"):
                return None
            return {(m, p): int(stamp) for m, p, stamp in self._db.execute("SELECT machine, program, stamp FROM series_stamps")}

    def alert(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return alert_from_dict(loads(row[0])) if row else None

    def alert_events(self, after: int = 0, *, limit: int = 1000) -> list[tuple[int, Alert]]:
        """Every alert change after sequence number ``after``; for ``monitor alerts --follow``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, data FROM alert_events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [(int(seq), alert_from_dict(loads(data))) for seq, data in rows]

    def last_alert_event(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM alert_events").fetchone()
        return int(row[0] or 0)

    def actions(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        feature: str | None = None,
        condition_id: str | None = None,
        last: int | None = None,
    ) -> list[Action]:
        """What people did, oldest first; ``last`` keeps the most recent N."""
        where, args = _filters(machine=machine, program=program)
        for column, value in (("feature", feature), ("condition_id", condition_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT data FROM actions" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC"
        if last is not None:
            sql += " LIMIT ?"
            args.append(int(last))
        with self._lock:
            if not self._has_table("actions"):
                return []
            rows = self._db.execute(sql, args).fetchall()
        return [action_from_dict(loads(r[0])) for r in reversed(rows)]

    def _has_table(self, name: str) -> bool:
        """A read-only store of an older schema (not migrated: readers never migrate) lacks newer tables."""
        if not self.read_only:
            return True
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def load_detector_state(self, name: str) -> dict[str, Any] | None:
        """The state last written under ``name`` (its whole write with every change after it applied)."""
        with self._lock:
            row = self._db.execute("SELECT state FROM detector_state WHERE name = ?", (name,)).fetchone()
            changes = self._db.execute("SELECT change FROM detector_state_log WHERE name = ? ORDER BY seq", (name,)).fetchall()
        return _folded(json.loads(row[0]), [c for (c,) in changes]) if row else None

    def load_detector_states(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every saved state whose name starts with ``prefix``, by name (changes applied)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, state FROM detector_state WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
            changes: dict[str, list[str]] = {}
            for name, change in self._db.execute(
                "SELECT name, change FROM detector_state_log WHERE substr(name, 1, ?) = ? ORDER BY name, seq",
                (len(prefix), prefix),
            ):
                changes.setdefault(name, []).append(change)
        return {name: _folded(json.loads(state), changes.get(name, [])) for name, state in rows}

    def load_position(self, machine: str, source: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT position FROM adapter_positions WHERE machine = ? AND source = ?", (machine, source)
            ).fetchone()
        return json.loads(row[0]) if row else None

    # ----------------------------------------------------------------- inspection results
    def inspection_file(self, sha256: str) -> dict[str, Any] | None:
        """The imported file with this content hash: path, format, imported_at, info; None if never imported."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, path, format, imported_at, info FROM inspection_files WHERE sha256 = ?", (sha256,)
            ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "path": row[1], "format": row[2], "imported_at": row[3], "info": json.loads(row[4])}

    def record_inspection(
        self,
        path: str,
        format: str,
        sha256: str,
        info: dict[str, Any],
        results: Sequence[tuple[str, InspectionResult, Sequence[str]]],
    ) -> tuple[list[str], int]:
        """Store one file's results, each as ``(key, results, actual keys)``, in one transaction.

        Results and actuals already stored (same key: the same measurement from this or another
        file) are left as they are; new actuals of results already stored (a CSV that grew) are
        added to them. Returns the keys of results that are new or gained actuals, and the number
        of new actuals. The file itself is remembered by its hash (see :meth:`inspection_file`)."""
        changed: list[str] = []
        added = 0
        with self._timed("inspection"), self._lock, self._tx():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO inspection_files (sha256, path, format, imported_at, info) VALUES (?, ?, ?, ?, ?)",
                (sha256, path, format, _now(), dumps(info)),
            )
            file_id = int(
                self._db.execute("SELECT id FROM inspection_files WHERE sha256 = ?", (sha256,)).fetchone()[0]
                if cur.rowcount == 0
                else cur.lastrowid or 0
            )
            seq = self._next_inspection_seq()
            for key, result, actual_keys in results:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO inspection_results"
                    " (key, file_id, seq, serial, part_number, machine, program, time, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        file_id,
                        seq,
                        result.serial,
                        result.part_number,
                        result.machine,
                        result.program,
                        result.time.isoformat() if result.time else None,
                        dumps(result_to_dict(result)),
                    ),
                )
                new_results = cur.rowcount > 0
                start = int(
                    self._db.execute(
                        "SELECT COALESCE(MAX(position), -1) + 1 FROM inspection_actuals WHERE results_key = ?", (key,)
                    ).fetchone()[0]
                )
                rows = [
                    (
                        akey,
                        key,
                        file_id,
                        start + i,
                        actual.characteristic.name,
                        actual.value,
                        actual.status,
                        dumps(actual_to_dict(actual)),
                    )
                    for i, (akey, actual) in enumerate(zip(actual_keys, result.actuals, strict=True))
                ]
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO inspection_actuals (key, results_key, file_id, position, characteristic, value,"
                    " status, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                gained = self._db.total_changes - before
                added += gained
                if new_results or gained:
                    changed.append(key)
                    if not new_results:
                        self._db.execute("UPDATE inspection_results SET seq = ? WHERE key = ?", (seq, key))
        return changed, added

    def _next_inspection_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM inspection_results").fetchone()[0])

    def forget_inspection_file(self, sha256: str) -> int:
        """Delete what was first imported from the file with this hash (``monitor import --replace``):
        its actuals, results left without actuals, and the file's record. How many actuals went."""
        with self._timed("inspection"), self._lock, self._tx():
            row = self._db.execute("SELECT id FROM inspection_files WHERE sha256 = ?", (sha256,)).fetchone()
            if row is None:
                return 0
            file_id = int(row[0])
            gone = self._db.execute("DELETE FROM inspection_actuals WHERE file_id = ?", (file_id,)).rowcount
            self._db.execute(
                "DELETE FROM inspection_results WHERE file_id = ? AND NOT EXISTS"
                " (SELECT 1 FROM inspection_actuals a WHERE a.results_key = inspection_results.key)",
                (file_id,),
            )
            # results that other files added to keep their rows: they now belong to the first of those files
            self._db.execute(
                "UPDATE inspection_results SET file_id = (SELECT MIN(a.file_id) FROM inspection_actuals a"
                " WHERE a.results_key = inspection_results.key) WHERE file_id = ?",
                (file_id,),
            )
            self._db.execute("DELETE FROM inspection_files WHERE id = ?", (file_id,))
            return int(gone)

    def set_inspection_matches(self, matches: Iterable[tuple[str, str | None, MatchMethod | None, str | None]]) -> None:
        """Record which part each results belong to: ``(results key, part key or None, how, note)``.
        A change moves the results to the end of the change sequence (:meth:`inspection_results`
        ``after_seq``), so the daemon re-reads what a match changed."""
        with self._timed("inspection"), self._lock, self._tx():
            seq = self._next_inspection_seq()
            for key, part_key, how, note in matches:
                self._db.execute(
                    "UPDATE inspection_results SET part_key = ?, matched_by = ?, note = ?,"
                    " seq = CASE WHEN part_key IS ? THEN seq ELSE ? END WHERE key = ?",
                    (part_key, None if how is None else str(how), note, part_key, seq, key),
                )

    def inspection_results(
        self,
        *,
        keys: Sequence[str] | None = None,
        part_keys: Sequence[str] | None = None,
        unmatched: bool = False,
        after_seq: int | None = None,
        with_actuals: bool = True,
    ) -> list[StoredResult]:
        """Stored results with their actuals, in the order they were stored (or last changed).

        ``keys`` / ``part_keys`` select some; ``unmatched`` only those not tied to a part;
        ``after_seq`` only those stored or changed after that point of the change sequence;
        ``with_actuals`` False leaves the actuals out (matching needs only who the part was)."""
        where: list[str] = []
        args: list[Any] = []
        if keys is not None:
            where.append(f"r.key IN ({','.join('?' * len(keys))})")
            args.extend(keys)
        if part_keys is not None:
            where.append(f"r.part_key IN ({','.join('?' * len(part_keys))})")
            args.extend(part_keys)
        if unmatched:
            where.append("r.part_key IS NULL")
        if after_seq is not None:
            where.append("r.seq > ?")
            args.append(after_seq)
        if (keys is not None and not keys) or (part_keys is not None and not part_keys):
            return []
        sql = (
            "SELECT r.key, r.seq, r.part_key, r.matched_by, r.note, r.data, f.path, f.imported_at"
            " FROM inspection_results r JOIN inspection_files f ON f.id = r.file_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.seq, r.rowid"
        )
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            actuals: dict[str, list[tuple[str, str]]] = {}
            for i in range(0, len(rows) if with_actuals else 0, 500):
                chunk = [r[0] for r in rows[i : i + 500]]
                for rkey, akey, data in self._db.execute(
                    f"SELECT results_key, key, data FROM inspection_actuals WHERE results_key IN ({','.join('?' * len(chunk))})"
                    " ORDER BY results_key, position",
                    chunk,
                ):
                    actuals.setdefault(rkey, []).append((akey, data))
        out: list[StoredResult] = []
        for key, seq, part_key, matched_by, note, data, path, imported_at in rows:
            own = actuals.get(key, [])
            result = result_from_dict(json.loads(data), tuple(actual_from_dict(json.loads(d)) for _, d in own))
            out.append(
                StoredResult(
                    key=key,
                    result=result,
                    actual_keys=tuple(k for k, _ in own),
                    file=path,
                    imported_at=datetime.fromisoformat(imported_at),
                    seq=int(seq),
                    part_key=part_key,
                    matched_by=MatchMethod(matched_by) if matched_by else None,
                    note=note,
                )
            )
        return out

    def last_inspection_seq(self) -> int:
        """Where the change sequence of inspection results stands (0 when none are stored)."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM inspection_results").fetchone()[0])

    def inspection_files(self) -> list[dict[str, Any]]:
        """Every imported file, oldest first: sha256, path, format, imported_at, info."""
        with self._lock:
            rows = self._db.execute("SELECT sha256, path, format, imported_at, info FROM inspection_files ORDER BY id").fetchall()
        return [{"sha256": r[0], "path": r[1], "format": r[2], "imported_at": r[3], "info": json.loads(r[4])} for r in rows]

    def parts_with_id(self, part_id: str, *, machine: str | None = None, program: str | None = None) -> list[PartRecord]:
        """Parts (not aborted) whose probing macro wrote this ``part.id`` (a serial number), oldest first."""
        where, args = _filters(machine=machine, program=program)
        where += [f"{self._part_id} = ?", "status != 'aborted'"]
        args.append(part_id)
        with self._lock:
            rows = self._db.execute(f"SELECT data FROM parts WHERE {' AND '.join(where)} ORDER BY end, rowid", args).fetchall()
        return [part_from_dict(loads(r[0])) for r in rows]

    def has_part_ids(self, *, machine: str | None = None, program: str | None = None) -> bool:
        """True when some part of that machine/program carries a ``part.id`` (the shop writes serials)."""
        where, args = _filters(machine=machine, program=program)
        where.append(f"{self._part_id} IS NOT NULL")
        with self._lock:
            return self._db.execute(f"SELECT 1 FROM parts WHERE {' AND '.join(where)} LIMIT 1", args).fetchone() is not None

    def parts_ended_before(
        self, time: datetime, *, machine: str | None = None, program: str | None = None, last: int = 2
    ) -> list[PartRecord]:
        """The ``last`` parts (not aborted) that ended at or before ``time``, newest first."""
        where, args = _filters(machine=machine, program=program)
        where += ["end <= ?", "status != 'aborted'"]
        args += [time.astimezone(UTC).isoformat(), last]
        with self._lock:
            rows = self._db.execute(
                f"SELECT data FROM parts WHERE {' AND '.join(where)} ORDER BY end DESC, rowid DESC LIMIT ?", args
            ).fetchall()
        return [part_from_dict(loads(r[0])) for r in rows]

    def part(self, key: str) -> PartRecord | None:
        """The part stored under ``key``."""
        with self._lock:
            row = self._db.execute("SELECT data FROM parts WHERE key = ?", (key,)).fetchone()
        return part_from_dict(loads(row[0])) if row else None

    def integrity_problems(self) -> list[str]:
        """What a crash could have torn: parts whose stored measurements differ from their record."""
        problems: list[str] = []
        with self._lock:
            rows = self._db.execute(
                "SELECT p.key, p.data, COUNT(m.signal) FROM parts p LEFT JOIN measurements m ON m.part_key = p.key GROUP BY p.key"
            ).fetchall()
            check = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"sqlite integrity_check: {check}")
        for key, data, n in rows:
            record = loads(data)["measurements"]
            if torn(record, n):
                problems.append(f"part {key}: {n} measurements stored, {len(row_measurements(record))} in the record")
        return problems


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error, translated to StoreError.

    A failed COMMIT may already have rolled back (SQLite does so on a full disk): the rollback is
    then skipped, so the error says the cause ("database or disk is full"), not "cannot rollback"."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(self._path, "cannot start a store transaction", exc) from exc

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if t is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as exc:
                self._rollback()
                raise store_error(self._path, "store commit failed", exc) from exc
        self._rollback()
        if isinstance(e, sqlite3.Error):
            raise store_error(self._path, "store write failed", e) from e

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the first error is the one worth reporting
                self._db.execute("ROLLBACK")


_RETRYABLE = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
)


def store_error(path: Path, what: str, exc: sqlite3.Error) -> StoreError:
    """A StoreError that names the file, SQLite's reason and what to do; retryable when waiting can help."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL:
        hint = f"free space on the disk that holds {path.parent} (the daemon keeps what it has and retries)"
    elif primary == sqlite3.SQLITE_READONLY:
        hint = f"{path} or its folder is read-only; check the mount and permissions"
    elif primary == sqlite3.SQLITE_IOERR:
        hint = f"the disk that holds {path} failed a read or write (full, removed or failing?)"
    else:
        hint = "check the path, permissions and disk space"
    return StoreError(f"{what}: {exc}; {hint}", retryable=primary in _RETRYABLE)


def _folded(state: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    for change in changes:
        state = statelog.patch(state, json.loads(change))
    return state


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _filters(**kw: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in kw.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return where, args


_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)")


def _added_already(db: sqlite3.Connection, statement: str) -> bool:
    """Whether ``statement`` adds a column its table already has (a store whose version was set
    back): then there is nothing to add, and the rest of its migration runs again as written (each
    of their statements may: see migration 8)."""
    found = _ADD_COLUMN.match(statement)
    return found is not None and any(row[1] == found[2] for row in db.execute(f"PRAGMA table_info({found[1]})"))


def _statements(script: str) -> list[str]:
    """The statements of a migration, each whole: a trigger's body has statements of its own (the
    pieces between semicolons are joined until SQLite says the statement is complete)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending.strip().removesuffix(";").strip())
    return out
