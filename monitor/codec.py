"""JSON-able dicts of the domain objects, for the store, the spool, the sinks and ``--json``.

One codec for all of them so a part written to SQLite, spooled to disk for InfluxDB or printed by
the CLI reads the same everywhere, and survives versions (no pickle).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson

from monitor.model import (
    Action,
    ActionKind,
    Alert,
    AlertKind,
    AlertState,
    ConditionState,
    Observation,
    PartRecord,
    PartStatus,
    Register,
    Role,
    Severity,
    SpindleStats,
    ToolUse,
)
from monitor.registers import format_mm

__all__ = [
    "action_from_dict",
    "action_text",
    "action_to_dict",
    "alert_from_dict",
    "alert_to_dict",
    "dumps",
    "event_from_dict",
    "event_to_dict",
    "json_bytes",
    "json_safe",
    "loads",
    "observation_from_dict",
    "observation_to_dict",
    "orjson_bytes",
    "part_from_dict",
    "part_to_dict",
]


def _c_encoder() -> Any:
    """json's C encoder made once, as ``json.dumps`` makes it for every call (same settings), but
    without its check for circular containers (a circular state fails with RecursionError instead of
    ValueError); None where the C accelerator is missing."""
    from json.encoder import c_make_encoder  # type: ignore[attr-defined]  # private: json's own accelerator

    if c_make_encoder is None:
        return None
    default = json.JSONEncoder().default
    return c_make_encoder(None, default, encode_basestring_ascii, None, ": ", ", ", False, False, True)


_ENCODE = _c_encoder()
_FALLBACK = json.JSONEncoder(check_circular=False).encode


def dumps(obj: Any) -> str:
    """``obj`` as JSON text that reads back (``json.loads``) as the very value ``json.dumps(obj)``
    reads back as, for what the store writes with every part (its record, alert changes, engine
    state: about 15 KB a part, most of it floats).

    Written by orjson, compact and UTF-8: ``float.__repr__`` (which :mod:`json` calls for every
    float) took 1.5 us a float here, orjson's shortest round-trip floats 60 ns, so the same
    doubles read back. What orjson would write otherwise than :mod:`json` reads it goes through
    json's own C encoder instead, as ``json.dumps`` writes it: NaN and infinities (orjson writes
    null; looked for only when the text has a null), mapping keys that are not text, integers beyond
    64 bits, lone surrogates, subclasses of float and of str as keys; and what JSON has no type for
    fails there as in ``json.dumps`` (TypeError).

    >>> dumps({"a": [1.0, 1e-05, None], "b": "\u00e9"})
    '{"a":[1.0,0.00001,null],"b":"\u00e9"}'
    >>> value = {"a": [1.0, float("nan")], "b": None, 2: "\u00e9"}
    >>> dumps(value) == json.dumps(value)
    True
    """
    try:
        text = orjson.dumps(obj, option=_STORE_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        return _json_dumps(obj)
    if b"null" in text and not _finite(obj):
        return _json_dumps(obj)
    return text.decode()


_STORE_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
"""What :mod:`json` refuses, orjson refuses too (no default given: TypeError, then json's own)."""


def _json_dumps(obj: Any) -> str:
    """``json.dumps(obj)``, the very same text, with json's C encoder made once."""
    if _ENCODE is None:
        return _FALLBACK(obj)
    return "".join(_ENCODE(obj, 0))


def _finite(obj: Any) -> bool:
    """Whether no float in ``obj`` (the dicts, lists and tuples in it, subclasses too) is NaN or infinite."""
    if isinstance(obj, dict):
        obj = obj.values()
    elif not isinstance(obj, (list, tuple)):
        return not isinstance(obj, float) or bool(obj - obj == 0.0)
    for value in obj:
        kind = type(value)
        if kind is float:
            if value - value != 0.0:
                return False
        elif kind is not str and kind is not int and kind is not bool and value is not None and not _finite(value):
            return False
    return True


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, the very same value, parsed by orjson: the store reads every part's and
    alert's JSON through here (``json.loads`` took 18 us for a part's 700 bytes here, orjson 6 us).

    Both parse a number to the nearest double; what orjson reads otherwise than :mod:`json` goes
    to ``json.loads``: what it refuses (NaN and infinities, which :func:`dumps` writes as json does,
    numbers beyond float range, lone surrogates) and what it reads as another value: an integer
    beyond 64 bits, which it makes a float. Such an integer has 19 digits or more in a row, which
    a text is looked for first (2 us here; a float written with that many digits in a row, rare,
    is read by json too).

    >>> loads('{"a": [1.5, NaN], "n": 18446744073709551616}')
    {'a': [1.5, nan], 'n': 18446744073709551616}
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if _LONG_DIGITS in data.translate(_DIGIT_TABLE):
        return json.loads(text)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(text)


_DIGIT_TABLE = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
"""Every digit as ``0``, every other byte as a space."""
_LONG_DIGITS = b"0" * 19
"""The shortest integer orjson reads as a float (below -2**63 or from 2**64) has 19 digits."""


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None and mapping keys as text: JSON has no NaN,
    and browsers' ``JSON.parse`` and strict receivers refuse it. The one scrubber for every JSON we
    send (dashboard API and events, MQTT and webhook payloads).

    >>> json_safe({"a": [1.0, float("nan")], 2: (float("inf"), "x")})
    {'a': [1.0, None], '2': [None, 'x']}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _orjson_default(obj: Any) -> Any:
    """What orjson does not encode itself: a float subclass as its float, anything else as its text
    (what ``json.dumps(..., default=str)`` writes: a datetime as ``str()`` does, not RFC 3339)."""
    if isinstance(obj, float):
        return float(obj)
    return str(obj)


def orjson_bytes(obj: Any) -> bytes:
    """:func:`json_bytes` without its fallback: raises :class:`orjson.JSONEncodeError` for what
    orjson refuses (an integer beyond 64 bits), for a caller that keeps pieces of an answer and
    writes the whole answer through :func:`json_bytes` then."""
    return orjson.dumps(obj, default=_orjson_default, option=_ORJSON_OPTIONS)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON, scrubbed as :func:`json_safe` scrubs while it is encoded: NaN
    and infinities as null, mapping keys as text, numpy's numbers and arrays as numbers; what JSON
    has no type for as its ``str()``.

    The dashboard's answers go through here: orjson writes a 2,000-point feature chart in a fifth
    of the time ``json.dumps`` takes for the same values (shortest round-trip floats, as ``repr``),
    and needs no walk over every value for NaN first. A parsed answer equals
    ``json.loads(json.dumps(json_safe(obj), default=str))``. An integer beyond 64 bits, which orjson
    refuses, goes through :mod:`json`.

    >>> json_bytes({"a": [1.0, float("nan")], 2: (float("inf"), "x")})
    b'{"a":[1.0,null],"2":[null,"x"]}'
    """
    try:
        return orjson_bytes(obj)
    except orjson.JSONEncodeError:
        return json.dumps(json_safe(obj), allow_nan=False, default=str).encode()


def _t(value: datetime) -> str:
    return value.isoformat()


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def observation_to_dict(obs: Observation) -> dict[str, Any]:
    out = {"machine": obs.machine, "signal": obs.signal, "time": _t(obs.time), "value": obs.value, "seq": obs.source_seq}
    if obs.end is not None:
        out["end"] = _t(obs.end)
    return out


def observation_from_dict(d: dict[str, Any]) -> Observation:
    end = d.get("end")
    return Observation(d["machine"], d["signal"], _dt(d["time"]), d.get("value"), d.get("seq"), _dt(end) if end else None)


def part_to_dict(part: PartRecord) -> dict[str, Any]:
    return {
        "key": part.key,
        "machine": part.machine,
        "program": part.program,
        "part_number": part.part_number,
        "start": _t(part.start),
        "end": _t(part.end),
        "status": str(part.status),
        "measurements": dict(part.measurements),
        "missing": list(part.missing),
        "tools": [
            {"tool": t.tool, "life_start": t.life_start, "life_end": t.life_end, "cutting_time": t.cutting_time}
            for t in part.tools
        ],
        "spindle": {
            "mean_load": part.spindle.mean_load,
            "peak_load": part.spindle.peak_load,
            "cutting_time": part.spindle.cutting_time,
            "energy": part.spindle.energy,
        },
        "counter": part.counter,
        "notes": list(part.notes),
        "part_id": part.part_id,
        "flags": list(part.flags),
    }


def part_from_dict(d: dict[str, Any]) -> PartRecord:
    return PartRecord(
        key=d["key"],
        machine=d["machine"],
        program=d["program"],
        part_number=int(d["part_number"]),
        start=_dt(d["start"]),
        end=_dt(d["end"]),
        status=PartStatus(d["status"]),
        measurements={k: float(v) for k, v in d.get("measurements", {}).items()},
        missing=tuple(d.get("missing", ())),
        tools=tuple(ToolUse(**t) for t in d.get("tools", ())),
        spindle=SpindleStats(**d.get("spindle", {})),
        counter=d.get("counter"),
        notes=tuple(d.get("notes", ())),
        part_id=d.get("part_id"),
        flags=tuple(d.get("flags", ())),
    )


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "machine": alert.machine,
        "program": alert.program,
        "feature": alert.feature,
        "kind": str(alert.kind),
        "severity": str(alert.severity),
        "state": str(alert.state),
        "part_number": alert.part_number,
        "message": alert.message,
        "time": _t(alert.time),
        "evidence": alert.evidence,
        "part_key": alert.part_key,
        "condition": str(alert.condition) if alert.condition is not None else None,
        "last_part": alert.last_part,
    }


def alert_from_dict(d: dict[str, Any]) -> Alert:
    return Alert(
        id=d["id"],
        machine=d["machine"],
        program=d["program"],
        feature=d["feature"],
        kind=AlertKind(d["kind"]),
        severity=Severity(d["severity"]),
        state=AlertState(d["state"]),
        part_number=int(d["part_number"]),
        message=d["message"],
        time=_dt(d["time"]),
        evidence=dict(d.get("evidence") or {}),
        part_key=d.get("part_key"),
        condition=ConditionState(d["condition"]) if d.get("condition") else None,
        last_part=None if d.get("last_part") is None else int(d["last_part"]),
    )


def action_to_dict(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "time": _t(action.time),
        "kind": str(action.kind),
        "machine": action.machine,
        "program": action.program,
        "feature": action.feature,
        "user": action.user,
        "role": str(action.role),
        "source": action.source,
        "condition_id": action.condition_id,
        "part_number": action.part_number,
        "register": action.register.as_dict() if action.register is not None else None,
        "change": action.change,
        "old_value": action.old_value,
        "new_value": action.new_value,
        "tool": action.tool,
        "reason": action.reason,
        "comment": action.comment,
        "part_key": action.part_key,
    }


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def action_from_dict(d: dict[str, Any]) -> Action:
    reg = d.get("register")
    return Action(
        id=str(d["id"]),
        time=_dt(d["time"]),
        kind=ActionKind(d["kind"]),
        machine=d["machine"],
        program=d.get("program", ""),
        feature=d.get("feature", ""),
        user=d["user"],
        role=Role(d["role"]),
        source=d.get("source", "cli"),
        condition_id=d.get("condition_id"),
        part_number=None if d.get("part_number") is None else int(d["part_number"]),
        register=Register.from_dict(reg) if reg else None,
        change=_opt_float(d.get("change")),
        old_value=_opt_float(d.get("old_value")),
        new_value=_opt_float(d.get("new_value")),
        tool=d.get("tool"),
        reason=d.get("reason", ""),
        comment=d.get("comment", ""),
        part_key=d.get("part_key"),
    )


def event_to_dict(event: PartRecord | Alert | Observation) -> dict[str, Any]:
    """Tag the event with its type so a spool line can be read back without context."""
    if isinstance(event, PartRecord):
        return {"type": "part", **part_to_dict(event)}
    if isinstance(event, Alert):
        return {"type": "alert", **alert_to_dict(event)}
    return {"type": "observation", **observation_to_dict(event)}


def event_from_dict(d: dict[str, Any]) -> PartRecord | Alert | Observation:
    body = {k: v for k, v in d.items() if k != "type"}
    kind = d.get("type")
    if kind == "part":
        return part_from_dict(body)
    if kind == "alert":
        return alert_from_dict(body)
    if kind == "observation":
        return observation_from_dict(body)
    raise ValueError(f"unknown event type {kind!r}")


_ACTION_WORDS = {
    "part_quarantined": "part quarantined",
    "part_scrapped": "part scrapped",
    "part_reworked": "part reworked",
    "part_accepted": "part accepted on concession",
}
"""A part's disposition in words (the other kinds read as their names)."""


def action_text(action: Action) -> str:
    """One line a person reads: "offset applied: T12 D-wear -0.004 mm (old 0.010, new 0.006)"."""
    kind = _ACTION_WORDS.get(action.kind.value, action.kind.value.replace("_", " "))
    words: list[str] = []
    if action.register is not None and action.change is not None:
        words.append(f"{action.register.label} {format_mm(action.change)} mm")
    if action.old_value is not None and action.new_value is not None:
        words.append(f"(was {action.old_value:.4f}, now {action.new_value:.4f})")
    if action.tool and (action.register is None or action.register.tool != action.tool):
        words.append(f"tool {action.tool}")
    if action.kind.value in _ACTION_WORDS and action.part_number is not None:
        words.append(f"part {action.part_number}")
    extra = "; ".join(t for t in (action.reason, action.comment) if t)
    text = f"{kind}: {' '.join(words)}" if words else kind
    if extra:
        text += f"; {extra}" if words else f": {extra}"
    return text
