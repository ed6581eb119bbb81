"""Log set-up for the daemon: quiet by default, one line per event, text or JSON lines.

JSON lines suit journald/Loki/Elastic pipelines: every line has ``time``, ``level``, ``logger`` and
``message`` (and ``error`` with the exception text when there is one).

Under systemd (stderr is the journal's stream, ``$JOURNAL_STREAM``) each line starts with its
syslog priority (``<4>`` for a warning, sd-daemon(3)), so ``journalctl -p warning`` filters
and colours it; text lines then leave the time out, as the journal stamps every line itself.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["JournalPrefix", "JsonFormatter", "logs_to_journal", "setup_logging"]

_SYSLOG_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JsonFormatter(logging.Formatter):
    """One JSON object per log record."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class JournalPrefix(logging.Formatter):
    """Wraps a formatter and puts the record's syslog priority in front of every line, for journald."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).splitlines())


def logs_to_journal(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` (stderr) is connected to the journal: ``$JOURNAL_STREAM`` names its
    device and inode (systemd.exec(5)), so a redirected stderr is never mistaken for it."""
    env = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    try:
        device, inode = (int(part) for part in env.get("JOURNAL_STREAM", "").split(":"))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure the root logger once; ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler()
    journal = logs_to_journal()
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif journal:
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JournalPrefix(formatter) if journal else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # asyncua logs every reconnect attempt with a traceback at warning; our adapters say it once
    logging.getLogger("asyncua").setLevel(max(root.level, logging.ERROR))
