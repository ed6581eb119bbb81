"""Two-sided EWMA chart on individual values with limits from a target ARL."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.detect.arl import ewma_limit
from monitor.detect.base import check_finite, check_range, register

__all__ = ["Ewma", "EwmaResult"]


@dataclass(frozen=True, slots=True)
class EwmaResult:
    """The EWMA after one value: statistic and limits in the units of the input."""

    n: int
    statistic: float
    lower: float
    upper: float
    alarm: bool
    skipped: bool = False

    @property
    def direction(self) -> int:
        """+1 above the upper limit, -1 below the lower limit, 0 inside."""
        return 1 if self.statistic > self.upper else -1 if self.statistic < self.lower else 0


@register("ewma")
class Ewma:
    """Exponentially weighted moving average ``Z_t = (1-lam) Z_{t-1} + lam x_t``, started at ``target``.

    The limits are ``target +- L sigma sqrt(lam/(2-lam))`` (asymptotic, fixed from the first
    value); ``L`` is ``limit`` when given, otherwise solved so that the in-control ARL is ``arl0``
    (Markov chain of Lucas & Saccucci 1990, see :mod:`monitor.detect.arl`). Small ``lam`` catches
    small sustained shifts; ``lam = 1`` is a Shewhart individuals chart.

    Parameters: ``lam`` in (0, 1]; ``limit`` (L, > 0) or ``arl0`` (> 1); ``target`` and ``sigma``
    (> 0) standardize the input. NaN or infinite values are skipped (state unchanged, ``skipped``).

    Reference: J. M. Lucas and M. S. Saccucci, "Exponentially weighted moving average control
    schemes", Technometrics 32(1), 1990, pp. 1-12.

    >>> chart = Ewma(lam=0.2, arl0=500)
    >>> data = [0.1, -0.3, 0.2, 0.0, 1.5, 1.2, 1.6, 1.4, 1.3, 1.5, 1.4]
    >>> [r.n for r in map(chart.update, data) if r.alarm][:1]   # a 1.4-sigma shift from part 5
    [10]
    """

    def __init__(
        self, lam: float = 0.2, limit: float | None = None, arl0: float = 500.0, target: float = 0.0, sigma: float = 1.0
    ) -> None:
        self.lam = check_range("lam", lam, 0.0, 1.0, lo_open=True)
        self.arl0 = check_range("arl0", arl0, 1.0, lo_open=True)
        self.limit = check_range("limit", limit, 0.0, lo_open=True) if limit is not None else None
        self.target = check_range("target", target)
        self.sigma = check_range("sigma", sigma, 0.0, lo_open=True)
        self.L = self.limit if self.limit is not None else ewma_limit(self.lam, self.arl0)
        self._half_width = self.L * self.sigma * math.sqrt(self.lam / (2.0 - self.lam))
        self._z = self.target
        self._n = 0

    def reset(self) -> None:
        self._z = self.target
        self._n = 0

    def update(self, x: float) -> EwmaResult:
        if check_finite(x):
            self._n += 1
            self._z = (1.0 - self.lam) * self._z + self.lam * float(x)
            skipped = False
        else:
            skipped = True
        lo, hi = self.target - self._half_width, self.target + self._half_width
        alarm = not skipped and not lo <= self._z <= hi
        return EwmaResult(self._n, self._z, lo, hi, alarm, skipped)

    def state(self) -> dict[str, Any]:
        return {
            "lam": self.lam,
            "limit": self.limit,
            "arl0": self.arl0,
            "target": self.target,
            "sigma": self.sigma,
            "z": self._z,
            "n": self._n,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ewma:
        obj = cls(state["lam"], state["limit"], state["arl0"], state["target"], state["sigma"])
        obj._z, obj._n = float(state["z"]), int(state["n"])
        return obj
