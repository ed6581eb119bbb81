"""A real throwaway PostgreSQL cluster (Debian's ``postgresql``) for tests.

``initdb`` in a temp folder, a server that listens on a Unix socket in that folder only (no TCP
port to pick or race for), password authentication (scram-sha-256) so the store's "password from
the environment" is exercised for real, stopped (immediate) on exit whatever happened, even when
pytest is killed (SIGKILL) and runs no clean-up: a watchdog process (tests/servers/pg_watchdog.py)
stops it then. PostgreSQL refuses to run as root: as root (CI) the cluster runs as Debian's
``postgres`` user.

Each test gets a database of its own (:meth:`Cluster.new_database`), so one cluster serves a whole
test session.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.requires import missing

__all__ = ["PASSWORD", "USER", "Cluster", "pg_bin", "running_cluster"]

USER = "monitor"
PASSWORD = "s3cret-test-only"


def pg_bin() -> Path:
    """The folder of Debian's PostgreSQL server programs (the newest installed major version)."""
    root = Path("/usr/lib/postgresql")
    found = (
        sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()), key=lambda p: int(p.parent.name), reverse=True)
        if root.exists()
        else []
    )
    if not found:
        missing("PostgreSQL server is not installed (Debian package postgresql)")
    return found[0]


class Cluster:
    """One running cluster; ``url(database)`` is a connection URL without the password."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.folder = folder
        self.bin = bin_dir
        self.socket_dir = folder
        self.port = 5432  # only names the socket file (.s.PGSQL.5432); nothing listens on TCP
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psycopg (as the test user) and return the first column of the rows as text."""
        import psycopg

        with psycopg.connect(self.url(database), password=PASSWORD, autocommit=True) as conn:
            cur = conn.execute(sql)
            rows = cur.fetchall() if cur.description else []
        return "\n".join(str(r[0]) for r in rows)

    def new_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL will not run as root: run ``cmd`` as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", "postgres", "--", *cmd]


@contextmanager
def running_cluster(*, durable: bool = False) -> Iterator[Cluster]:
    """Start a cluster; yield it once it accepts connections; stop it and delete its files after.

    Tests run without fsync (nothing here survives the test anyway); ``durable`` keeps the
    server's defaults (fsync, synchronous_commit, full_page_writes on) for benchmarks."""
    bin_dir = pg_bin()
    folder = Path(tempfile.mkdtemp(prefix="pg-"))  # short: a socket path is limited to 107 bytes
    data = folder / "data"
    pwfile = folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no postgres user to run PostgreSQL as (Debian package postgresql)")
        os.chown(folder, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    log = folder / "server.log"
    cluster = Cluster(folder, bin_dir)
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    *([] if durable else ["--no-sync"]),
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
        options = f"-c listen_addresses='' -k {folder} -p {cluster.port} -c max_connections=200 -c shared_buffers=64MB"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]),
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{text[-2000:]}") from exc
    watchdog = _watchdog(folder, data, bin_dir)
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(
                _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                check=True,
                capture_output=True,
            )
        shutil.rmtree(folder, ignore_errors=True)
        _dismiss(watchdog)


def _watchdog(folder: Path, data: Path, bin_dir: Path) -> subprocess.Popen[str]:
    """Start the process that stops the cluster if this one dies first (see pg_watchdog.py): in a
    session of its own, reading a pipe whose writing end only this process holds."""
    script = Path(__file__).with_name("pg_watchdog.py")
    prefix = _as_postgres([])
    return subprocess.Popen(
        [sys.executable, str(script), str(folder), str(data), str(bin_dir / "pg_ctl"), *prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _dismiss(watchdog: subprocess.Popen[str]) -> None:
    """The cluster was stopped here: tell the watchdog it has nothing to do, and reap it."""
    assert watchdog.stdin is not None
    with contextlib.suppress(OSError):
        watchdog.stdin.write("done\n")
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout=30)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()
