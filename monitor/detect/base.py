"""What every detector shares: the contract, the registry the contract tests walk, and state helpers.

A detector is a small pure object: hyper-parameters are ``__init__`` arguments (validated there,
stored under the same names), ``update(x)`` returns a frozen result, ``reset()`` restores the
start, and ``state()``/``from_state()`` round-trip through JSON. NaN and infinite inputs are
skipped: the state is unchanged and the result says ``skipped=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

from monitor.errors import DetectionError

__all__ = ["REGISTRY", "Detector", "DetectorResult", "check_finite", "check_range", "register"]


@runtime_checkable
class DetectorResult(Protocol):
    """What every detector's ``update`` returns: a frozen result that knows how many values the
    detector has taken and whether this one was skipped (NaN or infinite)."""

    @property
    def n(self) -> int: ...

    @property
    def skipped(self) -> bool: ...


_R_co = TypeVar("_R_co", bound=DetectorResult, covariant=True)


class Detector(Protocol[_R_co]):
    """The contract every registered detector follows: ``update`` returns its own frozen result type."""

    def update(self, x: float) -> _R_co: ...

    def reset(self) -> None: ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self: ...


REGISTRY: dict[str, type[Any]] = {}
"""Detector classes by short name; the contract test suite runs over every entry."""

_T = TypeVar("_T")


def register(name: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator adding a detector to :data:`REGISTRY`."""

    def deco(cls: type[_T]) -> type[_T]:
        REGISTRY[name] = cls
        return cls

    return deco


def check_range(
    name: str, value: float, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    """Validate one hyper-parameter; raises DetectionError naming it and the allowed range."""
    ok = math.isfinite(value) or (value == hi == math.inf)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise DetectionError(f"{name} must lie in {lb}{lo}, {hi}{rb}; got {value}")
    return float(value)


def check_finite(x: float) -> bool:
    """True when ``x`` is a usable number (not NaN, not infinite)."""
    return isinstance(x, (int, float)) and math.isfinite(x)
