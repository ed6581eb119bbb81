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
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from monitor.codec import alert_from_dict, alert_to_dict, part_from_dict, part_to_dict
from monitor.errors import StoreError
from monitor.model import Alert, AlertState, Observation, PartRecord, PartStatus

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
]
SCHEMA_VERSION = len(MIGRATIONS)

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteStore:
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
        if read_only:
            self._db = self._open_read_only(timeout_s)
            return
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self._set_wal(timeout_s)
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
        return db  # an older schema reads as it is (the daemon migrates it when it next starts)

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
        states: Iterable[tuple[str, dict[str, Any] | str]] = (),
    ) -> bool:
        """Store a part with its measurements, the alerts it raised and the named states after it
        (detectors, the machine's tracker; a state may come JSON-encoded already).

        All in one transaction. Returns False (and writes nothing) when the part's key is already
        stored: the same part seen again after a restart or a replay.
        """
        with self._timed("part"), self._lock, self._tx():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO parts (key, machine, program, part_number, start, end, status, counter, data, stored_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    part.key,
                    part.machine,
                    part.program,
                    part.part_number,
                    part.start.isoformat(),
                    part.end.isoformat(),
                    str(part.status),
                    part.counter,
                    json.dumps(part_to_dict(part)),
                    _now(),
                ),
            )
            if cur.rowcount == 0:
                return False
            self._db.executemany(
                "INSERT INTO measurements (part_key, signal, value) VALUES (?, ?, ?)",
                [(part.key, s, v) for s, v in part.measurements.items()],
            )
            self._write_alerts(alerts)
            for name, state in states:
                self._write_state(name, state)
            return True

    def record_alerts(self, alerts: Iterable[Alert]) -> None:
        """Store alert changes not tied to a part (acknowledge, close, signal lost)."""
        with self._timed("alerts"), self._lock, self._tx():
            self._write_alerts(alerts)

    def save_detector_state(self, name: str, state: dict[str, Any]) -> None:
        with self._lock, self._tx():
            self._write_state(name, state)

    def save_position(self, machine: str, source: str, position: dict[str, Any]) -> None:
        """Remember where an adapter was (for example the MTConnect instanceId and next sequence)."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT INTO adapter_positions (machine, source, position, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (machine, source) DO UPDATE SET position = excluded.position, updated = excluded.updated",
                (machine, source, json.dumps(position), _now()),
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

    def _write_alerts(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            data = json.dumps(alert_to_dict(alert))
            t = alert.time.isoformat()
            self._db.execute(
                "INSERT INTO alerts (id, machine, program, feature, kind, severity, state, part_number, opened, updated, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state,"
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
            self._db.execute("INSERT INTO alert_events (alert_id, time, data) VALUES (?, ?, ?)", (alert.id, t, data))

    def _write_state(self, name: str, state: dict[str, Any] | str) -> None:
        self._db.execute(
            "INSERT INTO detector_state (name, state, updated) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated = excluded.updated",
            (name, state if isinstance(state, str) else json.dumps(state), _now()),
        )

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
    def parts(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        status: PartStatus | None = None,
        last: int | None = None,
        first_part: int | None = None,
        last_part: int | None = None,
    ) -> list[PartRecord]:
        """Parts in the order they ended; ``last`` keeps only the most recent N."""
        where, args = _filters(machine=machine, program=program, status=str(status) if status else None)
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
        return [part_from_dict(json.loads(r[0])) for r in reversed(rows)]

    def has_part(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM parts WHERE key = ?", (key,)).fetchone() is not None

    def part_count(self, *, machine: str | None = None, program: str | None = None) -> int:
        where, args = _filters(machine=machine, program=program)
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

    def alerts(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        since: datetime | None = None,
        state: AlertState | None = None,
        open_only: bool = False,
    ) -> list[Alert]:
        """Alerts as they stand now, oldest change first."""
        where, args = _filters(machine=machine, program=program, state=str(state) if state else None)
        if since is not None:
            where.append("updated >= ?")
            args.append(since.isoformat())
        if open_only:
            where.append("state != 'closed'")
        sql = "SELECT data FROM alerts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY updated, rowid"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [alert_from_dict(json.loads(r[0])) for r in rows]

    def alert(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return alert_from_dict(json.loads(row[0])) if row else None

    def alert_events(self, after: int = 0, *, limit: int = 1000) -> list[tuple[int, Alert]]:
        """Every alert change after sequence number ``after``; for ``monitor alerts --follow``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, data FROM alert_events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [(int(seq), alert_from_dict(json.loads(data))) for seq, data in rows]

    def last_alert_event(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM alert_events").fetchone()
        return int(row[0] or 0)

    def load_detector_state(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM detector_state WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def load_detector_states(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every saved state whose name starts with ``prefix``, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, state FROM detector_state WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        return {name: json.loads(state) for name, state in rows}

    def load_position(self, machine: str, source: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT position FROM adapter_positions WHERE machine = ? AND source = ?", (machine, source)
            ).fetchone()
        return json.loads(row[0]) if row else None

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
            expected = len(json.loads(data)["measurements"])
            if expected != n:
                problems.append(f"part {key}: {n} measurements stored, {expected} in the record")
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


def _filters(**kw: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in kw.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return where, args


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
