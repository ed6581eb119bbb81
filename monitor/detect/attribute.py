"""Go/no-go features: parts that pass and fail, and the proportion that fails with its interval."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.detect.base import check_finite, check_range, register
from monitor.detect.distributions import norm_ppf

__all__ = ["AttributeCount", "AttributeResult", "wilson_interval"]


def wilson_interval(fails: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``fails / n``: sensible at 0 of 40 (unlike the normal
    approximation, which gives 0 to 0). E. B. Wilson, "Probable inference, the law of succession,
    and statistical inference", JASA 22 (1927), pp. 209-212.

    >>> [round(x, 4) for x in wilson_interval(0, 40)]
    [0.0, 0.0876]
    """
    if n <= 0:
        return 0.0, 1.0
    z = -norm_ppf((1.0 - confidence) / 2.0)
    p = fails / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class AttributeResult:
    """Parts checked (``n``) and failed, the failing proportion with its Wilson interval, and
    whether this part failed."""

    n: int
    fails: int
    proportion: float
    lo: float
    hi: float
    failed: bool
    skipped: bool = False


@register("attribute")
class AttributeCount:
    """Counts a go/no-go feature's parts: ``update(1.0)`` a pass (any non-zero value), ``update(0.0)``
    a fail; the proportion failing with its ``confidence`` Wilson interval (see
    :func:`wilson_interval`). NaN and infinite values are skipped.

    A small batch shows few failures, so the interval says what the batch proves: 0 fails in 40
    parts is a failing rate below 8.8% (95%), not "zero". Every fail is an out-of-tolerance part;
    the engine raises that alert.

    >>> count = AttributeCount()
    >>> r = [count.update(x) for x in [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]][-1]
    >>> r.n, r.fails, round(r.proportion, 2), r.failed
    (10, 1, 0.1, False)
    """

    def __init__(self, confidence: float = 0.95) -> None:
        self.confidence = check_range("confidence", confidence, 0, 1, lo_open=True, hi_open=True)
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._fails = 0

    def _result(self, failed: bool, skipped: bool = False) -> AttributeResult:
        lo, hi = wilson_interval(self._fails, self._n, self.confidence)
        p = self._fails / self._n if self._n else 0.0
        return AttributeResult(self._n, self._fails, p, lo, hi, failed, skipped)

    def result(self) -> AttributeResult:
        return self._result(False)

    def update(self, x: float) -> AttributeResult:
        if not check_finite(x):
            return self._result(False, skipped=True)
        self._n += 1
        failed = float(x) == 0.0
        self._fails += int(failed)
        return self._result(failed)

    def state(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "n": self._n, "fails": self._fails}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AttributeCount:
        obj = cls(float(state["confidence"]))
        obj._n, obj._fails = int(state["n"]), int(state["fails"])
        return obj
