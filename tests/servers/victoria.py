"""A real victoria-metrics server for tests: accepts the InfluxDB v2 write API, exports what it stored.

How the port is learnt: victoria-metrics accepts ``-httpListenAddr=127.0.0.1:0`` but its log only
repeats ``:0``; it never says which port the kernel gave it. So we ask the kernel: the listening
TCP socket among the server process's own file descriptors (``/proc/<pid>/fd`` ->
``socket:[inode]`` -> ``/proc/<pid>/net/tcp``). That is the port the server actually bound, with
no race and no guessed free port. A restart (fault tests) must come back on the *same* address
the sink was configured with, so it binds that port explicitly; the port was released a moment
before by the stopped server (Go listeners set SO_REUSEADDR), which is the narrowest workaround
available.

Flags: ``-search.latencyOffset=0s`` and ``/internal/force_flush`` before each export make fresh
points exportable at once; deduplication is left *off* by default so a duplicate write would show
as two samples in the export (``dedup=True`` turns on ``-dedup.minScrapeInterval=1ms``, which keeps
one sample per series and millisecond, as InfluxDB keeps one point per series and timestamp).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.requires import need_binary

__all__ = ["VictoriaMetrics", "running_victoria"]

BINARY = "victoria-metrics"


def _listening_port(pid: int) -> int | None:
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
        with open(f"/proc/{pid}/net/tcp", encoding="ascii") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        cols = row.split()
        if cols[3] == "0A" and cols[9] in inodes:  # state LISTEN, one of our sockets
            return int(cols[1].rsplit(":", 1)[1], 16)
    return None


class VictoriaMetrics:
    """One victoria-metrics process on 127.0.0.1 with its own data directory."""

    def __init__(self, data_dir: Path, *, dedup: bool = False) -> None:
        self.data_dir = data_dir
        self.dedup = dedup
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def url(self) -> str:
        assert self.port is not None, "server never started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout_s: float = 15.0) -> None:
        """Start (or restart on the same port) and return once it answers ``/health``."""
        assert not self.running
        args = [
            BINARY,
            f"-httpListenAddr=127.0.0.1:{self.port or 0}",
            f"-storageDataPath={self.data_dir}",
            "-search.latencyOffset=0s",
            "-retentionPeriod=100y",  # test data may carry fixed dates far in the past
            "-search.disableCache",
            "-loggerLevel=ERROR",
            "-retentionPeriod=100y",  # parts replayed from months ago must not be dropped as too old
        ]
        if self.dedup:
            args.append("-dedup.minScrapeInterval=1ms")
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited: {self._log_path.read_text()[-2000:]}")
            port = _listening_port(self._proc.pid)
            if port is not None and self._healthy(port):
                self.port = port
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("victoria-metrics did not become ready")
            time.sleep(0.02)  # polling a readiness condition, bounded by the deadline

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, *, timeout_s: float = 15.0) -> None:
        """Stop the process (SIGTERM: graceful, flushes what it acknowledged) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every stored series matching ``match``: ``{"metric": {...}, "values": [...], "timestamps": [...]}``."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10) as r:
            r.read()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as r:
            return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


@contextmanager
def running_victoria(data_dir: Path, *, dedup: bool = False) -> Iterator[VictoriaMetrics]:
    """Context manager (and fixture body): a started server, stopped on exit whatever happened."""
    need_binary(BINARY, "victoria-metrics")
    server = VictoriaMetrics(data_dir, dedup=dedup)
    server.start()
    try:
        yield server
    finally:
        server.stop()
