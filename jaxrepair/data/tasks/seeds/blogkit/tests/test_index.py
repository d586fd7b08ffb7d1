import pytest

from blogkit.index import archive, paginate, published, tag_index
from blogkit.posts import Post


def make_posts():
    return [
        Post("Alpha", "2023-05-01", "a", ["x"]),
        Post("Beta", "2024-01-10", "b", ["x", "y"]),
        Post("Gamma", "2024-02-01", "c", ["y"], draft=True),
        Post("Delta", "2022-12-31", "d", ["z"]),
        Post("Epsilon", "2024-01-10", "e", ["x"]),
    ]


def test_published_order():
    assert [p.title for p in published(make_posts())] == ["Epsilon", "Beta", "Alpha", "Delta"]


def test_tag_index():
    assert tag_index(make_posts()) == {"x": ["epsilon", "beta", "alpha"], "y": ["beta"], "z": ["delta"]}


def test_archive():
    assert archive(make_posts()) == {2022: 1, 2023: 1, 2024: 2}
    assert list(archive(make_posts())) == [2022, 2023, 2024]


def test_paginate():
    assert paginate([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert paginate([1, 2], 2) == [[1, 2]]
    assert paginate([], 3) == [[]]


def test_paginate_rejects_zero():
    with pytest.raises(ValueError):
        paginate([1], 0)
