"""Attribution of a drift: which process signal moves with it, and the offset that re-centres it."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.detect.base import check_finite, check_range, register
from monitor.detect.config import OffsetKind

__all__ = ["COVARIATES", "Attribution", "AttributionResult", "OffsetSuggestion", "shift_from_offset", "suggest_offset"]

COVARIATES: dict[str, str] = {
    "tool_life": "tool life",
    "cutting_time": "cutting time",
    "spindle_load": "spindle load",
    "warmup": "time since warm-up",
}
"""Covariates the engine extracts from part records, with the words used in alert messages.
Ties are broken in this order: tool wear is the most common cause of gradual drift."""


@dataclass(frozen=True, slots=True)
class AttributionResult:
    """Pearson r of the deviation with each covariate over the window, and the best if strong enough."""

    n: int
    correlations: dict[str, float]
    cause: str | None
    r: float | None
    skipped: bool = False


@register("attribution")
class Attribution:
    """Correlates a feature's deviation with covariates (tool life, cutting time, load, warm-up).

    ``update(x, covariates)`` keeps the last ``window`` pairs; a covariate is correlated over the
    parts where it is known (at least ``min_parts``, not constant). The cause named is the
    covariate with the largest |r| if it reaches ``min_r``; covariates within 0.05 of the
    largest count as tied and the first in COVARIATES order wins. Correlation is evidence, not proof: a
    linear drift correlates with anything monotone in time, hence the tie order in COVARIATES.
    NaN or infinite ``x`` is skipped (``skipped``); non-finite covariates count as unknown.

    >>> at = Attribution(min_r=0.9)
    >>> res = [at.update(0.001 * i + 0.0002 * (-1) ** i, {"tool_life": 100.0 - i, "spindle_load": 40.0})
    ...        for i in range(10)]
    >>> res[-1].cause, round(res[-1].r, 3)
    ('tool_life', -0.998)
    """

    def __init__(self, window: int = 30, min_r: float = 0.7, min_parts: int = 8) -> None:
        self.window = int(check_range("window", window, 3, 100_000))
        self.min_r = check_range("min_r", min_r, 0.0, 1.0)
        self.min_parts = int(check_range("min_parts", min_parts, 3, 100_000))
        self._rows: deque[list[Any]] = deque(maxlen=self.window)
        """``[x, covariates]`` per part, as :meth:`state` saves them (never changed once appended)."""
        self._n = 0
        self._last: AttributionResult | None = None
        self._xs: deque[float] = deque(maxlen=self.window)
        self._columns: dict[str, deque[float]] | None = None
        """The rows by column (``_xs`` the values) while every row has the same covariates (the usual
        case), kept as parts arrive; None when they differ or are not built yet (:meth:`_uniform`)."""

    def reset(self) -> None:
        self._rows.clear()
        self._n = 0
        self._last = None
        self._columns = None

    def update(self, x: float, covariates: Mapping[str, float | None] | None = None) -> AttributionResult:
        if not check_finite(x):
            return self._result(skipped=True)
        self.add(x, covariates)
        return self.last

    def add(self, x: float, covariates: Mapping[str, float | None] | None = None) -> None:
        """Store one part without computing correlations (the engine asks :attr:`last` only when it alerts)."""
        if not check_finite(x):
            return
        cov = {k: float(v) for k, v in (covariates or {}).items() if v is not None and check_finite(v)}
        self._rows.append([float(x), cov])
        self._n += 1
        self._last = None
        columns = self._columns
        if columns is not None and cov.keys() == columns.keys():
            self._xs.append(float(x))
            for name, v in cov.items():
                columns[name].append(v)
        else:
            self._columns = None  # rebuilt from the rows when every row has the same covariates again

    @property
    def last(self) -> AttributionResult:
        """The result of the latest update (recomputed after a restore)."""
        if self._last is None:
            self._last = self._result()
        return self._last

    def _uniform(self) -> dict[str, deque[float]] | None:
        """The columns of the rows when every row has the same covariates (built once, then kept by
        :meth:`add`), else None."""
        if self._columns is None:
            covs = [c for _, c in self._rows]
            keys = covs[0].keys() if covs else {}.keys()
            if not all(c.keys() == keys for c in covs):
                return None
            self._xs = deque((x for x, _ in self._rows), maxlen=self.window)
            self._columns = {name: deque((c[name] for c in covs), maxlen=self.window) for name in keys}
        return self._columns

    def _result(self, skipped: bool = False) -> AttributionResult:
        rows = self._rows
        uniform = self._uniform()
        corr: dict[str, float]
        if uniform is not None:  # the usual case: every part has the same covariates
            corr = self._compiled(_order(uniform), uniform)
        else:
            mixed: dict[str, list[float]] = {}
            for _, c in rows:
                for name, v in c.items():
                    column = mixed.get(name)
                    if column is None:
                        mixed[name] = [v]
                    else:
                        column.append(v)
            corr = {}
            every: _Centred | None = None  # the values' side, shared by covariates every row has
            for name in _order(mixed):
                ys = mixed[name]
                if len(ys) < self.min_parts:
                    continue
                if len(ys) == len(rows):
                    if every is None:
                        every = _Centred([x for x, _ in rows])
                    xs = every
                else:
                    xs = _Centred([x for x, c in rows if name in c])
                r = xs.pearson(ys)
                if r is not None:
                    corr[name] = r
        strongest = max((abs(r) for r in corr.values()), default=0.0)
        cause = None
        if strongest >= self.min_r:
            # near-ties (within 0.05) go to the covariate listed first: monotone signals all track a drift
            cause = next(n for n, r in corr.items() if abs(r) >= strongest - 0.05)
        return AttributionResult(self._n, corr, cause, corr[cause] if cause else None, skipped)

    def _compiled(self, names: list[str], columns: Mapping[str, deque[float]]) -> dict[str, float]:
        """The correlations when every row has every covariate, by the compiled loop
        (:func:`monitor.detect.kernels.correlations`): the doubles :class:`_Centred` gives, in about
        a tenth of its time (a feature's attribution is asked for on every part it signals). The
        engine fits trends already, so numba is loaded by then."""
        n = len(self._xs)
        if not names or n < self.min_parts:
            return {}
        from monitor.detect.kernels import correlations

        cols = np.empty((len(names), n))
        for k, name in enumerate(names):
            cols[k] = np.fromiter(columns[name], dtype=float, count=n)
        rs = correlations(np.fromiter(self._xs, dtype=float, count=n), cols).tolist()
        return {name: r for name, r in zip(names, rs, strict=True) if not math.isnan(r)}

    def state(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "min_r": self.min_r,
            "min_parts": self.min_parts,
            "n": self._n,
            "rows": list(self._rows),  # the rows themselves (never changed once appended), not copies
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Attribution:
        obj = cls(state["window"], state["min_r"], state["min_parts"])
        obj._rows.extend([float(x), {k: float(v) for k, v in c.items()}] for x, c in state["rows"])
        obj._n = int(state["n"])
        return obj


def _order(columns: Mapping[str, Any]) -> list[str]:
    """The covariates in ``columns`` in :data:`COVARIATES` order, then any others by name (ties go to the first)."""
    names = [n for n in COVARIATES if n in columns]
    return names + sorted(set(columns) - set(names))


def _plain_sum(values: Sequence[float]) -> float:
    """The floats added left to right, one rounding each: the order the compiled correlations
    (:func:`monitor.detect.kernels.correlations`) add in, on every Python. From 3.12 on, ``sum`` of
    floats compensates its rounding, so it would differ from the compiled loop in the last bits."""
    total = 0.0
    for x in values:
        total += x
    return total


class _Centred:
    """One side of Pearson's r (None when either side is constant or r is not finite), computed once
    for every covariate it is paired with: whether the values are constant, their deviations from
    their mean and the sum of their squares, summed in order as the textbook loop sums them (so r is
    the same double)."""

    __slots__ = ("constant", "dev", "ss")

    def __init__(self, a: Sequence[float]) -> None:
        n = len(a)
        self.constant = max(a) == min(a)
        ma = _plain_sum(a) / n
        self.dev = [x - ma for x in a]
        ss = 0.0
        for d in self.dev:
            ss += d * d
        self.ss = ss

    def pearson(self, b: Sequence[float]) -> float | None:
        if self.constant or max(b) == min(b):
            return None
        mb = _plain_sum(b) / len(b)
        sab = sbb = 0.0
        for dx, y in zip(self.dev, b, strict=True):
            dy = y - mb
            sab += dx * dy
            sbb += dy * dy
        if self.ss <= 0 or sbb <= 0:
            return None
        r = sab / math.sqrt(self.ss * sbb)
        return max(-1.0, min(1.0, r)) if math.isfinite(r) else None


@dataclass(frozen=True, slots=True)
class OffsetSuggestion:
    """The offset change that re-centres a feature: which register, by how much (mm, signed)."""

    register: str
    change: float

    def text(self) -> str:
        return f"suggest {self.register} {self.change:+.4f} mm"


_OFFSET_FACTORS: dict[str, tuple[str, float]] = {
    "diameter": ("diameter wear offset", -1.0),
    "radius": ("radius wear offset", -0.5),
    "cutter_radius_hole": ("cutter radius (D) wear", 0.5),
    "cutter_radius_boss": ("cutter radius (D) wear", -0.5),
    "length": ("length (H/Z) wear offset", -1.0),
}


def suggest_offset(deviation: float, kind: OffsetKind | str) -> OffsetSuggestion:
    """Offset change for a size feature whose mean is ``deviation`` mm off nominal, or for one axis.

    ``kind`` is an :data:`~monitor.detect.config.OffsetKind` for size features, or an axis letter
    ("x", "y", "z") for a position feature (work/wear offset of that axis, change = -deviation).
    A bore with cutter compensation that is 0.004 mm too large wants 0.002 mm more cutter radius:

    >>> suggest_offset(0.004, "cutter_radius_hole").text()
    'suggest cutter radius (D) wear +0.0020 mm'
    >>> suggest_offset(0.012, "x").text()
    'suggest X wear offset -0.0120 mm'
    """
    if kind in _OFFSET_FACTORS:
        register_name, factor = _OFFSET_FACTORS[kind]
        return OffsetSuggestion(register_name, factor * deviation)
    return OffsetSuggestion(f"{kind.upper()} wear offset", -deviation)


def shift_from_offset(change: float, kind: OffsetKind | str) -> float:
    """How much an applied offset ``change`` (mm) moves the deviation of the feature it corrects.

    The inverse of :func:`suggest_offset`: a recorded offset change is a known step of this size
    (:meth:`monitor.engine.DriftEngine.record_step`).

    >>> shift_from_offset(-0.012, "x")   # the X offset moved the hole by -0.012 mm
    -0.012
    >>> round(shift_from_offset(0.002, "cutter_radius_hole"), 4)
    -0.004
    """
    factor = _OFFSET_FACTORS[kind][1] if kind in _OFFSET_FACTORS else -1.0
    return -change / factor
