"""Log set-up for the daemon: quiet by default, one line per event, text or JSON lines.

JSON lines suit journald/Loki/Elastic pipelines: every line has ``time``, ``level``, ``logger`` and
``message`` (and ``error`` with the exception text when there is one).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "setup_logging"]


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


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure the root logger once; ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # asyncua logs every reconnect attempt with a traceback at warning; our adapters say it once
    logging.getLogger("asyncua").setLevel(max(root.level, logging.ERROR))
