"""The service manager's notification protocol against a real unix datagram socket standing in
for systemd's ``$NOTIFY_SOCKET``: readiness, status, watchdog pings from the daemon's own event
loop (none while the loop is blocked), stopping; and the real ``monitor run`` process speaking it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor.logs import logs_to_journal
from monitor.service.notify import Notifier
from tests.streams import batch, write_jsonl, write_site

ROOT = Path(__file__).resolve().parents[2]


class FakeManager:
    """The receiving end of the notify protocol: a bound AF_UNIX/SOCK_DGRAM socket, as systemd's."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address

    def receive(self, timeout_s: float = 30.0) -> list[str]:
        """The next datagram's ``KEY=VALUE`` lines (blocks up to ``timeout_s``)."""
        self.sock.settimeout(timeout_s)
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> list[list[str]]:
        """Every datagram already queued, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)

    def until(self, key: str, timeout_s: float = 60.0) -> tuple[list[str], list[list[str]]]:
        """Datagrams up to the first that has ``key``: (that one, those before it)."""
        deadline = time.monotonic() + timeout_s
        before: list[list[str]] = []
        while True:
            lines = self.receive(max(0.1, deadline - time.monotonic()))
            if any(line.startswith(key) for line in lines):
                return lines, before
            before.append(lines)


@contextmanager
def fake_manager(abstract: bool = False) -> Iterator[FakeManager]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"cnc-monitor-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        try:
            yield FakeManager(sock, "@" + name)
        finally:
            sock.close()
        return
    # a short folder: unix socket paths are limited to 107 bytes
    with tempfile.TemporaryDirectory(prefix="notify-", dir="/tmp") as folder:
        path = os.path.join(folder, "notify")
        sock.bind(path)
        try:
            yield FakeManager(sock, path)
        finally:
            sock.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_states_reach_the_manager(abstract: bool) -> None:
    with fake_manager(abstract) as manager:
        notifier = Notifier(manager.address)
        assert notifier.ready("2/2 machines connected,\n 0 parts")
        assert manager.receive() == ["READY=1", "STATUS=2/2 machines connected, 0 parts"]  # one line, always
        assert notifier.reloading()
        assert manager.receive() == ["RELOADING=1"]
        assert notifier.stopping("flushing")
        assert manager.receive() == ["STOPPING=1", "STATUS=flushing"]
        notifier.close()
        assert notifier.sent == 3


def test_without_a_manager_nothing_is_sent_and_nothing_breaks(tmp_path: Path) -> None:
    assert not Notifier(None).ready()
    gone = Notifier(str(tmp_path / "no-such-socket"))  # systemd restarted, socket vanished
    assert gone.enabled
    assert not gone.ready() and not gone.watchdog()
    assert gone.dropped == 2
    gone.close()
    assert not Notifier("vsock:2:1234").enabled  # not a unix address: refused with a log line, not an error


def test_environment_is_read_as_sd_watchdog_enabled_reads_it() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_environ(env, consume=True)
    assert notifier.enabled and notifier.watchdog_interval_s == 10.0
    assert env == {}  # consumed: a child process never notifies in our name
    other = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"})
    assert other.enabled and other.watchdog_interval_s is None  # the watchdog is another process's
    assert Notifier.from_environ({"WATCHDOG_USEC": "junk", "NOTIFY_SOCKET": "/x"}).watchdog_interval_s is None


async def test_watchdog_pings_come_from_the_loop_and_stop_while_it_is_blocked() -> None:
    with fake_manager() as manager:
        notifier = Notifier(manager.address, watchdog_usec=40_000)  # pings every 20 ms
        task = asyncio.create_task(notifier.keep_alive(lambda: "all well", status_every_s=3600))
        try:
            first = await asyncio.to_thread(manager.receive)
            assert first == ["WATCHDOG=1", "STATUS=all well"]
            assert await asyncio.to_thread(manager.receive) == ["WATCHDOG=1"]
            # a hung loop: a synchronous call that does not return. Nothing can ping meanwhile.
            manager.pending()
            sent = notifier.sent
            time.sleep(0.3)  # noqa: ASYNC251 - the loop is blocked on purpose: this is the hang under test
            assert notifier.sent == sent and manager.pending() == []
            # the loop runs again: so do the pings
            assert await asyncio.to_thread(manager.receive) == ["WATCHDOG=1"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            notifier.close()


def test_monitor_run_speaks_the_protocol_and_logs_for_the_journal(tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(3))
    site = write_site(tmp_path, replay)
    log_path = tmp_path / "stderr.log"
    with fake_manager() as manager, log_path.open("wb") as log:
        info = os.fstat(log.fileno())
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NOTIFY_SOCKET": manager.address,
            "WATCHDOG_USEC": "200000",
            "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "-c", str(site), "--log-level", "info"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
        try:
            ready, before = manager.until("READY=1")
            assert before == []  # nothing before readiness
            status = [line for line in ready if line.startswith("STATUS=")]
            assert status and "machines connected" in status[0], ready
            pings = 0
            while pings < 3:
                pings += manager.receive().count("WATCHDOG=1")
            proc.send_signal(signal.SIGTERM)
            stopping, _ = manager.until("STOPPING=1")
            assert any(line.startswith("STATUS=stopping") for line in stopping)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    logged = [line for line in lines if line.startswith("<")]
    assert any(line.startswith("<6>INFO monitor.daemon: daemon stopped") for line in logged), lines
    assert all(line[:3] in ("<7>", "<6>", "<4>", "<3>", "<2>") for line in logged)


def test_journal_is_recognised_only_by_its_own_stream(tmp_path: Path) -> None:
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        info = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert logs_to_journal(a, env)
        assert not logs_to_journal(b, env)  # stderr redirected elsewhere by a child: not the journal
        assert not logs_to_journal(a, {})
