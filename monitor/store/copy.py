"""``monitor store copy``: move a cell's SQLite store into the plant's PostgreSQL store.

Row by row, table by table, in the source's order, each row keyed by what identifies it (a part's
key, an alert's id, an action's id, a state's name, a signal's machine/signal/time, an inspection result's key), so
the copy can be interrupted and run again: what is already there is left alone and nothing is
stored twice. Alert history (which has no key of its own) is matched by alert, time and content.
An alert, a detector state or a source position already newer in the target (a daemon wrote it
there since) is kept; the source's replaces an older or equally old one that differs. The source
is only read (one read transaction: a consistent snapshot even while its daemon writes), and may
be of any older schema: the chart series are rebuilt from the parts, as the migration does.

After the copy every source part, alert change, action and inspection actual is checked to be in
the target (:attr:`CopyResult.missing`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.errors import StoreError
from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import SCHEMA_VERSION, store_error

__all__ = ["TABLES", "CopyResult", "copy_store"]

TABLES = (
    "parts",
    "measurements",
    "series",
    "alerts",
    "alert_events",
    "actions",
    "detector_state",
    "detector_state_log",
    "adapter_positions",
    "signals",
    "inspection_files",
    "inspection_results",
    "inspection_actuals",
)
"""What is copied, in this order (parents before children)."""

_CHUNK = 2000


@dataclass
class CopyResult:
    """Rows read from the source and rows new in the target, per table; what was not found after."""

    source: str
    target: str
    read: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "read": self.read,
            "added": self.added,
            "missing": self.missing,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[str, int, int], None]
"""Told (table, rows done, rows in all) as the copy goes."""


def copy_store(source: Path, target: str, *, progress: Progress | None = None) -> CopyResult:
    """Copy the SQLite store at ``source`` into the PostgreSQL store at ``target`` (created or
    migrated first); safe to run again. Raises StoreError when either cannot be opened or written."""
    if not source.exists():
        raise StoreError(f"no SQLite store at {source}; give the file the cell's daemon used (its site's store.path)")
    started = time.perf_counter()
    src = _open_source(source)
    try:
        with PostgresStore(target) as dst:
            result = CopyResult(str(source), dst.where)
            src.execute("BEGIN")  # one snapshot of the source for the whole copy
            copier = _Copier(src, dst, result, progress or (lambda table, done, total: None))
            copier.run()
            copier.verify()
            src.execute("COMMIT")
    finally:
        src.close()
    result.seconds = time.perf_counter() - started
    return result


def _open_source(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise store_error(path, f"cannot read the store {path}", exc) from exc
    if version == 0:
        db.close()
        raise StoreError(f"{path} is not a monitor store (no schema); give the file the cell's daemon used")
    if version > SCHEMA_VERSION:
        db.close()
        raise StoreError(f"store {path} has schema version {version}, newer than this monitor ({SCHEMA_VERSION}); upgrade")
    return db


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Copier:
    def __init__(self, src: sqlite3.Connection, dst: PostgresStore, result: CopyResult, progress: Progress) -> None:
        self.src = src
        self.dst = dst
        self.result = result
        self.progress = progress
        self.version = int(src.execute("PRAGMA user_version").fetchone()[0])

    def _has(self, table: str) -> bool:
        return self.src.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None

    def _rows(self, table: str, sql: str) -> Iterator[list[tuple[Any, ...]]]:
        """The source rows of ``sql`` in chunks, counting them and telling progress."""
        total = int(self.src.execute(f"SELECT COUNT(*) FROM ({sql})").fetchone()[0])
        self.result.read[table] = total
        self.result.added.setdefault(table, 0)
        done = 0
        self.progress(table, 0, total)
        cursor = self.src.execute(sql)
        while chunk := cursor.fetchmany(_CHUNK):
            yield chunk
            done += len(chunk)
            self.progress(table, done, total)

    def _write(self, table: str, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert ``rows`` with ``sql`` (which skips what exists) in one transaction; count the new ones."""
        with self.dst._tx("copy") as db, db.cursor() as cur:
            cur.executemany(sql, rows)  # pipelined: one round trip per chunk, not per row
            self.result.added[table] += max(cur.rowcount, 0)

    def run(self) -> None:
        self._parts()
        self._alerts()
        if self._has("actions"):
            self._actions()
        self._states()
        if self._has("signals"):
            self._signals()
        if self._has("inspection_files"):
            self._inspection()

    def _parts(self) -> None:
        for chunk in self._rows(
            "parts",
            "SELECT key, machine, program, part_number, start, end, status, counter, data, stored_at FROM parts ORDER BY rowid",
        ):
            rows = []
            for key, machine, program, number, start, end, status, counter, data, stored in chunk:
                part_id = json.loads(data).get("part_id")
                rows.append(
                    (key, machine, program, number, _time(start), _time(end), status, counter, data, _time(stored), part_id)
                )
            self._write(
                "parts",
                'INSERT INTO parts (key, machine, program, part_number, start, "end", status, counter, data, stored_at, part_id)'
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                rows,
            )
        for chunk in self._rows("measurements", "SELECT part_key, signal, value FROM measurements ORDER BY rowid"):
            self._write(
                "measurements",
                "INSERT INTO measurements (part_key, signal, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                chunk,
            )
        # rebuilt from the parts whatever the source's schema (as migration 4 fills it)
        for chunk in self._rows(
            "series",
            "SELECT p.machine, p.program, m.signal, p.end, p.key, p.part_number, m.value FROM parts p"
            " JOIN measurements m ON m.part_key = p.key WHERE p.status = 'complete' ORDER BY p.rowid, m.signal",
        ):
            self._write(
                "series",
                'INSERT INTO series (machine, program, signal, "end", key, part_number, value)'
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(m, p, s, _time(e), k, n, v) for m, p, s, e, k, n, v in chunk],
            )

    def _alerts(self) -> None:
        for chunk in self._rows(
            "alerts",
            "SELECT id, machine, program, feature, kind, severity, state, part_number, opened, updated, data"
            " FROM alerts ORDER BY rowid",
        ):
            self._write(
                "alerts",
                "INSERT INTO alerts (id, machine, program, feature, kind, severity, state, part_number, opened, updated, data)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, severity = excluded.severity,"
                " state = excluded.state, part_number = excluded.part_number, updated = excluded.updated,"
                " data = excluded.data WHERE alerts.updated <= excluded.updated AND alerts.data <> excluded.data",
                [(*r[:8], _time(r[8]), _time(r[9]), r[10]) for r in chunk],
            )
        for chunk in self._rows("alert_events", "SELECT alert_id, time, data FROM alert_events ORDER BY seq"):
            rows = [(a, _time(t), d, a, _time(t), d) for a, t, d in chunk]
            with self.dst._tx("copy") as db:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (0x6D6F6E02,))  # the history's commit order
                with db.cursor() as cur:  # one at a time: a change repeated in this chunk is then found
                    added = 0
                    for row in rows:
                        cur.execute(
                            "INSERT INTO alert_events (alert_id, time, data) SELECT %s, %s, %s WHERE NOT EXISTS"
                            " (SELECT 1 FROM alert_events WHERE alert_id = %s AND time = %s AND data = %s)",
                            row,
                        )
                        added += max(cur.rowcount, 0)
            self.result.added["alert_events"] += added

    def _actions(self) -> None:
        """What people did, in the order they did it, keyed by the action's id."""
        for chunk in self._rows(
            "actions",
            "SELECT id, time, kind, machine, program, feature, condition_id, user, data FROM actions ORDER BY seq",
        ):
            self._write(
                "actions",
                "INSERT INTO actions (id, time, kind, machine, program, feature, condition_id, actor, data)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                [(r[0], _time(r[1]), *r[2:]) for r in chunk],
            )

    def _states(self) -> None:
        for chunk in self._rows("detector_state", "SELECT name, state, updated FROM detector_state ORDER BY name"):
            self._write(
                "detector_state",
                "INSERT INTO detector_state (name, state, updated) VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE"
                " SET state = excluded.state, updated = excluded.updated WHERE detector_state.updated <= excluded.updated"
                " AND detector_state.state <> excluded.state",
                [(n, s, _time(u)) for n, s, u in chunk],
            )
        if self._has("detector_state_log"):
            self._state_log()
        for chunk in self._rows(
            "adapter_positions", "SELECT machine, source, position, updated FROM adapter_positions ORDER BY machine, source"
        ):
            self._write(
                "adapter_positions",
                "INSERT INTO adapter_positions (machine, source, position, updated) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (machine, source) DO UPDATE SET position = excluded.position, updated = excluded.updated"
                " WHERE adapter_positions.updated <= excluded.updated AND adapter_positions.position <> excluded.position",
                [(m, s, p, _time(u)) for m, s, p, u in chunk],
            )

    def _state_log(self) -> None:
        """Changes written after a state's last whole write go with that whole state: where the target
        holds the source's whole state, its change log becomes the source's (a newer whole state in the
        target keeps its own)."""
        logs: dict[str, list[tuple[int, str]]] = {}
        for chunk in self._rows("detector_state_log", "SELECT name, seq, change FROM detector_state_log ORDER BY name, seq"):
            for name, seq, change in chunk:
                logs.setdefault(name, []).append((int(seq), change))
        for name, state in self.src.execute("SELECT name, state FROM detector_state ORDER BY name").fetchall():
            wanted = logs.get(name, [])
            with self.dst._tx("copy") as db:
                same = db.execute(
                    "SELECT 1 FROM detector_state WHERE name = %s AND state = %s FOR UPDATE", (name, state)
                ).fetchone()
                if same is None:
                    continue
                held = [
                    (int(q), c)
                    for q, c in db.execute(
                        "SELECT seq, change FROM detector_state_log WHERE name = %s ORDER BY seq", (name,)
                    ).fetchall()
                ]
                if held == wanted:
                    continue
                db.execute("DELETE FROM detector_state_log WHERE name = %s", (name,))
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO detector_state_log (name, seq, change) VALUES (%s, %s, %s)",
                        [(name, q, c) for q, c in wanted],
                    )
                self.result.added["detector_state_log"] += len(wanted)

    def _signals(self) -> None:
        for chunk in self._rows(
            "signals", "SELECT machine, signal, time, value, text FROM signals ORDER BY machine, signal, time"
        ):
            self._write(
                "signals",
                "INSERT INTO signals (machine, signal, time, value, text) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                chunk,
            )

    def _inspection(self) -> None:
        for chunk in self._rows(
            "inspection_files", "SELECT sha256, path, format, imported_at, info FROM inspection_files ORDER BY id"
        ):
            self._write(
                "inspection_files",
                "INSERT INTO inspection_files (sha256, path, format, imported_at, info) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                chunk,
            )
        ids = {sha: i for sha, i in self.dst._query("SELECT sha256, id FROM inspection_files")}
        file_ids = {int(i): ids[sha] for i, sha in self.src.execute("SELECT id, sha256 FROM inspection_files")}
        for chunk in self._rows(
            "inspection_results",
            "SELECT key, file_id, seq, serial, part_number, machine, program, time, part_key, matched_by, note, data"
            " FROM inspection_results ORDER BY seq, rowid",
        ):
            self._write(
                "inspection_results",
                "INSERT INTO inspection_results (key, file_id, seq, serial, part_number, machine, program, time, part_key,"
                " matched_by, note, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                [(r[0], file_ids[int(r[1])], *r[2:]) for r in chunk],
            )
        for chunk in self._rows(
            "inspection_actuals",
            "SELECT key, results_key, file_id, position, characteristic, value, status, data"
            " FROM inspection_actuals ORDER BY rowid",
        ):
            self._write(
                "inspection_actuals",
                "INSERT INTO inspection_actuals (key, results_key, file_id, position, characteristic, value, status, data)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
                [(r[0], r[1], file_ids[int(r[2])], *r[3:]) for r in chunk],
            )

    def verify(self) -> None:
        """Count what of the source is not in the target: its parts, alerts, alert changes, actuals."""
        checks = {
            "parts": ("SELECT key FROM parts", "SELECT count(*) FROM parts WHERE key = ANY(%s)"),
            "alerts": ("SELECT id FROM alerts", "SELECT count(*) FROM alerts WHERE id = ANY(%s)"),
            "measurements": (
                "SELECT part_key || char(31) || signal FROM measurements",
                "SELECT count(*) FROM measurements WHERE part_key || chr(31) || signal = ANY(%s)",
            ),
        }
        if self._has("actions"):
            checks["actions"] = ("SELECT id FROM actions", "SELECT count(*) FROM actions WHERE id = ANY(%s)")
        if self._has("inspection_actuals"):
            checks["inspection_actuals"] = (
                "SELECT key FROM inspection_actuals",
                "SELECT count(*) FROM inspection_actuals WHERE key = ANY(%s)",
            )
        for table, (source_sql, target_sql) in checks.items():
            cursor = self.src.execute(source_sql)
            missing = 0
            while chunk := [r[0] for r in cursor.fetchmany(10_000)]:
                row = self.dst._query_one(target_sql, (chunk,))
                missing += len(chunk) - int(row[0] if row else 0)
            self.result.missing[table] = missing
        events = self.src.execute("SELECT alert_id, time, data FROM alert_events").fetchall()
        found = 0
        for i in range(0, len(events), 2000):
            chunk = events[i : i + 2000]
            row = self.dst._query_one(
                "SELECT count(*) FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) AS s (alert_id, time, data)"
                " WHERE EXISTS (SELECT 1 FROM alert_events e"
                " WHERE e.alert_id = s.alert_id AND e.time = s.time AND e.data = s.data)",
                ([a for a, _, _ in chunk], [_time(t) for _, t, _ in chunk], [d for _, _, d in chunk]),
            )
            found += int(row[0] if row else 0)
        self.result.missing["alert_events"] = len(events) - found
