import pytest

from recipes.ingredients import Ingredient, parse_line, parse_quantity, scale, servings_factor

UNITS = {"g", "ml", "cup"}


def test_parse_quantity():
    assert parse_quantity("2") == 2.0
    assert parse_quantity("1/2") == 0.5
    assert parse_quantity("0.25") == 0.25
    with pytest.raises(ValueError):
        parse_quantity("two")


def test_parse_line_with_unit():
    assert parse_line("200 g plain flour", UNITS) == Ingredient(200.0, "g", "plain flour")


def test_parse_line_counted():
    assert parse_line("3 eggs", UNITS) == Ingredient(3.0, "", "eggs")
    assert parse_line("2 g", UNITS) == Ingredient(2.0, "", "g")


def test_parse_line_too_short():
    with pytest.raises(ValueError):
        parse_line("flour", UNITS)


def test_scale():
    items = [Ingredient(100.0, "g", "sugar"), Ingredient(2.0, "", "eggs")]
    assert scale(items, 1.5) == [Ingredient(150.0, "g", "sugar"), Ingredient(3.0, "", "eggs")]
    with pytest.raises(ValueError):
        scale(items, 0)


def test_servings_factor():
    assert servings_factor(4, 6) == 1.5
    with pytest.raises(ValueError):
        servings_factor(0, 2)
