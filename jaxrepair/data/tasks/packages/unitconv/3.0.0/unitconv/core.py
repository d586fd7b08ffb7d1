"""Conversion functions returning ``Quantity`` objects (3.0)."""

from dataclasses import dataclass

from unitconv.errors import UnitError

FACTORS = {
    "g": ("mass", 1.0), "kg": ("mass", 1000.0), "mg": ("mass", 0.001),
    "lb": ("mass", 453.59237), "oz": ("mass", 28.349523125),
    "ml": ("volume", 1.0), "l": ("volume", 1000.0), "tsp": ("volume", 4.92892159375),
    "tbsp": ("volume", 14.78676478125), "cup": ("volume", 236.5882365),
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
}


@dataclass(frozen=True)
class Quantity:
    """A number with its unit."""

    value: float
    unit: str

    def __str__(self):
        return f"{self.value:g} {self.unit}"


def dimension(unit):
    """The dimension ('mass', 'volume', 'length') of ``unit``."""
    if unit not in FACTORS:
        raise UnitError(f"unknown unit {unit!r}")
    return FACTORS[unit][0]


def convert(value, *, src, dst):
    """Convert ``value`` from unit ``src`` to unit ``dst``; returns a Quantity in ``dst``."""
    if dimension(src) != dimension(dst):
        raise UnitError(f"cannot convert {dimension(src)} ({src}) to {dimension(dst)} ({dst})")
    return Quantity(value * FACTORS[src][1] / FACTORS[dst][1], dst)
