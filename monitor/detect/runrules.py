"""Individuals chart with a configurable subset of the Western Electric / Nelson run rules."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.detect.base import check_finite, check_range, register
from monitor.errors import DetectionError

__all__ = ["RULE_TEXT", "RunRules", "RunRulesResult"]

RULE_TEXT: dict[int, str] = {
    1: "one part beyond the control limit",
    2: "nine parts in a row on one side of nominal",
    3: "six parts in a row steadily rising or falling",
    5: "two of three parts beyond 2 sigma on one side",
    6: "four of five parts beyond 1 sigma on one side",
}
"""Nelson's numbering (L. S. Nelson, JQT 16(4), 1984); 1, 5 and 6 are Western Electric rules 1-3."""


@dataclass(frozen=True, slots=True)
class RunRulesResult:
    """Which rules fired on this value (empty tuple: none) and on which side (+1 up, -1 down)."""

    n: int
    z: float
    fired: tuple[int, ...]
    direction: int
    skipped: bool = False

    @property
    def alarm(self) -> bool:
        return bool(self.fired)


@register("runrules")
class RunRules:
    """Run rules on standardized individuals ``z = (x - target) / sigma``.

    Parameters: ``rules``, a subset of Nelson rules {1, 2, 3, 5, 6}; ``limit``, the rule-1 limit in
    sigmas (3 for the classic chart; the engine widens it so rule 1 fits the program's ARL budget);
    ``target``; ``sigma`` > 0. NaN or infinite values are skipped (state unchanged, ``skipped``).
    Each extra rule shortens the in-control ARL (all four WE rules together: about 92 parts).

    References: Western Electric, *Statistical Quality Control Handbook*, 1956; L. S. Nelson,
    "The Shewhart control chart - tests for special causes", JQT 16(4), 1984, pp. 237-239.

    >>> chart = RunRules(rules=(1, 2), limit=3.0)
    >>> data = [0.3, 0.5, 0.2, 0.9, 0.4, 0.1, 0.6, 0.8, 0.3]
    >>> [(r.n, r.fired) for r in map(chart.update, data) if r.alarm]   # nine above nominal
    [(9, (2,))]
    """

    def __init__(self, rules: Iterable[int] = (1,), limit: float = 3.0, target: float = 0.0, sigma: float = 1.0) -> None:
        chosen = tuple(sorted(set(rules)))
        unknown = sorted(set(chosen) - set(RULE_TEXT))
        if unknown:
            raise DetectionError(f"unknown run rule(s) {unknown}; choose from {sorted(RULE_TEXT)}")
        self.rules = chosen
        self.limit = check_range("limit", limit, 0.0, lo_open=True)
        self.target = check_range("target", target)
        self.sigma = check_range("sigma", sigma, 0.0, lo_open=True)
        self._recent: deque[float] = deque(maxlen=9)
        self._n = 0

    def reset(self) -> None:
        self._recent.clear()
        self._n = 0

    def update(self, x: float) -> RunRulesResult:
        if not check_finite(x):
            return RunRulesResult(self._n, float("nan"), (), 0, True)
        z = (float(x) - self.target) / self.sigma
        self._n += 1
        self._recent.append(z)
        fired: list[int] = []
        direction = 0
        r = list(self._recent)
        for rule in self.rules:
            side = _check_rule(rule, r, self.limit)
            if side:
                fired.append(rule)
                direction = direction or side
        return RunRulesResult(self._n, z, tuple(fired), direction)

    def state(self) -> dict[str, Any]:
        return {
            "rules": list(self.rules),
            "limit": self.limit,
            "target": self.target,
            "sigma": self.sigma,
            "recent": list(self._recent),
            "n": self._n,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunRules:
        obj = cls(state["rules"], state["limit"], state["target"], state["sigma"])
        obj._recent.extend(float(v) for v in state["recent"])
        obj._n = int(state["n"])
        return obj


def _check_rule(rule: int, r: list[float], limit: float) -> int:
    """+1 / -1 when ``rule`` fires on the latest values ``r`` (oldest first), else 0."""
    last = r[-1]
    if rule == 1:
        return 1 if last > limit else -1 if last < -limit else 0
    if rule == 2 and len(r) >= 9:
        tail = r[-9:]
        return 1 if all(v > 0 for v in tail) else -1 if all(v < 0 for v in tail) else 0
    if rule == 3 and len(r) >= 6:
        tail = r[-6:]
        diffs = [b - a for a, b in itertools.pairwise(tail)]
        return 1 if all(d > 0 for d in diffs) else -1 if all(d < 0 for d in diffs) else 0
    if rule == 5 and len(r) >= 3:
        return _k_of_n_beyond(r[-3:], 2, 2.0)
    if rule == 6 and len(r) >= 5:
        return _k_of_n_beyond(r[-5:], 4, 1.0)
    return 0


def _k_of_n_beyond(tail: Sequence[float], k: int, z: float) -> int:
    """+1/-1 when at least ``k`` of ``tail`` (the last one included) lie beyond +z / -z sigma, else 0."""
    last = tail[-1]
    if sum(v > z for v in tail) >= k and last > z:
        return 1
    if sum(v < -z for v in tail) >= k and last < -z:
        return -1
    return 0
