"""A real mosquitto broker for tests, listening on a Unix domain socket in a private folder.

Why a Unix socket: mosquitto 2.0 cannot bind TCP port 0 (``listener 0`` means "Unix socket"),
and guessing a free TCP port is racy. A socket file in a fresh temporary folder needs no port at
all, is private to the test, and a restart comes back at the same address with no race. The sink
reaches it through aiomqtt's ``transport="unix"``, which is a supported deployment too (a broker
on the same machine). The folder lives under /tmp with a short name because socket paths are
limited to 107 bytes.

``persistence true`` keeps sessions and queued QoS 1 messages across a restart (saved on SIGTERM),
so a persistent-session subscriber misses nothing while the broker is down.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.requires import need_binary

__all__ = ["BINARY", "Mosquitto", "running_mosquitto"]

BINARY = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """One mosquitto process with its own config, socket, persistence folder and log."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket_path = folder / "mqtt.sock"
        self.log_path = folder / "mosquitto.log"
        self.config_path = folder / "mosquitto.conf"
        self.config_path.write_text(
            "\n".join(
                [
                    f"user {getpass.getuser()}",  # as root, mosquitto would drop to 'mosquitto' and lose the folder
                    f"listener 0 {self.socket_path}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {folder}/",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "",
                ]
            )
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start and return once the log says the broker is running (its socket is then bound)."""
        assert not self.running
        self.starts += 1
        marker = "running"
        seen = self.log_path.read_text().count(marker) if self.log_path.exists() else 0
        self._proc = subprocess.Popen([BINARY, "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_text()[-2000:]}")
            if self.log_path.exists() and self.log_path.read_text().count(marker) > seen and self.socket_path.exists():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start: {self.log_text()[-2000:]}")
            time.sleep(0.01)  # polling a readiness condition, bounded by the deadline

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """SIGTERM (saves persistent sessions and their queued messages) and wait for the exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextmanager
def running_mosquitto() -> Iterator[Mosquitto]:
    """A started broker in a fresh folder, stopped and removed on exit whatever happened."""
    need_binary("mosquitto", "mosquitto")
    folder = Path(tempfile.mkdtemp(prefix="mq-", dir="/tmp"))
    broker = Mosquitto(folder)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
