"""What only the PostgreSQL store has: a password only from the environment, a lost connection that
is retryable and reconnects, readers that cannot write, alert history numbered in commit order."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from monitor.acknowledge import WRITTEN_TO_STORE, acknowledge_alert
from monitor.config import load_site
from monitor.dburl import redact
from monitor.errors import ConfigError, MonitorError, StoreError
from monitor.model import ActionKind, AlertState
from monitor.store import open_store
from monitor.store.lease import MachineLease
from monitor.store.postgres import PostgresStore
from tests.servers.postgres import Cluster, pg_bin
from tests.test_store import alert, part

ROOT = Path(__file__).resolve().parents[1]


def test_the_password_comes_from_the_environment_only(pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with open_store(pg_url) as store:  # PGPASSWORD is set by the fixture
        assert store.record_part(part(1))
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StoreError, match="PGPASSWORD") as info:
        open_store(pg_url)
    assert not info.value.retryable
    site = tmp_path / "site.yaml"
    with_password = pg_url.replace("monitor@", "monitor:hunter22@")
    site.write_text(yaml.safe_dump({"site": "c1", "store": {"url": with_password}, "machines": []}))
    with pytest.raises(ConfigError, match="carries a password") as config_error:
        load_site(site)
    assert "hunter22" not in str(config_error.value)
    assert "hunter22" not in redact(with_password)


def test_a_lost_connection_is_retryable_and_the_next_write_reconnects(pg_url: str, pg_cluster: Cluster) -> None:
    with PostgresStore(pg_url) as store:
        assert store.record_part(part(1))
        database = urlsplit(pg_url).path.lstrip("/")
        killed = pg_cluster.psql(  # waits until the store's server process is gone
            f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = '{database}'"
            " AND pid <> pg_backend_pid()"
        )
        assert killed == "True"
        with pytest.raises(StoreError) as info:
            store.record_part(part(2), [alert(2)])
        assert info.value.retryable and "reachable" in str(info.value)
        assert store.record_part(part(2), [alert(2)])  # the held write, retried: a new connection
        assert [p.part_number for p in store.parts()] == [1, 2]
        assert [a.part_number for _, a in store.alert_events()] == [2]


def test_readers_cannot_write_and_an_empty_database_says_what_to_do(pg_url: str) -> None:
    with pytest.raises(StoreError, match="holds no monitor store yet"):
        open_store(pg_url, read_only=True)
    open_store(pg_url).close()
    with open_store(pg_url, read_only=True) as reader:
        assert reader.parts() == []
        with pytest.raises(StoreError, match="read-only"):
            reader.record_part(part(1))


async def test_ack_without_a_daemon_holds_the_machines_lease_and_refuses_a_machine_owned_elsewhere(
    pg_url: str, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    (tmp_path / "programs").mkdir()
    site.write_text(yaml.safe_dump({"site": "cell-1", "store": {"url": pg_url}, "machines": []}))
    with open_store(pg_url) as store:
        store.record_alerts([alert(1)])
    elsewhere = MachineLease(pg_url, ["m1"], cell="cell-2", ttl_s=30.0)
    assert elsewhere.try_acquire()
    try:
        with pytest.raises(MonitorError, match=f"watched by {elsewhere.owner} \\(cell cell-2\\)"):
            await acknowledge_alert(site, alert(1).id, wait_s=0.2)
    finally:
        elsewhere.release()
    changed, how = await acknowledge_alert(site, alert(1).id, comment="seen")
    assert changed.alert is not None and changed.alert.state is AlertState.ACKNOWLEDGED and how == WRITTEN_TO_STORE
    with open_store(pg_url, read_only=True) as store:
        assert [a.state for _, a in store.alert_events()] == [AlertState.OPEN, AlertState.ACKNOWLEDGED]
        (done,) = store.actions(condition_id=alert(1).id)  # who did it is recorded with it (issue 15)
        assert (done.kind, done.comment, done.source) == (ActionKind.ACKNOWLEDGE, "seen", "store")


def test_a_killed_test_process_leaves_no_cluster_running() -> None:
    """A pytest killed with SIGKILL runs no fixture clean-up: the cluster's watchdog stops it and
    deletes its folder (tests/servers/pg_watchdog.py), so no test cluster outlives its test run."""
    pg_bin()  # skips (or fails under CI) naming the Debian package when PostgreSQL is absent
    code = (
        "import sys\n"
        "from tests.servers.postgres import running_cluster\n"
        "with running_cluster() as cluster:\n"
        "    print(cluster.folder, flush=True)\n"
        "    sys.stdin.read()\n"  # until killed
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            folder = Path(proc.stdout.readline().strip())
            pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
            assert _running(pid)
        finally:
            proc.kill()  # SIGKILL: the with block's clean-up never runs
    deadline = time.monotonic() + 60
    while folder.exists() and time.monotonic() < deadline:  # the watchdog deletes it after pg_ctl stop -w
        time.sleep(0.05)
    assert not folder.exists(), f"{folder} is still there: the watchdog did not stop the cluster"
    assert not _running(pid)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by init, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
