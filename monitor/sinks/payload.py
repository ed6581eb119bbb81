"""The one JSON document that MQTT and webhooks carry for an alert state change.

One format for both outputs (documented in ``docs/notifications.md``) so a receiver written for
one works for the other. It is the store's own alert dict (:func:`monitor.codec.alert_to_dict`)
with three additions: ``schema`` (a version a receiver can check), ``site`` (which daemon sent
it) and ``text`` (a one-line human summary, so forwarding to a chat tool is a one-field mapping).
The document depends on the alert only, never on when it is sent, so a retried or replayed
delivery is byte-for-byte the same and a receiver can de-duplicate on ``(id, state, time)``.
"""

from __future__ import annotations

import json
from typing import Any

from monitor.codec import alert_to_dict, json_safe
from monitor.model import Alert

__all__ = ["SCHEMA", "alert_payload", "alert_text", "encode_payload", "topic_level"]

SCHEMA = "monitor.condition/1"
"""Bumped only when a field changes meaning or disappears; new fields may appear within a version.
``monitor.condition/1`` (issue 15): one document per condition state change, with ``condition`` and
``last_part``, the signals and the current ``advice`` in ``evidence``; ``monitor.alert/1`` had one
document per detector alert."""

_TEXT_LIMIT = 300


def alert_text(alert: Alert, site: str) -> str:
    """One line for a person: the condition (or severity), state, where, and the message (which ends
    with the action to take).

    Control characters are replaced by spaces so the line can never break a chat message or a log.

    >>> from datetime import UTC, datetime
    >>> from monitor.model import AlertKind, AlertState, Severity
    >>> a = Alert("a1", "vmc-01", "O1234", "hole1_pos", AlertKind.FORECAST, Severity.WARNING, AlertState.OPEN,
    ...           41, "hole1_pos drifting +X 1.8 um/part\\nbreaks in ~16 parts", datetime(2026, 1, 1, tzinfo=UTC))
    >>> alert_text(a, "cell-3")
    'WARNING open: cell-3/vmc-01 O1234 hole1_pos part 41: hole1_pos drifting +X 1.8 um/part breaks in ~16 parts'
    """
    where = " ".join(x for x in (f"{site}/{alert.machine}", alert.program, alert.feature) if x)
    level = alert.condition.value.replace("_", " ") if alert.condition is not None else alert.severity.value
    head = f"{level.upper()} {alert.state.value}: {where}"
    line = f"{head} part {alert.part_number}: {alert.message}"
    line = "".join(c if c.isprintable() else " " for c in line)
    return line if len(line) <= _TEXT_LIMIT else line[: _TEXT_LIMIT - 3] + "..."


def alert_payload(alert: Alert, site: str) -> dict[str, Any]:
    """The document for one alert change: ``schema``, ``site``, ``text`` and every alert field."""
    return {"schema": SCHEMA, "site": site, "text": alert_text(alert, site), **json_safe(alert_to_dict(alert))}


def encode_payload(payload: dict[str, Any]) -> bytes:
    """UTF-8 JSON, compact, keys in a fixed order: the exact bytes that are signed and sent."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str).encode()


def topic_level(name: str) -> str:
    """A machine or feature id made safe as one MQTT topic level.

    ``/`` would split the level and ``+``/``#`` are wildcards a publisher may not use; they and
    control characters become ``_``; an empty name becomes ``_``.

    >>> topic_level("cell/1+#"), topic_level("")
    ('cell_1__', '_')
    """
    out = "".join("_" if c in "/+#" or not c.isprintable() else c for c in name)
    return out or "_"
