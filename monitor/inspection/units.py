"""Units of inspection values: every length becomes millimetres, every angle degrees.

The monitor's features are in millimetres and degrees; a CMM may write metres, inches or microns
(and radians). QIF names a unit by its ``UnitName`` and may give the factor to the SI unit
(``S = (X + Offset) * Factor``, metre and radian); a name with no conversion *is* the SI unit. A
value with no unit at all falls back to the file's primary unit and, failing that, to metres
(QIF 3 Units.xsd). Known names are converted with exact factors, so 19.007 mm stays 19.007 and
never becomes 19.007000000000001 through a declared factor of 0.001 and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ANGLE_UNITS", "LENGTH_UNITS", "Dimension", "Unit", "declared_unit", "known_unit", "parse_unit_name"]


class Dimension(StrEnum):
    """What a value measures; decides the unit it is stored in."""

    LENGTH = "length"
    """Stored in millimetres."""
    ANGLE = "angle"
    """Stored in degrees."""
    OTHER = "other"
    """Area, force, temperature...: stored as the file gives it, with the file's unit name."""


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit of length or angle as a factor to the monitor's unit (mm or degree)."""

    name: str
    dimension: Dimension
    to_internal: float
    """Multiply a value in this unit by this to get millimetres (length) or degrees (angle)."""
    offset: float = 0.0
    """Added before the factor (QIF's UnitConversion/Offset; zero for every length and angle in use)."""

    def convert(self, value: float) -> float:
        """The value in millimetres or degrees."""
        if self.to_internal == 1.0 and self.offset == 0.0:
            return value
        return (value + self.offset) * self.to_internal


_MM = 1.0
LENGTH_UNITS: dict[str, float] = {
    "mm": _MM,
    "millimeter": _MM,
    "millimetre": _MM,
    "millimeters": _MM,
    "millimetres": _MM,
    "m": 1000.0,
    "meter": 1000.0,
    "metre": 1000.0,
    "meters": 1000.0,
    "metres": 1000.0,
    "cm": 10.0,
    "centimeter": 10.0,
    "centimetre": 10.0,
    "um": 0.001,
    "µm": 0.001,
    "μm": 0.001,
    "micron": 0.001,
    "microns": 0.001,
    "micrometer": 0.001,
    "micrometre": 0.001,
    "in": 25.4,
    "inch": 25.4,
    "inches": 25.4,
    '"': 25.4,
    "mil": 0.0254,
    "thou": 0.0254,
    "uin": 0.0000254,
    "microinch": 0.0000254,
    "ft": 304.8,
    "foot": 304.8,
    "feet": 304.8,
}
"""Length unit names (lower case) and their size in millimetres."""

ANGLE_UNITS: dict[str, float] = {
    "deg": 1.0,
    "degree": 1.0,
    "degrees": 1.0,
    "°": 1.0,
    "decimal degree": 1.0,
    "rad": 180.0 / math.pi,
    "radian": 180.0 / math.pi,
    "radians": 180.0 / math.pi,
    "arcmin": 1.0 / 60.0,
    "minute": 1.0 / 60.0,
    "arcsec": 1.0 / 3600.0,
    "second": 1.0 / 3600.0,
    "grad": 0.9,
    "gon": 0.9,
}
"""Angle unit names (lower case) and their size in degrees."""


def parse_unit_name(text: str) -> str:
    """The lookup form of a unit name: trimmed, lower case, inner blanks collapsed.

    >>> parse_unit_name("  Millimeter ")
    'millimeter'
    """
    return " ".join(text.strip().lower().split())


def known_unit(name: str, dimension: Dimension | None = None) -> Unit | None:
    """A unit known by name, of the given dimension if one is given; None when unknown.

    >>> known_unit("inch").to_internal
    25.4
    >>> known_unit("degree", Dimension.LENGTH) is None
    True
    """
    key = parse_unit_name(name)
    if dimension in (None, Dimension.LENGTH) and key in LENGTH_UNITS:
        return Unit(name.strip(), Dimension.LENGTH, LENGTH_UNITS[key])
    if dimension in (None, Dimension.ANGLE) and key in ANGLE_UNITS:
        return Unit(name.strip(), Dimension.ANGLE, ANGLE_UNITS[key])
    return None


def declared_unit(name: str, dimension: Dimension, si_factor: float | None, offset: float = 0.0) -> Unit:
    """A unit a file declares: its name and, optionally, its factor to the SI unit (metre, radian).

    A known name whose declared factor agrees (to 1e-9) is converted with the exact factor; a
    declared factor that disagrees with the name wins (the file says what it means); a name with
    no factor is the SI unit itself (QIF: a unit needs a conversion unless it is the SI unit), or
    the known unit of that name."""
    si_to_internal = 1000.0 if dimension is Dimension.LENGTH else 180.0 / math.pi
    known = known_unit(name, dimension)
    if si_factor is None:
        if known is not None:
            return known
        return Unit(name.strip(), dimension, si_to_internal)
    factor = si_factor * si_to_internal
    if known is not None and offset == 0.0 and math.isclose(known.to_internal, factor, rel_tol=1e-9):
        return known
    return Unit(name.strip(), dimension, factor, offset)
