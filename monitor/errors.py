"""One exception hierarchy for the whole product.

Every error the monitor raises on purpose derives from :class:`MonitorError`, so the CLI and the
daemon can catch one type at their boundary and print a message that says what to do::

    MonitorError
    ├── ConfigError          a site or program file is wrong (file:line key.path: expected ...)
    ├── AdapterError         a controller could not be read
    │   ├── ConnectError     the endpoint refused, timed out, or rejected our credentials
    │   └── BadDocument      the controller sent something we cannot parse (malformed, hostile)
    ├── InspectionError      a CMM or gauge result file (QIF, CSV) is missing, hostile, malformed or invalid
    ├── StoreError           the embedded SQLite store could not be opened, migrated or written
    ├── SinkError            an output (InfluxDB, MQTT, webhook) refused or failed a write
    ├── OffsetRefused        an offset write to a controller was refused; the register is as it was
    ├── DetectionError       a detector was configured with values it cannot work with
    └── ActionError          a person's action cannot be done (unknown condition or feature, bad register)
        └── NotAllowed       the user's role may not do it, or no user could be identified

Library exceptions are translated at one boundary with ``raise ... from exc`` so the cause is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ActionError",
    "AdapterError",
    "BadDocument",
    "ConfigError",
    "ConfigIssue",
    "ConnectError",
    "DetectionError",
    "InspectionError",
    "MonitorError",
    "NotAllowed",
    "OffsetRefused",
    "SinkError",
    "StoreError",
]


class MonitorError(Exception):
    """Root of every error the monitor raises deliberately; catch this at a boundary."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one config file, located precisely enough to fix without searching."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.key}" if self.key else ""
        return f"{where}{key}: {self.message}"


class ConfigError(MonitorError):
    """Raised when a site or program file cannot be loaded; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid configuration")


class AdapterError(MonitorError):
    """Raised when a machine's controller cannot be read; the adapter usually retries by itself."""


class ConnectError(AdapterError):
    """Raised when an endpoint cannot be reached or refuses us; check the address, network and credentials."""


class BadDocument(AdapterError):
    """Raised when a controller sends data we refuse to interpret: malformed, truncated or hostile XML."""


class InspectionError(MonitorError):
    """Raised when an inspection result file cannot be imported: it is missing or unreadable,
    hostile (DTD, entities), malformed, not valid against its schema, or names a plan that cannot
    be found. The message names the file and the reason; nothing of the file is stored."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class StoreError(MonitorError):
    """Raised when the SQLite store cannot be opened, migrated or written; check the path and disk space.

    ``retryable`` is true when the same write can succeed later without changing anything in the
    monitor: the disk is full, the file system is read-only or failing, another process holds a lock.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class SinkError(MonitorError):
    """Raised when an output refuses a write; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class DetectionError(MonitorError):
    """Raised when detection settings cannot work (for example an ARL target no limit reaches)."""


class OffsetRefused(MonitorError):
    """Raised when an offset is not written to the controller: a limit, a running part, stale advice,
    an insecure connection, a user without write rights, a register that moved since it was read, or
    a value read back that differs from the one written.

    ``reason`` is a short code for records and scripts (``limit``, ``batch_limit``, ``running``,
    ``stale``, ``insecure``, ``denied``, ``moved``, ``readback``, ``unknown_register``,
    ``unreachable``). ``restored`` is False only when a failed write could not be undone: the
    register then needs a person at the control (the message says which value it holds).
    """

    def __init__(self, reason: str, message: str, *, restored: bool = True, register_value: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.restored = restored
        self.register_value = register_value


class ActionError(MonitorError):
    """A person's action cannot be recorded as asked: no such condition, feature or register, a value
    that is not a number. The message says what was wrong and how to list what exists."""


class NotAllowed(ActionError):
    """The user may not do this: their role does not allow it, their token is unknown, or the site
    names users and none was identified (set MONITOR_TOKEN or send the user's bearer token)."""
