"""The service manager's notification protocol (sd_notify(3)), spoken over ``$NOTIFY_SOCKET``.

Why our own ~100 lines instead of a library: the protocol is one datagram of ``KEY=VALUE`` lines
sent to a unix socket whose address systemd puts in the environment, and the Python bindings that
implement it either need a C build against libsystemd (``systemd-python``) or are unmaintained
and untyped. What matters is done here: path and abstract (``@``) addresses, never blocking the
event loop (a full socket buffer drops one datagram, which systemd tolerates), never raising into
the daemon (a vanished socket is logged once), and the watchdog settings read from
``$WATCHDOG_USEC`` / ``$WATCHDOG_PID`` exactly as ``sd_watchdog_enabled(3)`` reads them.

The daemon keeps the watchdog alive from a task of its own event loop
(:meth:`Notifier.keep_alive`), so a loop that hangs stops the pings and systemd restarts the
service (``WatchdogSec=`` in the unit, ``Restart=on-failure``).

>>> Notifier.from_environ({}).enabled
False
>>> n = Notifier.from_environ({"NOTIFY_SOCKET": "@monitor-test", "WATCHDOG_USEC": "30000000"})
>>> n.enabled, n.watchdog_interval_s
(True, 15.0)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Mapping, MutableMapping

__all__ = ["ENV_KEYS", "Notifier"]

log = logging.getLogger(__name__)

ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""What systemd sets for a ``Type=notify`` service with a watchdog; consumed so children never see it."""


class Notifier:
    """Sends state changes to the service manager; a no-op when not started by one.

    Parameters: ``address`` is ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
    namespace; None disables everything); ``watchdog_usec`` the watchdog timeout systemd expects
    pings within (None: no watchdog). Pings go out at half the timeout, as sd_watchdog_enabled(3)
    recommends.
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise ValueError("watchdog_usec must be positive")
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.sent = 0
        self.dropped = 0
        self._target: str | bytes | None = None
        if address:
            try:
                self._target = _socket_address(address)
            except ValueError as exc:
                log.warning("%s; not notifying the service manager", exc)
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, consume: bool = False) -> Notifier:
        """Read ``$NOTIFY_SOCKET`` and the watchdog settings; ``consume`` removes them from
        ``environ`` (os.environ by default) so a child process never notifies in our name."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or (pid.isdigit() and int(pid) == os.getpid())):
            watchdog = int(usec)
        if consume and isinstance(env, MutableMapping):
            for key in ENV_KEYS:
                env.pop(key, None)
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (``Type=notify``)."""
        return self._target is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between watchdog pings (half of ``WatchdogSec=``), or None without a watchdog."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True when it was handed to the socket.

        Never blocks and never raises: a full buffer drops the datagram (counted), a missing or
        refusing socket is logged once and counted."""
        if self._target is None or not lines:
            return False
        payload = "\n".join(lines).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._target)
        except OSError as exc:
            self.dropped += 1
            if exc.errno != errno.EAGAIN and not self._failed:
                self._failed = True
                log.warning("cannot notify the service manager at %s: %s (further failures are counted)", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup finished: systemd marks the unit active and starts the watchdog clock."""
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload started (ExecReload / SIGHUP); follow with :meth:`ready` when it is done."""
        return self.notify("RELOADING=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown started: flushing parts, sinks and the store."""
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """The one line ``systemctl status`` shows."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.notify("WATCHDOG=1")

    async def keep_alive(self, status: Callable[[], str] | None = None, *, status_every_s: float = 60.0) -> None:
        """Ping the watchdog at half its timeout, from this event loop, until cancelled.

        A ping is sent only when this coroutine gets to run, so a blocked loop (a stuck callback,
        a synchronous call that never returns) stops the pings and systemd restarts the service.
        ``status`` (when given) is sent every ``status_every_s`` for ``systemctl status``."""
        interval = self.watchdog_interval_s
        if not self.enabled or (interval is None and status is None):
            return
        period = min(interval or status_every_s, status_every_s)
        loop = asyncio.get_running_loop()
        next_status = loop.time()
        while True:
            lines = ["WATCHDOG=1"] if interval is not None else []
            if status is not None and loop.time() >= next_status:
                next_status = loop.time() + status_every_s
                lines += _status(status())
            self.notify(*lines)
            await asyncio.sleep(period)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _status(text: str | None) -> list[str]:
    return [] if text is None else ["STATUS=" + " ".join(text.split())]


def _socket_address(address: str) -> str | bytes:
    """``@name`` is Linux's abstract namespace (a leading NUL byte); anything else a path.

    >>> _socket_address("@abc"), _socket_address("/run/systemd/notify")
    (b'\\x00abc', '/run/systemd/notify')
    """
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    if not address.startswith("/"):
        raise ValueError(f"NOTIFY_SOCKET={address!r}: expected an absolute path or @name (vsock is not supported)")
    return address
