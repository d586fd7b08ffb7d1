"""unitconv 1.x: convert between units of mass, volume and length."""

__version__ = "1.0.0"

FACTORS = {
    "g": ("mass", 1.0), "kg": ("mass", 1000.0), "mg": ("mass", 0.001),
    "lb": ("mass", 453.59237), "oz": ("mass", 28.349523125),
    "ml": ("volume", 1.0), "l": ("volume", 1000.0), "tsp": ("volume", 4.92892159375),
    "tbsp": ("volume", 14.78676478125), "cup": ("volume", 236.5882365),
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
}


class UnitError(ValueError):
    """Unknown unit, or units of different dimensions."""


def convert(value, from_unit, to_unit):
    """Convert ``value`` from ``from_unit`` to ``to_unit``; returns a float."""
    try:
        dim_a, fa = FACTORS[from_unit]
        dim_b, fb = FACTORS[to_unit]
    except KeyError as e:
        raise UnitError(f"unknown unit {e.args[0]!r}") from None
    if dim_a != dim_b:
        raise UnitError(f"cannot convert {dim_a} ({from_unit}) to {dim_b} ({to_unit})")
    return value * fa / fb


def dimension(unit):
    """The dimension ('mass', 'volume', 'length') of ``unit``."""
    if unit not in FACTORS:
        raise UnitError(f"unknown unit {unit!r}")
    return FACTORS[unit][0]
