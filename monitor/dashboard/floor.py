"""The shop-floor screen's data: per machine one card a person reads from three metres.

A card says how the machine stands (a light: green, amber or red, always with its word), the one
condition that matters most now (its feature, parts left, the action to take and the offset in the
machine's register), the others behind it, and who did what last. It is computed from the store on
the core's thread, from the same rows the alert list shows (:func:`monitor.queries.alert_row`), so the
card and ``monitor alerts`` never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitor.model import Alert, AlertKind, AlertState, ConditionState, Severity
from monitor.queries import action_row, alert_row

if TYPE_CHECKING:
    from monitor.config import Site
    from monitor.store import StoreReader

__all__ = ["LIGHTS", "floor_cards", "light_of"]

LIGHTS = ("green", "amber", "red")
"""green: nothing to do; amber: watch it or act soon; red: act now (out of tolerance, critical, or blind)."""

_RED_LEVELS = {ConditionState.OUT_OF_TOLERANCE, ConditionState.CRITICAL}
_WORDS = {
    "red": "ACT NOW",
    "amber": "WATCH",
    "green": "OK",
}


def _rank(alert: Alert) -> tuple[int, int, int, str]:
    """Worst first: level, then not yet acknowledged, then the latest part, then the latest change."""
    if alert.condition is not None:
        level = alert.condition.rank
    elif alert.kind is AlertKind.SIGNAL_LOST:
        level = ConditionState.CRITICAL.rank  # the monitor is blind: as urgent as a critical drift
    else:
        level = {Severity.WATCH: 2, Severity.WARNING: 3, Severity.CRITICAL: 4}[alert.severity]
    return (level, alert.state is AlertState.OPEN, alert.last_part or alert.part_number, alert.time.isoformat())


def light_of(alerts: list[Alert], signal_lost: bool) -> str:
    """The machine's light from its living conditions and machine alerts."""
    if signal_lost or any(a.kind is AlertKind.SIGNAL_LOST for a in alerts):
        return "red"
    if any(a.condition in _RED_LEVELS or (a.condition is None and a.severity is Severity.CRITICAL) for a in alerts):
        return "red"
    return "amber" if alerts else "green"


def _entry(alert: Alert, acknowledged_by: str | None) -> dict[str, Any]:
    row = alert_row(alert)
    advice = alert.evidence.get("advice") if isinstance(alert.evidence.get("advice"), dict) else {}
    assert isinstance(advice, dict)
    action = advice.get("action")
    if not action:  # a machine alert (signal lost, incomplete part): its message says what happened
        action = alert.message
    return {
        "id": alert.id,
        "program": alert.program,
        "feature": alert.feature,
        "level": row["level"],
        "state": row["state"],
        "parts": row["parts"],
        "parts_left": advice.get("parts_left"),
        "action": action,
        "offset": advice.get("text") or None,
        "offsets": advice.get("offsets") or [],  # per register: what "offset applied" records
        "tool": alert.evidence.get("tool"),
        "last_part": alert.last_part,
        "message": alert.message,
        "acknowledged_by": acknowledged_by,
    }


def floor_cards(site: Site, machines: list[dict[str, Any]], store: StoreReader) -> list[dict[str, Any]]:
    """One card per configured machine (``machines``: the rows of
    :func:`monitor.dashboard.api.machines_snapshot`), worst condition first inside each card."""
    living = store.alerts(open_only=True)
    by_machine: dict[str, list[Alert]] = {}
    for alert in living:
        by_machine.setdefault(alert.machine, []).append(alert)
    cards = []
    for m in machines:
        machine = m["machine"]
        alerts = sorted(by_machine.get(machine, []), key=_rank, reverse=True)
        light = light_of(alerts, bool(m.get("signal_lost")))
        actions = store.actions(machine=machine, last=20)
        acked: dict[str, str] = {}
        for action in actions:  # oldest first: the latest acknowledgement wins
            if action.condition_id is not None and action.kind.value == "acknowledge":
                acked[action.condition_id] = action.user
        conditions = [_entry(a, acked.get(a.id)) for a in alerts]
        last = actions[-1] if actions else None
        cards.append(
            {
                "machine": machine,
                "kind": m.get("kind"),
                "program": m.get("program"),
                "connection": m.get("connection"),
                "signal_lost": bool(m.get("signal_lost")),
                "parts": m.get("parts", 0),
                "last_part_end": m.get("last_part_end"),
                "light": light,
                "word": "SIGNAL LOST" if m.get("signal_lost") else _WORDS[light],
                "top": conditions[0] if conditions else None,
                "others": conditions[1:],
                "last_action": action_row(last) if last is not None else None,
                "writable": any(getattr(e, "offsets", None) is not None for e in site.config.machines if e.id == machine),
            }
        )
    return cards
