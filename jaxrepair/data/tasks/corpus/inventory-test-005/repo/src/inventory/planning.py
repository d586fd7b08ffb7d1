"""Reorder planning and reports."""

from unitconv.core import convert


def value(products, stock):
    """Total stock value (sum of kg * unit price), rounded to cents."""
    return round(sum(p.unit_price * stock.level(p.sku) for p in products), 2)


def low_stock(products, stock):
    """Products at or below their reorder level, sorted by SKU."""
    low = [p for p in products if stock.level(p.sku) <= p.reorder_level]
    return sorted(low, key=lambda p: p.sku)


def reorder_quantity(product, stock, target_factor=2.0, unit="kg"):
    """How much to order to reach target_factor * reorder_level, in ``unit``; never negative."""
    missing = product.reorder_level * target_factor - stock.level(product.sku)
    return max(0.0, round(convert(missing, "kg", unit), 3))


def report(products, stock):
    lines = []
    for p in low_stock(products, stock):
        lines.append(f"{p.sku}: {stock.level(p.sku):g} kg (reorder {reorder_quantity(p, stock):g} kg)")
    return "\n".join(lines) if lines else "all stock levels ok"
