"""Ingredient lines: '<quantity> <unit> <name>' or '<quantity> <name>' (counted items)."""

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Ingredient:
    quantity: float
    unit: str  # "" for counted items ("3 eggs")
    name: str


def parse_quantity(text):
    """'2' -> 2.0, '1/2' -> 0.5, '1 1/2' style is not supported, '0.25' -> 0.25."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"bad quantity {text!r}") from None


def parse_line(line, units):
    """Parse one ingredient line; ``units`` is the set of known unit names."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"cannot parse ingredient {line!r}")
    qty = parse_quantity(parts[0])
    if parts[1] in units and len(parts) > 2:
        return Ingredient(qty, parts[1], " ".join(parts[2:]))
    return Ingredient(qty, "", " ".join(parts[1:]))


def scale(ingredients, factor):
    """Multiply every quantity by ``factor`` (> 0)."""
    if factor <= 0:
        raise ValueError("factor must be positive")
    return [Ingredient(i.quantity * factor, i.unit, i.name) for i in ingredients]


def servings_factor(have, want):
    """Factor turning a recipe for ``have`` servings into one for ``want``."""
    if have <= 0 or want <= 0:
        raise ValueError("servings must be positive")
    return want / have
