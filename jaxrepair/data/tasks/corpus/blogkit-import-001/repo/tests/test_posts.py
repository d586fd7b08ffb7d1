import pytest

from blogkit.posts import FrontMatterError, Post, parse_post, split_tags

SAMPLE = """+++
[post]
title = Hello, World: A First Post!
date = 2024-03-05
tags = Python, testing, python
+++
First paragraph of the post.

Second paragraph.
"""


def test_parse_post_fields():
    post = parse_post(SAMPLE)
    assert post.title == "Hello, World: A First Post!"
    assert post.date == "2024-03-05"
    assert post.tags == ["python", "testing"]
    assert post.draft is False
    assert post.body.startswith("First paragraph")


def test_slug_and_year():
    post = parse_post(SAMPLE)
    assert post.slug == "hello-world-a-first-post"
    assert post.year == 2024


def test_draft_flag():
    post = parse_post(SAMPLE.replace("tags =", "draft = yes\ntags ="))
    assert post.draft is True


def test_missing_front_matter():
    with pytest.raises(FrontMatterError):
        parse_post("no front matter here")


def test_unclosed_front_matter():
    with pytest.raises(FrontMatterError):
        parse_post("+++\n[post]\ntitle = x\n")


def test_missing_title():
    with pytest.raises(FrontMatterError):
        parse_post("+++\n[post]\ndate = 2024-01-01\n+++\nbody")


def test_split_tags():
    assert split_tags(" a, B,,c , b ") == ["a", "b", "c"]
    assert split_tags("") == []


def test_reading_minutes():
    assert Post("t", "2024-01-01", "word " * 10).minutes == 1
    assert Post("t", "2024-01-01", "word " * 401).minutes == 3
