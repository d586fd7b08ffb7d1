import pytest

from inventory.stock import Stock, StockError


def test_receive_and_ship_units():
    s = Stock()
    assert s.receive("A", 2500, "g") == pytest.approx(2.5)
    assert s.receive("A", 1, "lb") == pytest.approx(2.5 + 0.45359237)
    assert s.ship("A", 500, "g") == pytest.approx(2.45359237)
    assert s.shipped_total("A") == pytest.approx(0.5)


def test_overship_refused():
    s = Stock()
    s.receive("B", 1, "kg")
    with pytest.raises(StockError):
        s.ship("B", 1001, "g")
    assert s.level("B") == 1.0


def test_ship_everything():
    s = Stock()
    s.receive("C", 3, "kg")
    assert s.ship("C", 3000, "g") == pytest.approx(0.0)


def test_unknown_sku_level():
    assert Stock().level("nope") == 0.0
