from inventory.catalog import Product
from inventory.planning import low_stock, reorder_quantity, report, value
from inventory.stock import Stock


def setup():
    products = [
        Product("Sugar", "Baking", 1.20, 10),
        Product("Flour", "Baking", 0.80, 20),
        Product("Rice", "Dry goods", 2.50, 5),
    ]
    stock = Stock()
    stock.receive("BAK-SUGAR", 8, "kg")
    stock.receive("BAK-FLOUR", 25, "kg")
    stock.receive("DRY-RICE", 5000, "g")
    return products, stock


def test_value():
    products, stock = setup()
    assert value(products, stock) == round(8 * 1.2 + 25 * 0.8 + 5 * 2.5, 2)


def test_low_stock_inclusive():
    products, stock = setup()
    assert [p.sku for p in low_stock(products, stock)] == ["BAK-SUGAR", "DRY-RICE"]


def test_reorder_quantity():
    products, stock = setup()
    assert reorder_quantity(products[0], stock) == 12.0
    assert reorder_quantity(products[0], stock, unit="g") == 12000.0
    assert reorder_quantity(products[1], stock) == 15.0
    assert reorder_quantity(products[1], stock, target_factor=1.0) == 0.0


def test_report():
    products, stock = setup()
    assert report(products, stock) == (
        "BAK-SUGAR: 8 kg (reorder 12 kg)\nDRY-RICE: 5 kg (reorder 5 kg)"
    )
    stock.receive("BAK-SUGAR", 10, "kg")
    stock.receive("DRY-RICE", 1, "kg")
    assert report(products, stock) == "all stock levels ok"
