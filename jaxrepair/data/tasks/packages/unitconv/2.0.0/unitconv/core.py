"""Conversion functions (moved here from the top-level package in 2.0)."""

from unitconv.errors import UnitError

FACTORS = {
    "g": ("mass", 1.0), "kg": ("mass", 1000.0), "mg": ("mass", 0.001),
    "lb": ("mass", 453.59237), "oz": ("mass", 28.349523125),
    "ml": ("volume", 1.0), "l": ("volume", 1000.0), "tsp": ("volume", 4.92892159375),
    "tbsp": ("volume", 14.78676478125), "cup": ("volume", 236.5882365),
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
}


def dimension(unit):
    """The dimension ('mass', 'volume', 'length') of ``unit``."""
    if unit not in FACTORS:
        raise UnitError(f"unknown unit {unit!r}")
    return FACTORS[unit][0]


def convert(value, src, dst):
    """Convert ``value`` from unit ``src`` to unit ``dst``; returns a float."""
    if dimension(src) != dimension(dst):
        raise UnitError(f"cannot convert {dimension(src)} ({src}) to {dimension(dst)} ({dst})")
    return value * FACTORS[src][1] / FACTORS[dst][1]
