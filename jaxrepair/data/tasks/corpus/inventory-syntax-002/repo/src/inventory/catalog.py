"""Products and their SKUs."""

from dataclasses import dataclass

import slugkit


@dataclass
class Product:
    name: str
    category: str
    unit_price: float  # per kg
    reorder_level: float  # kg

    @property
    def sku(self):
        return make_sku(self.category, self.name)


def make_sku(category, name):
    """'Dry Goods', 'Basmati Rice 5kg' -> 'DRY-BASMATI-RICE-5KG' (category part max 3 letters)."""
    prefix = slugkit.make_slug(category, separator="")[:3]
    body = slugkit.make_slug(name)
    return f"{prefix}-{body}".upper()


def find(products, sku):
    for product in products:
        if product.sku == sku:
            return product
    raise KeyError(f"no product with SKU {sku}")
