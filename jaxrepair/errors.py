"""Errors that mean "the input is wrong", not "the program is wrong".

Why: the `jaxrepair` command prints such an error as one line on stderr and exits with code 2,
so a researcher sees what to fix instead of a traceback; anything else still shows one.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix (a path, a setting, a directory in use); the message says what."""


__all__ = ["UserError"]
