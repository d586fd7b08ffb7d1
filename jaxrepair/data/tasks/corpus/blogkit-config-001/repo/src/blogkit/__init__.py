"""blogkit: static blog helpers."""

from blogkit.posts import Post, parse_post

__all__ = ["Post", "parse_post"]
