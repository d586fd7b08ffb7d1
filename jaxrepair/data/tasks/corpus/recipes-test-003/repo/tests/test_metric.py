from recipes.ingredients import Ingredient
from recipes.metric import tidy, to_metric


def test_cup_to_ml():
    assert to_metric(Ingredient(2.0, "cup", "milk")) == Ingredient(473.2, "ml", "milk")


def test_lb_to_g():
    assert to_metric(Ingredient(1.0, "lb", "butter")) == Ingredient(453.6, "g", "butter")


def test_metric_kept():
    item = Ingredient(50.0, "g", "salt")
    assert to_metric(item) == item
    assert to_metric(Ingredient(2.0, "", "eggs")) == Ingredient(2.0, "", "eggs")


def test_tidy():
    assert tidy(Ingredient(1500.0, "g", "flour")) == Ingredient(1.5, "kg", "flour")
    assert tidy(Ingredient(2000.0, "ml", "water")) == Ingredient(2.0, "l", "water")
    assert tidy(Ingredient(999.0, "g", "flour")) == Ingredient(999.0, "g", "flour")
