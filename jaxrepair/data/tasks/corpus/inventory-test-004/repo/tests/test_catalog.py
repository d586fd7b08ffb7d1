import pytest

from inventory.catalog import Product, find, make_sku


def test_make_sku():
    assert make_sku("Dry Goods", "Basmati Rice 5kg") == "DRY-BASMATI-RICE-5KG"
    assert make_sku("Oils", "Olive oil (extra virgin)") == "OIL-OLIVE-OIL-EXTRA-VIRGIN"


def test_find():
    products = [Product("Sugar", "Baking", 1.2, 10), Product("Salt", "Baking", 0.5, 5)]
    assert find(products, "BAK-SALT").name == "Salt"
    with pytest.raises(KeyError):
        find(products, "BAK-PEPPER")
