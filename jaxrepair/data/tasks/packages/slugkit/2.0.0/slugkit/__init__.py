"""slugkit 2.x: URL slugs and small text helpers.

Breaking changes from 1.x: ``slugify`` was renamed ``make_slug`` and its separator became the
keyword-only ``separator``; ``word_count`` was replaced by ``word_stats`` (returns a dict).
"""

import re

__version__ = "2.0.0"

_WORD = re.compile(r"[a-z0-9]+")


def make_slug(text, *, separator="-", max_length=None):
    """Lower-case ``text`` and join its alphanumeric runs with ``separator``."""
    slug = separator.join(_WORD.findall(text.lower()))
    if max_length is not None:
        slug = slug[:max_length].rstrip(separator)
    return slug


def word_stats(text):
    """Word statistics of ``text``: {"words": n, "unique": n_distinct, "chars": n_chars}."""
    words = re.findall(r"\w+", text)
    return {"words": len(words), "unique": len({w.lower() for w in words}), "chars": len(text)}


def truncate(text, length, suffix="..."):
    """Cut ``text`` to at most ``length`` characters, ending with ``suffix`` when cut."""
    if len(text) <= length:
        return text
    return text[: max(0, length - len(suffix))] + suffix
