"""Shopping lists over several recipes."""

from unitconv.core import convert

from recipes.ingredients import parse_line
from recipes.metric import KNOWN_UNITS, tidy, to_metric

BASE = {"kg": "g", "mg": "g", "l": "ml"}


def to_base(item):
    """Metric item in its base unit (g or ml) so amounts can be added."""
    metric = to_metric(item)
    if metric.unit in BASE:
        base = BASE[metric.unit]
        qty = convert(metric.quantity, src=metric.unit, dst=base).value
        return type(metric)(qty, base, metric.name)
    return metric


def shopping_list(recipes):
    """Sum ingredient lines over recipes: [(name, quantity, unit)] sorted by name."""
    totals = {}
    for lines in recipes:
        for line in lines:
            item = to_base(parse_line(line, KNOWN_UNITS))
            key = (item.name.lower(), item.unit)
            totals[key] = totals.get(key, 0.0) + item.quantity
    result = []
    for (name, unit), qty in sorted(totals.items()):
        tidied = tidy(type(item)(qty, unit, name))
        result.append((tidied.name, round(tidied.quantity, 3), tidied.unit))
    return result


def format_list(entries):
    """One '- name: qty unit' line per entry (no unit for counted items)."""
    out = []
    for name, qty, unit in entries:
        amount = f"{qty:g} {unit}".strip()
        out.append(f"- {name}: {amount}")
    return "\n".join(out)
