"""One owner per machine in a shared PostgreSQL store: leases with a heartbeat and a generation.

A daemon holds the lease of every machine of its site, all or none (a standby started with the
same site file waits for all of them). A lease is a row ``machine_leases(machine, cell, owner,
generation, heartbeat, expires, info)``:

- **taking** it (:meth:`MachineLease.try_acquire`) is allowed when the row is free, expired by the
  *server's* clock, or already ours; it bumps the generation. The rows are read ``FOR UPDATE``, so
  a takeover waits for any write of the old owner that is in flight (those read their lease row
  ``FOR SHARE``: see :class:`monitor.store.postgres.Fence`) and every later write of the old owner
  finds a newer generation and is refused: no two writers for one machine, even for a moment;
- **holding** it (:meth:`MachineLease.renew`, every ``ttl / 3``) moves ``expires`` to the server's
  now + ttl. The owner also keeps a deadline of its own (:attr:`MachineLease.valid_for_s`), counted
  from the moment it *sent* its last successful renewal, which is never later than the server's:
  when a network cut keeps it from renewing, it knows it lost the lease before any standby can
  take it, without asking the server (which it cannot reach);
- **releasing** it (a clean stop) expires it at once, so a standby takes over without waiting.

Only the server's clock decides expiry: the daemons' clocks need not agree. The same table names
each machine's cell and owning daemon with its health (``info``): the plant view reads it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitor.dburl import check_url, redact
from monitor.errors import MonitorError, StoreError
from monitor.store.postgres import Fence, _with_defaults, pg_error

if TYPE_CHECKING:
    import psycopg

__all__ = ["LEASE_SCHEMA", "Holder", "LeaseLost", "MachineLease", "daemon_id", "lease_holders", "take_lease"]

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS machine_leases (
    machine TEXT PRIMARY KEY,
    cell TEXT NOT NULL,
    owner TEXT NOT NULL,
    generation BIGINT NOT NULL,
    acquired TIMESTAMPTZ NOT NULL,
    heartbeat TIMESTAMPTZ NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
)
"""
_LEASE_LOCK = 0x6D6F6E04
"""Advisory transaction lock around taking leases: two standbys take a cell's machines one at a time."""

log = logging.getLogger(__name__)


class LeaseLost(MonitorError):
    """This daemon no longer holds its machines (it could not renew in time, or another took them)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a machine's lease now (what a waiting standby logs, what the plant view shows)."""

    machine: str
    cell: str
    owner: str
    generation: int
    heartbeat: datetime
    live: bool
    info: dict[str, Any]


def daemon_id() -> str:
    """This daemon's name in the lease table: host, pid and a random part (a pid is reused after a reboot)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class MachineLease:
    """The leases of one daemon's machines, on a connection of their own (a heartbeat never waits
    behind a part's transaction). Blocking calls: run them off the event loop."""

    def __init__(self, url: str, machines: list[str], *, cell: str, ttl_s: float, owner: str | None = None) -> None:
        self.url = check_url(url)
        self.machines = sorted(set(machines))
        self.cell = cell
        self.ttl_s = ttl_s
        self.owner = owner or daemon_id()
        self.fence = Fence(self.owner)
        self.info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
        self.holders: list[Holder] = []
        """Who held the machines at the last refused :meth:`try_acquire`."""
        self.acquired_at: float | None = None
        self._valid_until: float | None = None
        self._lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None

    # ------------------------------------------------------------------ connection
    def _conn(self) -> psycopg.Connection[Any]:
        import psycopg

        db = self._db
        if db is not None and not db.closed and not db.broken:
            return db
        try:
            # a statement that cannot get its row lock or an answer in time fails instead of hanging
            timeout_ms = int(self.ttl_s * 1000)
            db = psycopg.connect(
                _with_defaults(self.url),
                autocommit=True,
                options=f"-c lock_timeout={timeout_ms} -c statement_timeout={timeout_ms}",
            )
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_LEASE_LOCK,))
                db.execute(LEASE_SCHEMA)
        except psycopg.Error as exc:
            raise pg_error(self.url, "cannot reach the store for the machines' leases", exc) from exc
        self._db = db
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ---------------------------------------------------------------------- taking
    def try_acquire(self) -> bool:
        """Take every machine's lease if none is held by another live daemon; never waits for one.
        On success :attr:`fence` carries the new generations."""
        import psycopg

        started = time.monotonic()
        with self._lock:
            db = self._conn()
            try:
                with db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_LEASE_LOCK,))
                    rows = db.execute(
                        "SELECT machine, cell, owner, generation, heartbeat, expires > now(), info FROM machine_leases"
                        " WHERE machine = ANY(%s) ORDER BY machine FOR UPDATE",
                        (self.machines,),
                    ).fetchall()
                    holders = [Holder(r[0], r[1], r[2], int(r[3]), r[4], bool(r[5]), json.loads(r[6])) for r in rows]
                    if any(h.live and h.owner != self.owner for h in holders):
                        self.holders = holders
                        return False
                    got = db.execute(
                        "INSERT INTO machine_leases (machine, cell, owner, generation, acquired, heartbeat, expires, info)"
                        " SELECT m, %s, %s, 1, now(), now(), now() + make_interval(secs => %s), %s FROM unnest(%s::text[]) m"
                        " ON CONFLICT (machine) DO UPDATE SET cell = excluded.cell, owner = excluded.owner,"
                        " generation = machine_leases.generation + 1, acquired = now(), heartbeat = now(),"
                        " expires = excluded.expires, info = excluded.info"
                        " RETURNING machine, generation",
                        (self.cell, self.owner, self.ttl_s, json.dumps(self.info), self.machines),
                    ).fetchall()
            except psycopg.Error as exc:
                raise pg_error(self.url, "cannot take the machines' leases", exc) from exc
        self.fence.generations = {m: int(g) for m, g in got}
        self.fence.lost.clear()
        self._valid_until = started + self.ttl_s
        self.acquired_at = time.monotonic()
        self.holders = []
        return True

    def waiting_for(self) -> str:
        """Who this standby waits for, in words (for its log)."""
        live = [h for h in self.holders if h.live and h.owner != self.owner]
        if not live:
            return "nobody"
        owners = sorted({f"{h.owner} (cell {h.cell})" for h in live})
        return f"{', '.join(owners)} holding {', '.join(h.machine for h in live)}"

    # --------------------------------------------------------------------- holding
    def renew(self, info: dict[str, Any] | None = None) -> None:
        """Move the leases' expiry on (the heartbeat), with the daemon's health in ``info``; raises
        LeaseLost when another daemon holds one of them now, StoreError when the server cannot be
        reached (the caller keeps trying until :attr:`valid_for_s` runs out)."""
        import psycopg

        if info is not None:
            self.info = {**self.info, **info}
        started = time.monotonic()
        with self._lock:
            db = self._conn()
            try:
                rows = db.execute(
                    "UPDATE machine_leases SET heartbeat = now(), expires = now() + make_interval(secs => %s), info = %s"
                    " FROM unnest(%s::text[], %s::bigint[]) AS f (machine, generation)"
                    " WHERE machine_leases.machine = f.machine AND machine_leases.generation = f.generation"
                    " AND machine_leases.owner = %s RETURNING machine_leases.machine",
                    (
                        self.ttl_s,
                        json.dumps(self.info, default=str),
                        self.machines,
                        [self.fence.generations.get(m, -1) for m in self.machines],
                        self.owner,
                    ),
                ).fetchall()
            except psycopg.Error as exc:
                raise pg_error(self.url, "cannot renew the machines' leases", exc) from exc
        held = {r[0] for r in rows}
        lost = [m for m in self.machines if m not in held]
        if lost:
            self.lose(lost)
            raise LeaseLost(f"another daemon took {', '.join(lost)} over (this daemon, {self.owner}, stops writing for them)")
        self._valid_until = started + self.ttl_s

    @property
    def valid_for_s(self) -> float:
        """How much longer the leases are surely ours by this daemon's own clock (0 when not held)."""
        if self._valid_until is None or self.fence.lost:
            return 0.0
        return max(0.0, self._valid_until - time.monotonic())

    def lose(self, machines: list[str] | None = None) -> None:
        """Stop writing for ``machines`` (all by default) at once, without asking the server."""
        self.fence.lost.update(machines or self.machines)
        self._valid_until = None

    def release(self) -> None:
        """Give the leases up (a clean stop): they expire now, so a standby takes over at once."""
        import psycopg

        held = self.fence.generations
        self.lose()
        try:
            with self._lock:
                if held:
                    self._conn().execute(
                        "UPDATE machine_leases SET expires = now()"
                        " FROM unnest(%s::text[], %s::bigint[]) AS f (machine, generation)"
                        " WHERE machine_leases.machine = f.machine AND machine_leases.generation = f.generation"
                        " AND machine_leases.owner = %s",
                        (list(held), list(held.values()), self.owner),
                    )
        except (psycopg.Error, StoreError) as exc:  # the lease then expires by itself
            log.warning("could not release the machines' leases (%s); a standby takes over when they expire", exc)
        finally:
            self.close()


def lease_holders(url: str) -> list[Holder]:
    """Every machine's lease as it stands (the plant view): cell, owner, health, live or not."""
    import psycopg

    try:
        with psycopg.connect(_with_defaults(url), autocommit=True) as db:
            if not db.execute("SELECT to_regclass('machine_leases') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
                return []
            rows = db.execute(
                "SELECT machine, cell, owner, generation, heartbeat, expires > now(), info FROM machine_leases"
                " ORDER BY cell, machine"
            ).fetchall()
    except psycopg.Error as exc:
        raise pg_error(url, f"cannot read the machines' leases ({redact(url)})", exc) from exc
    return [Holder(r[0], r[1], r[2], int(r[3]), r[4], bool(r[5]), json.loads(r[6])) for r in rows]


def take_lease(lease: MachineLease, timeout_s: float, *, poll_s: float = 0.2) -> None:
    """Take ``lease`` within ``timeout_s`` or raise MonitorError naming who holds the machines
    (blocking: for tests and commands; a daemon waits as a standby instead)."""
    deadline = time.monotonic() + timeout_s
    while not lease.try_acquire():
        if time.monotonic() >= deadline:
            raise MonitorError(
                f"the machines of cell {lease.cell} are held by {lease.waiting_for()}; "
                "stop that daemon first, or start this one as a standby (`monitor run` waits for them)"
            )
        time.sleep(poll_s)
