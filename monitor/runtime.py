"""How the command line finds the running daemon of a site: the store lock and the runtime file.

- ``<store>.lock`` is held (an exclusive ``flock``) by the daemon's core for its whole life, from
  before it reads the alerts people changed while it was down until after its last write. It is
  the one truth of "a daemon owns this store": a crashed daemon's lock is released by the kernel,
  so no stale state can lie. A second daemon on the same store waits a moment, then refuses to
  start; a command that changes alert state while no daemon runs takes the lock for the length of
  its write, so a daemon cannot start half-way through it and miss it.
- ``<store>.daemon.json`` says where the running daemon listens: its local control API (always)
  and its dashboard (when enabled), with the control API's per-run token. Written when the daemon
  is ready, removed when it stops, readable by its user only (mode 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

from monitor.errors import MonitorError

__all__ = ["RuntimeInfo", "StoreLock", "lock_file", "read_runtime", "remove_runtime", "runtime_file", "write_runtime"]


def runtime_file(store_path: Path) -> Path:
    """Where a running daemon of the store at ``store_path`` says who it is and where it listens."""
    return store_path.with_name(store_path.name + ".daemon.json")


def lock_file(store_path: Path) -> Path:
    """The lock a daemon holds on the store at ``store_path`` while it runs."""
    return store_path.with_name(store_path.name + ".lock")


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """The running daemon, as its runtime file tells it."""

    pid: int
    started: str
    control_url: str
    control_token: str
    dashboard_url: str | None = None
    lease_owner: str | None = None
    """Its name in a shared store's lease table (None with a SQLite store): whose machines are its own."""


def write_runtime(store_path: Path, info: RuntimeInfo) -> None:
    """Write the runtime file whole or not at all, readable by this user only (it holds the control token)."""
    path = runtime_file(store_path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(info), f)
        tmp.replace(path)
    except OSError:
        # whole or not at all (a full disk): no torn file, and no older daemon's file to follow
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        raise


def read_runtime(store_path: Path) -> RuntimeInfo | None:
    """The runtime file's contents; None when there is none (no daemon ready) or it is unreadable."""
    try:
        body = json.loads(runtime_file(store_path).read_text(encoding="utf-8"))
        return RuntimeInfo(
            pid=int(body["pid"]),
            started=str(body["started"]),
            control_url=str(body["control_url"]),
            control_token=str(body["control_token"]),
            dashboard_url=body.get("dashboard_url") if isinstance(body.get("dashboard_url"), str) else None,
            lease_owner=body.get("lease_owner") if isinstance(body.get("lease_owner"), str) else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_runtime(store_path: Path) -> None:
    runtime_file(store_path).unlink(missing_ok=True)


class StoreLock:
    """The exclusive lock that says a daemon owns a store (see the module docstring).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> first, second = StoreLock(folder / "m.db"), StoreLock(folder / "m.db")
    >>> first.try_acquire(), second.try_acquire()
    (True, False)
    >>> first.release(); second.try_acquire()
    True
    >>> second.release()
    """

    def __init__(self, store_path: Path) -> None:
        self.path = lock_file(store_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def acquire(self, timeout_s: float, *, poll_s: float = 0.05) -> None:
        """Take the lock, waiting up to ``timeout_s`` for a short holder (a command's write) to finish.

        Blocking: call it off the event loop. Raises MonitorError when another daemon holds it."""
        deadline = time.monotonic() + timeout_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise MonitorError(
                    f"another monitor daemon is running on {self.path.with_suffix('')} (it holds {self.path}); "
                    "stop it first, or give this site its own store.path"
                )
            time.sleep(poll_s)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
