"""slugkit 1.x: URL slugs and small text helpers."""

import re

__version__ = "1.0.0"

_WORD = re.compile(r"[a-z0-9]+")


def slugify(text, sep="-"):
    """Lower-case ``text`` and join its alphanumeric runs with ``sep``."""
    return sep.join(_WORD.findall(text.lower()))


def word_count(text):
    """Number of words (runs of letters, digits or underscores) in ``text``."""
    return len(re.findall(r"\w+", text))


def truncate(text, length):
    """Cut ``text`` to at most ``length`` characters, ending with '...' when cut."""
    if len(text) <= length:
        return text
    return text[: max(0, length - 3)] + "..."
