"""PostgreSQL store: several cell daemons, one plant database.

Same model as :class:`~monitor.store.sqlite.SqliteStore` (the reference), same numbered migrations
(each PostgreSQL migration is the SQLite one of the same number in PostgreSQL's dialect), the same
one-transaction-per-part guarantee and the same answers (tests/test_store.py runs against both).
What differs, and why:

- times are ``timestamptz`` (SQLite keeps ISO text): the server compares instants, not strings;
- insertion order (SQLite's ``rowid``) is an identity column ``id``;
- alert changes are numbered in commit order even with several daemons writing at once: a writer
  takes a transaction advisory lock before it appends to ``alert_events`` (a sequence alone hands
  out numbers in start order, and ``monitor alerts --follow`` would skip a change committed late);
- fencing (:class:`Fence`): a daemon that holds machines' leases (:mod:`monitor.store.lease`) writes
  a machine's rows only inside a transaction that finds its lease generation still current, read
  ``FOR SHARE`` so a takeover waits for that transaction and every later write of the old owner is
  refused (:class:`FencedOut`): no two writers for one machine, even for a moment;
- the password never sits in the site file: libpq takes it from ``PGPASSWORD`` (or ``~/.pgpass``,
  ``PGPASSFILE``); a URL that carries one is refused (:func:`check_url`);
- a lost connection is a retryable :class:`~monitor.errors.StoreError`: the daemon's held writes
  retry it, and the next call connects again.

The class is synchronous, like the SQLite one, and meant for one thread (the core's worker).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
from monitor.dburl import check_url, redact
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

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Fence",
    "FencedOut",
    "PostgresStore",
    "pg_error",
]

MIGRATIONS: list[str] = [
    # 1: first release
    """
    CREATE TABLE parts (
        id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        key TEXT PRIMARY KEY,
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        start TIMESTAMPTZ NOT NULL,
        "end" TIMESTAMPTZ NOT NULL,
        status TEXT NOT NULL,
        counter BIGINT,
        data TEXT NOT NULL,
        stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX parts_by_program ON parts (machine, program, part_number);
    CREATE INDEX parts_by_end ON parts ("end", id);
    CREATE TABLE measurements (
        part_key TEXT NOT NULL REFERENCES parts (key) ON DELETE CASCADE,
        signal TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (part_key, signal)
    );
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        row_id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        feature TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        opened TIMESTAMPTZ NOT NULL,
        updated TIMESTAMPTZ NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX alerts_by_machine ON alerts (machine, program, updated);
    CREATE TABLE alert_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alert_id TEXT NOT NULL,
        time TIMESTAMPTZ NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX alert_events_by_alert ON alert_events (alert_id, time);
    CREATE TABLE detector_state (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE adapter_positions (
        machine TEXT NOT NULL,
        source TEXT NOT NULL,
        position TEXT NOT NULL,
        updated TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (machine, source)
    );
    """,
    # 2: raw signal history (time in seconds since the epoch, a repeat replaces)
    """
    CREATE TABLE signals (
        machine TEXT NOT NULL,
        signal TEXT NOT NULL,
        time DOUBLE PRECISION NOT NULL,
        value DOUBLE PRECISION,
        text TEXT,
        PRIMARY KEY (machine, signal, time)
    );
    """,
    # 3: inspection results from CMM and gauge files; parts findable by the serial their probing
    # macro wrote (part.id: a column here, SQLite indexes the JSON expression)
    """
    CREATE TABLE inspection_files (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        format TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        info TEXT NOT NULL
    );
    CREATE TABLE inspection_results (
        key TEXT PRIMARY KEY,
        row_id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        file_id BIGINT NOT NULL REFERENCES inspection_files (id),
        seq BIGINT NOT NULL,
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
        file_id BIGINT NOT NULL REFERENCES inspection_files (id),
        position INTEGER NOT NULL,
        characteristic TEXT NOT NULL,
        value DOUBLE PRECISION,
        status TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX inspection_actuals_by_results ON inspection_actuals (results_key, position);
    ALTER TABLE parts ADD COLUMN part_id TEXT;
    CREATE INDEX parts_by_part_id ON parts (part_id);
    """,
    # 4: queries that do not grow with the store: parts by machine/program (or either) in end
    # order, alerts newest first, each complete part's measurements in feature-chart order
    """
    CREATE INDEX parts_by_machine_program_end ON parts (machine, program, "end", id);
    CREATE INDEX parts_by_machine_end ON parts (machine, "end", id);
    CREATE INDEX parts_by_program_end ON parts (program, "end", id);
    CREATE INDEX alerts_by_updated ON alerts (updated, row_id);
    CREATE INDEX alerts_by_machine_updated ON alerts (machine, updated, row_id);
    CREATE TABLE series (
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        signal TEXT NOT NULL,
        "end" TIMESTAMPTZ NOT NULL,
        key TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (machine, program, signal, "end", key)
    );
    INSERT INTO series (machine, program, signal, "end", key, part_number, value)
        SELECT p.machine, p.program, m.signal, p."end", p.key, p.part_number, m.value
        FROM parts p JOIN measurements m ON m.part_key = p.key WHERE p.status = 'complete'
        ON CONFLICT DO NOTHING;
    """,
    # 5: named states (the drift engine's) written as what changed since their last whole write,
    # applied in order when loaded
    """
    CREATE TABLE detector_state_log (
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        change TEXT NOT NULL,
        PRIMARY KEY (name, seq)
    );
    """,
    # 6: people's actions (issue 15): acknowledge with a comment, offset applied, tool changed, part
    # quarantined, close; who, on what (machine, program, feature, condition), the rest as JSON.
    # SQLite's column "user" is "actor" here (USER is reserved in PostgreSQL).
    """
    CREATE TABLE actions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        time TIMESTAMPTZ NOT NULL,
        kind TEXT NOT NULL,
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        feature TEXT NOT NULL,
        condition_id TEXT,
        actor TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX actions_by_feature ON actions (machine, program, feature, seq);
    CREATE INDEX actions_by_condition ON actions (condition_id);
    """,
    # 7: SQLite's state log gets row ids (its changes no longer take overflow pages); PostgreSQL's
    # table keeps them in its pages already: nothing to do, the versions stay the same in both
    "",
    # 8: a stamp per (machine, program) of the measurement series, set to a new random number by every
    # insert, update or delete of its rows in that change's transaction (a trigger: whichever daemon,
    # copy or tool writes them), as SQLite's migration 8: what a reader computed from a group's series
    # (the CLI's capability cache) stays valid while the stamp is the same
    """
    CREATE TABLE IF NOT EXISTS series_stamps (
        machine TEXT NOT NULL,
        program TEXT NOT NULL,
        stamp BIGINT NOT NULL,
        PRIMARY KEY (machine, program)
    );
    CREATE OR REPLACE FUNCTION series_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO series_stamps (machine, program, stamp)
                VALUES (OLD.machine, OLD.program, floor((random() - 0.5) * 9.2e18)::bigint)
                ON CONFLICT (machine, program) DO UPDATE SET stamp = excluded.stamp;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO series_stamps (machine, program, stamp)
                VALUES (NEW.machine, NEW.program, floor((random() - 0.5) * 9.2e18)::bigint)
                ON CONFLICT (machine, program) DO UPDATE SET stamp = excluded.stamp;
        END IF;
        RETURN NULL;
    END
    $$;
    DROP TRIGGER IF EXISTS series_stamp ON series;
    CREATE TRIGGER series_stamp AFTER INSERT OR UPDATE OR DELETE ON series FOR EACH ROW EXECUTE FUNCTION series_stamp();
    CREATE OR REPLACE FUNCTION series_stamps_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM series_stamps;
        RETURN NULL;
    END
    $$;
    DROP TRIGGER IF EXISTS series_truncated ON series;
    CREATE TRIGGER series_truncated AFTER TRUNCATE ON series FOR EACH STATEMENT EXECUTE FUNCTION series_stamps_truncated();
    INSERT INTO series_stamps (machine, program, stamp)
        SELECT machine, program, floor((random() - 0.5) * 9.2e18)::bigint FROM series GROUP BY machine, program
        ON CONFLICT (machine, program) DO NOTHING;
    """,
    # 9: SQLite's parts get a part_id column in place of an index on json_extract (which refused a
    # part whose JSON holds NaN or an infinity); PostgreSQL's have had theirs since migration 3:
    # nothing to do, the versions stay the same in both. (Since 9 both leave NaN out of the
    # measurement and series rows, store.base.row_measurements; NaN rows written before are kept.)
    "",
]
SCHEMA_VERSION = len(MIGRATIONS)

_MIGRATION_LOCK = 0x6D6F6E01
"""Advisory lock key held while migrating: two daemons starting at once migrate one after the other."""
_EVENT_LOCK = 0x6D6F6E02
"""Advisory transaction lock taken before appending alert changes: their numbers follow commit order."""
_INSPECTION_LOCK = 0x6D6F6E03
"""Advisory transaction lock for the inspection change sequence (MAX(seq) + 1 must not race)."""

_DEFAULTS = {
    "connect_timeout": "10",
    "application_name": "cnc-drift-monitor",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
}
"""libpq settings a URL may override: a dead server or network is noticed in seconds, not hours."""

log = logging.getLogger(__name__)


def _with_defaults(url: str, **extra: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in {**_DEFAULTS, **extra}.items():
        query.setdefault(key, value)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class FencedOut(StoreError):
    """A write for a machine whose lease this daemon no longer holds (another daemon took over)."""

    def __init__(self, message: str, machines: Sequence[str]) -> None:
        super().__init__(message, retryable=False)
        self.machines = tuple(machines)


@dataclass
class Fence:
    """The leases a writer holds: ``owner`` (the daemon's id) and each machine's lease generation.

    While set on a store, a write that names a machine (a part, an alert, a state, a position, a
    signal) runs only if that machine's lease row still carries this owner and generation; the row
    is read ``FOR SHARE``, so a takeover (``UPDATE ... generation + 1``) waits for the write to end."""

    owner: str
    generations: dict[str, int] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    """Machines found taken by another daemon: refused at once, without asking the server."""


class PostgresStore(DecodedReads):
    """The plant database, a :class:`~monitor.store.base.Store`; ``PostgresStore(url)``.

    ``read_only`` for readers (CLI, reports): sessions are read-only and nothing is created or
    migrated (a database without the schema reads as an error that says to start a daemon once)."""

    def __init__(self, url: str, *, read_only: bool = False, fence: Fence | None = None) -> None:
        self.url = check_url(url)
        self.read_only = read_only
        self.fence = fence
        self.on_write: Callable[[str, float], None] | None = None
        self._lock = threading.RLock()
        self._db: psycopg.Connection[Any] | None = None
        self._connect()
        try:
            if read_only:
                self._check_readable()
            else:
                self._migrate()
        except BaseException:
            self.close()
            raise

    def _check_readable(self) -> None:
        version = self.schema_version
        if version == 0:
            raise StoreError(
                f"the database {self.where} holds no monitor store yet; start a daemon on it once "
                "(it creates the tables) or run `monitor store copy`"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.where} has schema version {version}, newer than this monitor ({SCHEMA_VERSION}); "
                "upgrade the monitor"
            )

    @property
    def where(self) -> str:
        return redact(self.url)

    # ------------------------------------------------------------------ lifecycle
    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            db = psycopg.connect(_with_defaults(self.url), autocommit=True)
            if self.read_only:
                db.execute("SET default_transaction_read_only = on")
            else:
                # a writer cut off mid-transaction must not hold its locks (a takeover waits on them)
                db.execute("SET idle_in_transaction_session_timeout = '10s'")
            db.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            raise pg_error(self.url, "cannot connect to the store", exc) from exc
        self._db = db
        return db

    def _conn(self) -> psycopg.Connection[Any]:
        db = self._db
        if db is None or db.closed or db.broken:
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
            self._db = None
            return self._connect()
        return db

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def schema_version(self) -> int:
        exists = self._query_one("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists or not exists[0]:
            return 0
        row = self._query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        import psycopg

        with self._lock:
            db = self._conn()
            try:
                with db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                    row = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
                    version = int(row[0]) if row else 0
                    if version > SCHEMA_VERSION:
                        raise StoreError(
                            f"store {self.where} has schema version {version}, newer than this monitor "
                            f"({SCHEMA_VERSION}); upgrade the monitor"
                        )
                    for number in range(version, SCHEMA_VERSION):
                        for statement in _statements(MIGRATIONS[number]):
                            db.execute(statement)  # our own DDL, no parameters
                        db.execute("DELETE FROM schema_version")
                        db.execute("INSERT INTO schema_version (version) VALUES (%s)", (number + 1,))
            except psycopg.Error as exc:
                raise pg_error(self.url, f"cannot migrate store {self.where}", exc) from exc

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _tx(self, kind: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        """One write transaction (timed for the metrics when ``kind`` is given); psycopg errors
        become StoreErrors (a lost connection is retryable: the next call connects again)."""
        import psycopg

        if self.read_only:
            raise StoreError(f"store {self.where} was opened read-only")
        started = time.perf_counter()
        try:
            with self._lock:
                db = self._conn()
                try:
                    with db.transaction():
                        yield db
                except psycopg.Error as exc:
                    raise pg_error(self.url, "store write failed", exc) from exc
        finally:
            if kind is not None and self.on_write is not None:
                self.on_write(kind, time.perf_counter() - started)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with self._lock:
            try:
                return self._conn().execute(sql, args).fetchall()
            except psycopg.Error as exc:
                raise pg_error(self.url, "store read failed", exc) from exc

    def _query_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self._query(sql, args)
        return rows[0] if rows else None

    def _check_fence(self, db: psycopg.Connection[Any], machines: Iterable[str]) -> None:
        """Inside a write transaction: refuse unless every machine's lease is still ours."""
        fence = self.fence
        if fence is None:
            return
        wanted = sorted(set(machines))
        if not wanted:
            return
        lost = [m for m in wanted if m in fence.lost or m not in fence.generations]
        if not lost:
            rows = db.execute(
                "SELECT l.machine FROM machine_leases l"
                " JOIN unnest(%s::text[], %s::bigint[]) AS f (machine, generation)"
                " ON l.machine = f.machine AND l.generation = f.generation"
                " WHERE l.owner = %s ORDER BY l.machine FOR SHARE OF l",
                (wanted, [fence.generations[m] for m in wanted], fence.owner),
            ).fetchall()
            held = {r[0] for r in rows}
            lost = [m for m in wanted if m not in held]
            fence.lost.update(lost)
        if lost:
            raise FencedOut(
                f"this daemon ({fence.owner}) no longer holds the lease of {', '.join(lost)}: another daemon took "
                "over; nothing was written for it (stop this daemon; it may start again as a standby)",
                lost,
            )

    # ---------------------------------------------------------------------- writes
    def record_part(
        self,
        part: PartRecord,
        alerts: Sequence[Alert] = (),
        states: Iterable[tuple[str, StateWrite]] = (),
        refreshed: Sequence[Alert] = (),
    ) -> bool:
        """Store a part with its measurements, the alerts it raised, the conditions it refreshed (set as
        they now stand without a history event: fresher advice, same level) and the named states after
        it, in one transaction; False (nothing written) when the part's key is already stored."""
        states = list(states)
        with self._tx("part") as db:
            self._check_fence(
                db,
                [
                    part.machine,
                    *(a.machine for a in alerts),
                    *(a.machine for a in refreshed),
                    *_state_machines(n for n, _ in states),
                ],
            )
            cur = db.execute(
                'INSERT INTO parts (key, machine, program, part_number, start, "end", status, counter, data, part_id)'
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                (
                    part.key,
                    part.machine,
                    part.program,
                    part.part_number,
                    part.start,
                    part.end,
                    str(part.status),
                    part.counter,
                    dumps(part_to_dict(part)),
                    part.part_id,
                ),
            )
            if cur.rowcount == 0:
                return False
            measurements = row_measurements(part.measurements)  # NaN: kept in the part's record only
            with db.cursor() as c:
                c.executemany(
                    "INSERT INTO measurements (part_key, signal, value) VALUES (%s, %s, %s)",
                    [(part.key, s, v) for s, v in measurements.items()],
                )
                if part.status is PartStatus.COMPLETE and measurements:
                    c.executemany(
                        'INSERT INTO series (machine, program, signal, "end", key, part_number, value)'
                        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        [
                            (part.machine, part.program, s, part.end, part.key, part.part_number, v)
                            for s, v in measurements.items()
                        ],
                    )
            self._write_alerts(db, alerts)
            self._write_alerts(db, refreshed, event=False)
            for name, state in states:
                self._write_state(db, name, state)
            return True

    def record_alerts(self, alerts: Iterable[Alert]) -> None:
        """Store alert changes not tied to a part (acknowledge, close, signal lost)."""
        alerts = list(alerts)
        with self._tx("alerts") as db:
            self._check_fence(db, {a.machine for a in alerts})
            self._write_alerts(db, alerts)

    def record_action(self, action: Action) -> None:
        """Store what a person did (a repeat of the same action id is a no-op). Fenced like every
        write naming a machine: an action goes with the machine's detector state."""
        with self._tx("actions") as db:
            self._check_fence(db, [action.machine])
            db.execute(
                "INSERT INTO actions (id, time, kind, machine, program, feature, condition_id, actor, data)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (
                    action.id,
                    action.time,
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
        with self._tx() as db:
            self._check_fence(db, _state_machines([name]))
            self._write_state(db, name, state)

    def save_position(self, machine: str, source: str, position: dict[str, Any]) -> None:
        """Remember where an adapter was (for example the MTConnect instanceId and next sequence)."""
        with self._tx() as db:
            self._check_fence(db, [machine])
            db.execute(
                "INSERT INTO adapter_positions (machine, source, position, updated) VALUES (%s, %s, %s, now())"
                " ON CONFLICT (machine, source) DO UPDATE SET position = excluded.position, updated = excluded.updated",
                (machine, source, dumps(position)),
            )

    def record_signals(self, observations: Sequence[Observation]) -> None:
        """Keep raw observations as signal history (one transaction for the batch; a repeat replaces)."""
        rows: dict[tuple[str, str, float], tuple[Any, ...]] = {}
        for o in observations:  # one row per key: ON CONFLICT cannot touch a row twice in one statement
            t = o.time.timestamp()
            rows[(o.machine, o.signal, t)] = (o.machine, o.signal, t, o.number, o.value if isinstance(o.value, str) else None)
        with self._tx("signals") as db:
            self._check_fence(db, {o.machine for o in observations})
            with db.cursor() as c:
                c.executemany(
                    "INSERT INTO signals (machine, signal, time, value, text) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (machine, signal, time) DO UPDATE SET value = excluded.value, text = excluded.text",
                    list(rows.values()),
                )

    def prune_signals(self, older_than: datetime, *, chunk: int = 10_000) -> int:
        """Delete signal history before ``older_than`` in short transactions; how many rows went."""
        cutoff = older_than.timestamp()
        deleted = 0
        for machine, signal in self.signal_names():
            while True:
                with self._tx() as db:
                    cur = db.execute(
                        "DELETE FROM signals WHERE (machine, signal, time) IN (SELECT machine, signal, time FROM signals"
                        " WHERE machine = %s AND signal = %s AND time < %s LIMIT %s)",
                        (machine, signal, cutoff, chunk),
                    )
                deleted += cur.rowcount
                if cur.rowcount < chunk:
                    break
        return deleted

    def _write_alerts(self, db: psycopg.Connection[Any], alerts: Sequence[Alert], *, event: bool = True) -> None:
        if not alerts:
            return
        if event:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_EVENT_LOCK,))
        for alert in alerts:
            data = dumps(alert_to_dict(alert))
            db.execute(
                "INSERT INTO alerts (id, machine, program, feature, kind, severity, state, part_number, opened, updated, data)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
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
                    alert.time,
                    alert.time,
                    data,
                ),
            )
            if event:
                db.execute("INSERT INTO alert_events (alert_id, time, data) VALUES (%s, %s, %s)", (alert.id, alert.time, data))

    def _write_state(self, db: psycopg.Connection[Any], name: str, state: StateWrite) -> None:
        if isinstance(state, StateDelta):
            change = state.change if isinstance(state.change, str) else dumps(state.change)
            db.execute(
                "INSERT INTO detector_state_log (name, seq, change) VALUES"
                " (%s, (SELECT COALESCE(MAX(seq), 0) + 1 FROM detector_state_log WHERE name = %s), %s)",
                (name, name, change),
            )
            return
        db.execute(
            "INSERT INTO detector_state (name, state, updated) VALUES (%s, %s, now())"
            " ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated = excluded.updated",
            (name, state if isinstance(state, str) else dumps(state)),
        )
        db.execute("DELETE FROM detector_state_log WHERE name = %s", (name,))

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
            where.append("machine = ANY(%s)")
            args.append(list(machines))
        if first_part is not None:
            where.append("part_number >= %s")
            args.append(first_part)
        if last_part is not None:
            where.append("part_number <= %s")
            args.append(last_part)
        sql = "SELECT data FROM parts" + _where(where) + ' ORDER BY "end" DESC, id DESC'
        if last is not None:
            sql += " LIMIT %s"
            args.append(last)
        return [r[0] for r in reversed(self._query(sql, args))]

    def has_part(self, key: str) -> bool:
        return self._query_one("SELECT 1 FROM parts WHERE key = %s", (key,)) is not None

    def part_count(self, *, machine: str | None = None, program: str | None = None, status: PartStatus | None = None) -> int:
        where, args = _filters(machine=machine, program=program, status=str(status) if status else None)
        row = self._query_one("SELECT COUNT(*) FROM parts" + _where(where), args)
        return int(row[0]) if row else 0

    def next_part_numbers(self, machine: str) -> dict[str, int]:
        """Per program, the part number the tracker should give the next part of this machine."""
        rows = self._query(
            "SELECT program, MAX(part_number) FROM parts WHERE machine = %s AND status != 'aborted' GROUP BY program",
            (machine,),
        )
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
            where.append("machine = ANY(%s)")
            args.append(list(machines))
        if since is not None:
            where.append("updated >= %s")
            args.append(since)
        if open_only:
            where.append("state != 'closed'")
        sql = "SELECT data FROM alerts" + _where(where) + " ORDER BY updated DESC, row_id DESC"
        if last is not None:
            sql += " LIMIT %s"
            args.append(last)
        return [loads(r[0]) for r in reversed(self._query(sql, args))]

    def machine_owners(self) -> list[dict[str, Any]]:
        """Every machine with a lease: its cell, owning daemon, lease generation, last heartbeat
        (and how long ago by the server's clock), whether the lease is live, the owner's health."""
        exists = self._query_one("SELECT to_regclass('machine_leases') IS NOT NULL")
        if not exists or not exists[0]:
            return []
        rows = self._query(
            "SELECT machine, cell, owner, generation, heartbeat, extract(epoch FROM now() - heartbeat), expires > now(), info"
            " FROM machine_leases ORDER BY cell, machine"
        )
        return [
            {
                "machine": machine,
                "cell": cell,
                "owner": owner,
                "generation": int(generation),
                "heartbeat": heartbeat,
                "heartbeat_age_s": round(float(age), 1),
                "live": bool(live),
                **json.loads(info),
            }
            for machine, cell, owner, generation, heartbeat, age, live, info in rows
        ]

    def part_groups(self) -> list[tuple[str, str]]:
        """Every (machine, program) that has stored parts, sorted."""
        return [(m, p) for m, p in self._query("SELECT DISTINCT machine, program FROM parts ORDER BY machine, program")]

    def feature_values(
        self, machine: str, program: str, signals: Sequence[str], *, through: str | None = None
    ) -> list[tuple[float, ...]]:
        """Per complete part of ``machine``/``program`` that measured every one of ``signals``, their
        values in that order, oldest part first (a capability's input), from the series index;
        ``through``: only the parts up to that one (a stored part's key)."""
        if not signals:
            return []
        first, *others = signals
        columns = ", ".join(f"s{i}.value" for i in range(len(signals)))
        joins = "".join(
            f" JOIN series s{i} ON s{i}.machine = s0.machine AND s{i}.program = s0.program"
            f' AND s{i}.signal = %s AND s{i}."end" = s0."end" AND s{i}.key = s0.key'
            for i in range(1, len(signals))
        )
        sql = f"SELECT {columns} FROM series s0{joins} WHERE s0.machine = %s AND s0.program = %s AND s0.signal = %s"
        args: list[Any] = [*others, machine, program, first]
        if through is not None:
            sql += ' AND (s0."end", s0.key) <= (SELECT "end", key FROM parts WHERE key = %s)'
            args.append(through)
        sql += ' ORDER BY s0."end", s0.key'
        return [tuple(float(v) for v in row) for row in self._query(sql, args)]

    def measurement_series(
        self, machine: str, program: str, signals: Sequence[str], *, last: int | None = None
    ) -> list[SeriesPoint]:
        """The complete parts of ``machine``/``program`` that measured any of ``signals``, with those
        values, in the order they ended (then by key; the most recent ``last`` parts)."""
        by_key: dict[str, tuple[datetime, int, dict[str, float]]] = {}
        sql = 'SELECT "end", key, part_number, value FROM series WHERE machine = %s AND program = %s AND signal = %s'
        sql += ' ORDER BY "end" DESC, key DESC LIMIT %s' if last is not None else ""
        for signal in dict.fromkeys(signals):
            args: list[Any] = [machine, program, signal]
            if last is not None:
                args.append(last)
            for end, key, number, value in self._query(sql, args):
                entry = by_key.get(key)
                if entry is None:
                    entry = by_key[key] = (end, int(number), {})
                entry[2][signal] = float(value)
        ordered = sorted(by_key.items(), key=lambda kv: (kv[1][0], kv[0]))
        if last is not None:
            ordered = ordered[-last:] if last > 0 else []
        return [SeriesPoint(number, end.astimezone(UTC).isoformat(), key, values) for key, (end, number, values) in ordered]

    def series_version(self, machine: str, program: str) -> int | None:
        """Never told: several daemons write a shared PostgreSQL store (a standby takes a machine
        over), so nothing read from its series may be kept."""
        return None

    def series_stamps(self) -> dict[tuple[str, str], int] | None:
        """The stamps of migration 8 (set anew, by a trigger, with any change of a group's series rows
        in that change's transaction). None from a store of an older schema read without migrating."""
        if self.read_only and self.schema_version < 8:
            return None
        return {(m, p): int(stamp) for m, p, stamp in self._query("SELECT machine, program, stamp FROM series_stamps")}

    def alert(self, alert_id: str) -> Alert | None:
        row = self._query_one("SELECT data FROM alerts WHERE id = %s", (alert_id,))
        return alert_from_dict(loads(row[0])) if row else None

    def alert_events(self, after: int = 0, *, limit: int = 1000) -> list[tuple[int, Alert]]:
        """Every alert change after sequence number ``after`` (numbered in commit order)."""
        rows = self._query("SELECT seq, data FROM alert_events WHERE seq > %s ORDER BY seq LIMIT %s", (after, limit))
        return [(int(seq), alert_from_dict(loads(data))) for seq, data in rows]

    def last_alert_event(self) -> int:
        row = self._query_one("SELECT MAX(seq) FROM alert_events")
        return int(row[0] or 0) if row else 0

    def actions(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        feature: str | None = None,
        condition_id: str | None = None,
        last: int | None = None,
    ) -> list[Action]:
        """What people did, oldest first; ``last`` keeps the most recent N. A reader of a store from
        before schema 6 (readers never migrate) finds none."""
        if self.read_only and self.schema_version < 6:
            return []
        where, args = _filters(machine=machine, program=program, feature=feature, condition_id=condition_id)
        sql = "SELECT data FROM actions" + _where(where) + " ORDER BY seq DESC"
        if last is not None:
            sql += " LIMIT %s"
            args.append(int(last))
        return [action_from_dict(loads(r[0])) for r in reversed(self._query(sql, args))]

    def load_detector_state(self, name: str) -> dict[str, Any] | None:
        """The state last written under ``name`` (its whole write with every change after it applied)."""
        with self._lock:
            row = self._query_one("SELECT state FROM detector_state WHERE name = %s", (name,))
            changes = self._query("SELECT change FROM detector_state_log WHERE name = %s ORDER BY seq", (name,))
        return _folded(json.loads(row[0]), [c for (c,) in changes]) if row else None

    def load_detector_states(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every saved state whose name starts with ``prefix``, by name (changes applied)."""
        with self._lock:
            rows = self._query("SELECT name, state FROM detector_state WHERE left(name, %s) = %s", (len(prefix), prefix))
            changes: dict[str, list[str]] = {}
            for name, change in self._query(
                "SELECT name, change FROM detector_state_log WHERE left(name, %s) = %s ORDER BY name, seq", (len(prefix), prefix)
            ):
                changes.setdefault(name, []).append(change)
        return {name: _folded(json.loads(state), changes.get(name, [])) for name, state in rows}

    def load_position(self, machine: str, source: str) -> dict[str, Any] | None:
        row = self._query_one("SELECT position FROM adapter_positions WHERE machine = %s AND source = %s", (machine, source))
        return dict(json.loads(row[0])) if row else None

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
        sql = "SELECT time, value, text FROM signals WHERE machine = %s AND signal = %s AND time >= %s AND time <= %s"
        args: list[Any] = [machine, signal, since.timestamp() if since else 0.0, until.timestamp() if until else 1e300]
        sql += " ORDER BY time DESC" + (" LIMIT %s" if last is not None else "")
        if last is not None:
            args.append(last)
        return [
            Observation(machine, signal, datetime.fromtimestamp(t, UTC), text if text is not None else value)
            for t, value, text in reversed(self._query(sql, args))
        ]

    def signal_names(self) -> list[tuple[str, str]]:
        """(machine, signal) pairs that have history."""
        return [(m, s) for m, s in self._query("SELECT DISTINCT machine, signal FROM signals ORDER BY 1, 2")]

    def part(self, key: str) -> PartRecord | None:
        """The part stored under ``key``."""
        row = self._query_one("SELECT data FROM parts WHERE key = %s", (key,))
        return part_from_dict(loads(row[0])) if row else None

    def parts_with_id(self, part_id: str, *, machine: str | None = None, program: str | None = None) -> list[PartRecord]:
        """Parts (not aborted) whose probing macro wrote this ``part.id`` (a serial number), oldest first."""
        where, args = _filters(machine=machine, program=program)
        where += ["part_id = %s", "status != 'aborted'"]
        args.append(part_id)
        rows = self._query(f'SELECT data FROM parts{_where(where)} ORDER BY "end", id', args)
        return [part_from_dict(loads(r[0])) for r in rows]

    def has_part_ids(self, *, machine: str | None = None, program: str | None = None) -> bool:
        """True when some part of that machine/program carries a ``part.id``."""
        where, args = _filters(machine=machine, program=program)
        where.append("part_id IS NOT NULL")
        return self._query_one(f"SELECT 1 FROM parts{_where(where)} LIMIT 1", args) is not None

    def parts_ended_before(
        self, time: datetime, *, machine: str | None = None, program: str | None = None, last: int = 2
    ) -> list[PartRecord]:
        """The ``last`` parts (not aborted) that ended at or before ``time``, newest first."""
        where, args = _filters(machine=machine, program=program)
        where += ['"end" <= %s', "status != 'aborted'"]
        args += [time, last]
        rows = self._query(f'SELECT data FROM parts{_where(where)} ORDER BY "end" DESC, id DESC LIMIT %s', args)
        return [part_from_dict(loads(r[0])) for r in rows]

    def integrity_problems(self) -> list[str]:
        """What a crash could have torn: parts whose stored measurements differ from their record."""
        rows = self._query(
            "SELECT p.key, p.data, COUNT(m.signal) FROM parts p LEFT JOIN measurements m ON m.part_key = p.key"
            " GROUP BY p.key, p.data"
        )
        problems = []
        for key, data, n in rows:
            record = json.loads(data)["measurements"]
            if torn(record, n):
                problems.append(f"part {key}: {n} measurements stored, {len(row_measurements(record))} in the record")
        return problems

    # ----------------------------------------------------------------- inspection results
    def inspection_file(self, sha256: str) -> dict[str, Any] | None:
        """The imported file with this content hash: path, format, imported_at, info; None if never imported."""
        row = self._query_one("SELECT id, path, format, imported_at, info FROM inspection_files WHERE sha256 = %s", (sha256,))
        if row is None:
            return None
        return {"id": int(row[0]), "path": row[1], "format": row[2], "imported_at": row[3], "info": json.loads(row[4])}

    def inspection_files(self) -> list[dict[str, Any]]:
        """Every imported file, oldest first: sha256, path, format, imported_at, info."""
        rows = self._query("SELECT sha256, path, format, imported_at, info FROM inspection_files ORDER BY id")
        return [{"sha256": r[0], "path": r[1], "format": r[2], "imported_at": r[3], "info": json.loads(r[4])} for r in rows]

    def record_inspection(
        self,
        path: str,
        format: str,
        sha256: str,
        info: dict[str, Any],
        results: Sequence[tuple[str, InspectionResult, Sequence[str]]],
    ) -> tuple[list[str], int]:
        """Store one file's results in one transaction, each result and actual once whatever file
        brings it again (see :meth:`SqliteStore.record_inspection`)."""
        changed: list[str] = []
        added = 0
        with self._tx("inspection") as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_INSPECTION_LOCK,))
            db.execute(
                "INSERT INTO inspection_files (sha256, path, format, imported_at, info) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                (sha256, path, format, _now(), dumps(info)),
            )
            row = db.execute("SELECT id FROM inspection_files WHERE sha256 = %s", (sha256,)).fetchone()
            assert row is not None  # inserted or already there, in this transaction
            file_id = int(row[0])
            seq = self._next_inspection_seq(db)
            for key, result, actual_keys in results:
                cur = db.execute(
                    "INSERT INTO inspection_results (key, file_id, seq, serial, part_number, machine, program, time, data)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
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
                start_row = db.execute(
                    "SELECT COALESCE(MAX(position), -1) + 1 FROM inspection_actuals WHERE results_key = %s", (key,)
                ).fetchone()
                start = int(start_row[0]) if start_row else 0
                gained = 0
                for i, (akey, actual) in enumerate(zip(actual_keys, result.actuals, strict=True)):
                    cur = db.execute(
                        "INSERT INTO inspection_actuals (key, results_key, file_id, position, characteristic, value,"
                        " status, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                        (
                            akey,
                            key,
                            file_id,
                            start + i,
                            actual.characteristic.name,
                            actual.value,
                            actual.status,
                            dumps(actual_to_dict(actual)),
                        ),
                    )
                    gained += cur.rowcount
                added += gained
                if new_results or gained:
                    changed.append(key)
                    if not new_results:
                        db.execute("UPDATE inspection_results SET seq = %s WHERE key = %s", (seq, key))
        return changed, added

    @staticmethod
    def _next_inspection_seq(db: psycopg.Connection[Any]) -> int:
        row = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM inspection_results").fetchone()
        return int(row[0]) if row else 1

    def forget_inspection_file(self, sha256: str) -> int:
        """Delete what was first imported from the file with this hash; how many actuals went."""
        with self._tx("inspection") as db:
            row = db.execute("SELECT id FROM inspection_files WHERE sha256 = %s", (sha256,)).fetchone()
            if row is None:
                return 0
            file_id = int(row[0])
            gone = db.execute("DELETE FROM inspection_actuals WHERE file_id = %s", (file_id,)).rowcount
            db.execute(
                "DELETE FROM inspection_results WHERE file_id = %s AND NOT EXISTS"
                " (SELECT 1 FROM inspection_actuals a WHERE a.results_key = inspection_results.key)",
                (file_id,),
            )
            db.execute(
                "UPDATE inspection_results SET file_id = (SELECT MIN(a.file_id) FROM inspection_actuals a"
                " WHERE a.results_key = inspection_results.key) WHERE file_id = %s",
                (file_id,),
            )
            db.execute("DELETE FROM inspection_files WHERE id = %s", (file_id,))
            return int(gone)

    def set_inspection_matches(self, matches: Iterable[tuple[str, str | None, MatchMethod | None, str | None]]) -> None:
        """Record which part each results belong to; a change moves the results to the end of the
        change sequence."""
        with self._tx("inspection") as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_INSPECTION_LOCK,))
            seq = self._next_inspection_seq(db)
            for key, part_key, how, note in matches:
                db.execute(
                    "UPDATE inspection_results SET part_key = %s, matched_by = %s, note = %s,"
                    " seq = CASE WHEN part_key IS NOT DISTINCT FROM %s THEN seq ELSE %s END WHERE key = %s",
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
        """Stored results with their actuals, in the order they were stored (or last changed)."""
        if (keys is not None and not keys) or (part_keys is not None and not part_keys):
            return []
        where: list[str] = []
        args: list[Any] = []
        if keys is not None:
            where.append("r.key = ANY(%s)")
            args.append(list(keys))
        if part_keys is not None:
            where.append("r.part_key = ANY(%s)")
            args.append(list(part_keys))
        if unmatched:
            where.append("r.part_key IS NULL")
        if after_seq is not None:
            where.append("r.seq > %s")
            args.append(after_seq)
        sql = (
            "SELECT r.key, r.seq, r.part_key, r.matched_by, r.note, r.data, f.path, f.imported_at"
            " FROM inspection_results r JOIN inspection_files f ON f.id = r.file_id" + _where(where) + " ORDER BY r.seq, r.row_id"
        )
        with self._lock:
            rows = self._query(sql, args)
            actuals: dict[str, list[tuple[str, str]]] = {}
            if with_actuals and rows:
                for rkey, akey, data in self._query(
                    "SELECT results_key, key, data FROM inspection_actuals WHERE results_key = ANY(%s)"
                    " ORDER BY results_key, position",
                    ([r[0] for r in rows],),
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
        row = self._query_one("SELECT COALESCE(MAX(seq), 0) FROM inspection_results")
        return int(row[0]) if row else 0


# ------------------------------------------------------------------------------ helpers
_RETRYABLE_STATES = ("08", "53", "57P", "40")
"""SQLSTATE classes where waiting can help: connection, resources, operator intervention (server
restarting), serialization/deadlock."""


def pg_error(url: str, what: str, exc: Exception) -> StoreError:
    """A StoreError naming the database (never its password), the server's reason and what to do."""
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    lost = isinstance(exc, psycopg.OperationalError) and not state
    retryable = lost or state.startswith(_RETRYABLE_STATES)
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "password" in reason.lower() or state == "28P01":
        hint = "set PGPASSWORD (or ~/.pgpass) in the daemon's environment to the database user's password"
        retryable = False
    elif retryable:
        hint = "check that the database server is up and reachable (the daemon keeps what it has and retries)"
    else:
        hint = "check the URL, the database user's rights and the server's log"
    return StoreError(f"{what} ({redact(url)}): {reason}; {hint}", retryable=retryable)


def _folded(state: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    for change in changes:
        state = statelog.patch(state, json.loads(change))
    return state


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _state_machines(names: Iterable[str]) -> list[str]:
    """The machines named by state names ``kind:machine[/share]`` (``drift-engine:m1/O1001``, ``tracker:m1``)."""
    return [name.split(":", 1)[1].split("/", 1)[0] for name in names if ":" in name]


def _filters(**kw: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in kw.items():
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    return where, args


def _where(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


def _statements(script: str) -> list[str]:
    """The statements of a migration, split at semicolons outside dollar-quoted bodies (a trigger
    function's ``$$ ... $$`` has statements of its own)."""
    out: list[str] = []
    pending = ""
    for i, chunk in enumerate(script.split("$$")):
        if i % 2:  # inside $$ ... $$: part of the statement
            pending += "$$" + chunk + "$$"
            continue
        first, *rest = chunk.split(";")
        pending += first
        for piece in rest:
            if pending.strip():
                out.append(pending.strip())
            pending = piece
    if pending.strip():
        out.append(pending.strip())
    return out
