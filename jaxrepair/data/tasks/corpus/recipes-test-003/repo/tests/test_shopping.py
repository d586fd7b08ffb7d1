from recipes.shopping import format_list, shopping_list


def test_shopping_list_sums_across_units():
    pancakes = ["250 g flour", "2 eggs", "1/2 l milk"]
    bread = ["1 kg flour", "300 ml milk", "1 tsp salt"]
    assert shopping_list([pancakes, bread]) == [
        ("eggs", 2.0, ""),
        ("flour", 1.25, "kg"),
        ("milk", 800.0, "ml"),
        ("salt", 4.9, "ml"),
    ]


def test_shopping_list_case_insensitive():
    assert shopping_list([["100 g Sugar"], ["50 g sugar"]]) == [("sugar", 150.0, "g")]


def test_format_list():
    text = format_list([("eggs", 2.0, ""), ("flour", 1.25, "kg")])
    assert text == "- eggs: 2\n- flour: 1.25 kg"
