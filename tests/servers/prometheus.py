"""A real Prometheus server (Debian's ``prometheus``) for tests: scrapes what it is told to, answers
PromQL on its HTTP API. Listens on 127.0.0.1 at a port the kernel picks (learnt from /proc, as for
victoria-metrics), keeps its data in the test's folder, and is stopped on exit whatever happened."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.requires import need_binary
from tests.servers.victoria import _listening_port

__all__ = ["Prometheus", "running_prometheus"]


class Prometheus:
    """One Prometheus process scraping ``targets`` (host:port) every ``interval_ms`` at ``/metrics``."""

    def __init__(self, binary: str, folder: Path, targets: list[str], *, job: str, interval_ms: int = 500) -> None:
        self.folder = folder
        config = {
            "global": {"scrape_interval": f"{interval_ms}ms", "evaluation_interval": f"{interval_ms}ms"},
            "scrape_configs": [{"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}],
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._log = (folder / "prometheus.log").open("ab")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.port: int | None = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.folder / 'prometheus.log').read_text()[-2000:]}")
            port = _listening_port(self._proc.pid)
            if port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                        if r.status == 200:
                            self.port = port
                            return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready")
            time.sleep(0.05)  # polling a readiness condition, bounded by the deadline

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


@contextmanager
def running_prometheus(folder: Path, targets: list[str], *, job: str = "cnc-monitor") -> Iterator[Prometheus]:
    binary = need_binary("prometheus", "prometheus")
    server = Prometheus(binary, folder, targets, job=job)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
