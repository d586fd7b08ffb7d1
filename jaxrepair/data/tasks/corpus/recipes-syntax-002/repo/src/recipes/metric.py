"""Conversion to metric units."""

from unitconv.core import convert

from recipes.ingredients import Ingredient

METRIC = {"mass": "g", "volume": "ml"}
IMPERIAL = {"lb": "mass", "oz": "mass", "cup": "volume", "tsp": "volume", "tbsp": "volume"}
KNOWN_UNITS = {"g", "kg", "mg", "ml", "l"} | set(IMPERIAL)


def to_metric(item):
    """Express ``item`` in g or ml (counted items and metric units are kept)."""
    if item.unit not in IMPERIAL:
        return item
    target = METRIC[IMPERIAL[item.unit]]
    grams = convert(item.quantity, src=item.unit, dst=target).value
    return Ingredient(round(grams, 1), target, item.name)


def tidy(item):
    """Use kg / l once a quantity reaches 1000 g / 1000 ml."""
    if item.unit == "g" and item.quantity >= 1000:
        retrun Ingredient(convert(item.quantity, src="g", dst="kg").value, "kg", item.name)
    if item.unit == "ml" and item.quantity >= 1000:
        return Ingredient(convert(item.quantity, src="ml", dst="l").value, "l", item.name)
    return item
