"""Zone chart: an acceptance chart of a feature's mean against its tolerance zone, from nominal.

The residual charts of :mod:`monitor.detect.channel` look for a *change* of the process level
against the level the batch started at, in units of the scatter. A drift that is slow for its
scatter (low capability, a 20-part ramp, the reference learning part of it) can reach the limit
before they are sure; yet the machinist's question is simpler: is the mean walking out of the zone?
This chart answers that one, as an acceptance control chart does (Freund 1957; Montgomery,
*Introduction to Statistical Quality Control*, "acceptance control charts"): it signals when the
EWMA of the deviation from **nominal** lies beyond the acceptable process level (APL) by more than
``width`` of its own standard deviations.

* **Statistic.** Per axis the EWMA ``Z = (1 - lam) Z + lam d`` of the deviation from nominal (readings
  the re-probe screen let through), started at nominal. A size uses the distance of ``Z`` from the
  middle of its band (a one-sided limit: how far ``Z`` lies beyond nominal towards the limit); a
  position the radial distance ``sqrt(Zx^2 + Zy^2)`` of the EWMA vector, the way its zone is judged
  (a circle, whatever the direction of the drift).
* **Acceptable process level.** The mean may sit anywhere the program's declared capability
  (``detection.capability``, Cp) still gives Cpk >= 1: ``(1 - 1/Cp)`` of the way from the middle of
  the band to a limit (a quarter at the default Cp 1.33; for a position, of the zone's radius; for a
  one-sided limit, of the way from nominal to it).
* **Limit.** ``APL + width sd(Z)``, with ``sd(Z)`` the EWMA's standard deviation since its start
  for AR(1) scatter of the channel's fitted sigma and lag-1 correlation (the largest over the axes;
  exact for a constant phi by the recursion ``c = (1-lam) phi c' + lam``,
  ``v = (1-lam)^2 v' + lam^2 + 2 lam (1-lam) phi c'`` of ``var(Z)/sigma^2`` and ``cov(Z, x)/sigma^2``,
  which tends to ``lam/(2-lam) (1 + phi (1-lam)) / (1 - phi (1-lam))``), and ``width`` the two-sided
  EWMA limit for the program's ``arl0``: a process whose mean sits *on* the APL raises it about once
  per ``arl0`` parts (one side of a two-sided limit: about once per 2 ``arl0``); a process centred
  within it (the in-control case) at a rate orders of magnitude lower, since the limit is then
  ``APL/sd(Z)`` more sds away (about 6 sds of the steady EWMA in all at Cp 1.33, more at a higher Cp).

It signals as an EWMA chart of the axis that carries most of the excursion (``ChartSignal.zone``).
Pure: update in, result out; its state is the EWMA vector, the variance recursion and the count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ZoneChart", "ZoneResult", "apl_fraction"]


def apl_fraction(capability: float) -> float:
    """Share of the way from nominal to the limit within which a mean is acceptable: Cpk >= 1 at Cp."""
    return max(0.0, 1.0 - 1.0 / capability)


@dataclass(frozen=True, slots=True)
class ZoneResult:
    """The zone chart after one part: distance of the EWMA mean from nominal, its limit, and the axis
    (with its side) that carries most of it."""

    n: int
    statistic: float
    limit: float
    axis: str
    direction: int
    alarm: bool


class ZoneChart:
    """See the module docstring. ``centre`` is the middle of a size's band (deviation from nominal;
    0 for a position or a one-sided limit), ``radius`` the distance from it to the limit (half the
    band, the zone's radius, or nominal to a one-sided limit), ``side`` +1 or -1 for a one-sided
    limit above or below (0: both, or a position); ``apl`` the acceptable share of ``radius``;
    ``width`` the limit in sds of the EWMA. Several axes are judged together, radially."""

    def __init__(
        self, axes: tuple[str, ...], centre: float, radius: float, side: int, apl: float, lam: float, width: float
    ) -> None:
        self.axes = axes
        self.centre = centre
        self.radius = radius
        self.side = side
        self.apl = apl
        self.lam = lam
        self.width = width
        self.reset()

    def reset(self) -> None:
        """Start again at nominal (a new batch, an offset change, a re-centred feature)."""
        self.z = dict.fromkeys(self.axes, 0.0)
        self.v = dict.fromkeys(self.axes, 0.0)  # var(Z) / sigma^2
        self.c = dict.fromkeys(self.axes, 0.0)  # cov(Z, latest value) / sigma^2
        self.n = 0

    def update(self, values: Mapping[str, float], scatter: Mapping[str, tuple[float, float]]) -> ZoneResult:
        """Feed one part's deviations from nominal (every axis) with each axis's (sigma, phi)."""
        lam = self.lam
        var = 0.0
        for axis in self.axes:
            sigma, phi = scatter[axis]
            self.z[axis] = (1.0 - lam) * self.z[axis] + lam * values[axis]
            c = self.c[axis]
            self.v[axis] = (1.0 - lam) ** 2 * self.v[axis] + lam * lam + 2.0 * lam * (1.0 - lam) * phi * c
            self.c[axis] = (1.0 - lam) * phi * c + lam
            var = max(var, sigma * sigma * self.v[axis])
        self.n += 1
        if len(self.axes) > 1:
            stat = math.sqrt(sum(v * v for v in self.z.values()))
            head = max(self.axes, key=lambda a: abs(self.z[a]))
            direction = 1 if self.z[head] > 0 else -1
        else:
            head = self.axes[0]
            off = self.z[head] - self.centre
            direction = self.side or (1 if off > 0 else -1)
            stat = off * self.side if self.side else abs(off)
        limit = self.apl * self.radius + self.width * math.sqrt(var)
        return ZoneResult(self.n, stat, limit, head, direction, stat > limit)

    def state(self) -> dict[str, Any]:
        return {"z": dict(self.z), "v": dict(self.v), "c": dict(self.c), "n": self.n}

    def load(self, s: Mapping[str, Any]) -> None:
        """Restore a saved state; one of other axes (the program was edited) leaves the chart at its start."""
        if all(set(s.get(k, {})) == set(self.axes) for k in ("z", "v", "c")):
            self.z = {a: float(s["z"][a]) for a in self.axes}
            self.v = {a: float(s["v"][a]) for a in self.axes}
            self.c = {a: float(s["c"][a]) for a in self.axes}
            self.n = int(s["n"])
