"""Text measurements for posts."""

import slugkit


def reading_minutes(body, words_per_minute=200):
    """Whole minutes needed to read ``body``; at least 1."""
    words = slugkit.word_stats(body)["words"]
    return max(1, (words + words_per_minute - 1) // words_per_minute)


def excerpt(body, length=60):
    """The first paragraph of ``body`` on one line, cut to ``length`` characters."""
    first = body.strip().split("\n\n")[0].replace("\n", " ")
    return slugkit.truncate(first, length)
