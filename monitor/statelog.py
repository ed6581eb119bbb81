"""A state saved as what changed: the difference between two JSON-able states, and applying it.

The drift engine's state changes a little with every part: running sums and chart statistics
(scalars), and bounded windows of recent values that drop their oldest entries and append the
newest. Writing it whole after every part cost more than the detection itself (about 50 KB of JSON
per feature late in a batch); written as a difference it is a few hundred bytes.

:func:`diff` describes ``new`` against ``old`` in those terms and :func:`patch` applies it;
``patch(old, diff(old, new)) == new`` for any JSON-able values, compared as Python compares them
(a value whose type changed is written whole, but lists compare as Python compares them, so a list
entry ``1`` that became ``1.0`` stays ``1``; a window that changed in any other way than dropping and
appending is written whole, so nothing is approximated). A difference is
itself JSON-able: a dict of the keys that changed, each ``["=", value]`` (replaced or added),
``["-"]`` (removed), ``["d", {...}]`` (a nested dict's difference), ``["w", n, [...]]`` (a list that
dropped its first ``n`` entries and appended these) or ``["i", [[index, change], ...]]`` (a list of
the same length whose entries at these indexes changed, each change one of these forms).
Nested dicts compare as Python compares them too (a dict equal to the old one is unchanged).

The states compared must be fresh containers (a ``state()`` that returns its live internal list would
compare equal to itself): such a container is written whole. List entries must not be changed in
place after they were appended (windows are append-only); ``tests/test_state_log.py`` checks that
the engine's shares keep to it.

>>> old = {"n": 3, "values": [1.0, 2.0, 3.0], "fit": {"slope": 0.5, "sigma": 1.0}}
>>> new = {"n": 4, "values": [2.0, 3.0, 4.0], "fit": {"slope": 0.5, "sigma": 1.1}}
>>> delta = diff(old, new)
>>> delta
{'n': ['=', 4], 'values': ['w', 1, [4.0]], 'fit': ['d', {'sigma': ['=', 1.1]}]}
>>> patch(old, delta) == new
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["diff", "patch"]

_SHIFT_SCAN = 64
"""How far into the old list the start of the new one is looked for (a window drops a few entries at most)."""
_SCALARS = frozenset({float, int, str, bool, type(None)})
"""Types compared as values (``bool`` is its own type here, not an ``int``)."""
_CONTAINERS = (dict, list)
"""What a state holds by reference: the same object in both states may have changed in place."""
_ABSENT = object()
"""A key missing from the old state (None is a value)."""


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """What changed from ``old`` to ``new`` (both dicts); None when nothing did."""
    out: dict[str, Any] = {}
    found = old.get
    added = 0
    for key, value in new.items():
        before = found(key, _ABSENT)
        if value is before:  # most of a state (settings, counts, None): the same object as last time
            if type(value) not in _SCALARS and isinstance(value, _CONTAINERS):  # a live container: written whole
                out[key] = ["=", value]
            continue
        kind = type(value)
        if type(before) is not kind:  # a key added (``_ABSENT`` is no value's type) or a value of another type
            if before is _ABSENT:
                added += 1
            out[key] = ["=", value]
        elif kind in _SCALARS:  # :func:`_value`'s last case, without its tests
            if value != before:  # for these types exactly "not =="
                out[key] = ["=", value]
        elif kind is dict:  # a detector's state in a watch's: _value's case, without the call
            if value != before:  # compared in C first: most of a share (settings, a skipped feature's watch) is as it was
                nested = diff(before, value)
                if nested is not None:
                    out[key] = ["d", nested]
        elif kind is list:  # a window: _value's case, without the call
            if len(value) != len(before) or value != before:
                out[key] = _list(before, value)
        else:
            change = _value(before, value)
            if change is not None:
                out[key] = change
    if len(new) - added != len(old):  # every key of ``new`` not added was in ``old``: some of ``old``'s are gone
        for key in old:
            if key not in new:
                out[key] = ["-"]
    return out or None


def patch(old: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``old`` with ``delta`` applied (a new dict; ``old`` is left as it was)."""
    new = dict(old)
    for key, change in delta.items():
        if change[0] == "-":
            new.pop(key, None)
        else:
            new[key] = _apply(old.get(key), change)
    return new


def _apply(old: Any, change: list[Any]) -> Any:
    op = change[0]
    if op == "=":
        return change[1]
    if op == "d":
        return patch(old, change[1])
    if op == "w":
        return [*old[change[1] :], *change[2]]
    if op == "i":
        new = list(old)
        for index, item in change[1]:
            new[index] = _apply(old[index], item)
        return new
    raise ValueError(f"unknown state change {op!r}")


def _value(old: Any, new: Any) -> list[Any] | None:
    if new is old:  # the same object: unchanged, unless it is a (live) container
        return ["=", new] if isinstance(new, _CONTAINERS) else None
    if type(old) is not type(new):
        return ["=", new]
    if isinstance(new, dict):
        if new == old:  # compared in C: most of a share (settings, a skipped feature's watch) is as it was
            return None
        nested = diff(old, new)
        return None if nested is None else ["d", nested]
    if isinstance(new, list):
        if len(new) == len(old) and new == old:
            return None
        return _list(old, new)
    if new == old:
        return None
    return ["=", new]


def _list(old: list[Any], new: list[Any]) -> list[Any]:
    """The change of a list that is not equal to ``old`` (nor the same object)."""
    shift = _shift(old, new)
    if shift is not None:
        return ["w", shift, new[len(old) - shift :]]
    if len(new) == len(old):  # the same entries, some changed (one watch in a share, a fit's coefficients)
        items = []
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            change = _value(before, after)
            if change is not None:
                items.append([index, change])
        return ["i", items]
    return ["=", new]


def _shift(old: list[Any], new: list[Any]) -> int | None:
    """How many entries ``old`` dropped at its start so that ``new`` is the rest (at least one entry)
    plus an appended tail; None when ``new`` is not such a continuation."""
    if not old:
        return 0
    for n in range(min(len(old) - 1, _SHIFT_SCAN) + 1):
        kept = len(old) - n
        if kept <= len(new) and new[0] == old[n] and old[n:] == new[:kept]:
            return n
    return None
