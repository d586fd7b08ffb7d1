"""Unified diffs in git's format (``a/``/``b/`` prefixes), the form every patch in the manifest
takes, so that ``git apply`` (envs.reward.apply_patch) applies break and fix patches alike.

Why here and not difflib alone: difflib writes no ``diff --git`` header and mishandles a last
line without a newline; both break ``git apply`` on real source files.
"""

from __future__ import annotations

import difflib
import re

__all__ = ["file_diff"]

_NO_EOL = "\\ No newline at end of file\n"


def _lines(text: str) -> list[str]:
    """Lines as git sees them: split after each "\n" only (str.splitlines would also split
    at a form feed or a lone "\r", and the patch would no longer match the file)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def file_diff(rel: str, old: str, new: str, context: int = 3) -> str:
    """The diff that turns ``old`` into ``new`` for the file ``rel`` ("" when equal)."""
    if old == new:
        return ""
    out = [f"diff --git a/{rel} b/{rel}\n"]
    body = difflib.unified_diff(_lines(old), _lines(new), f"a/{rel}", f"b/{rel}", n=context)
    for line in body:
        if line.startswith(("---", "+++")):
            out.append(line.rstrip("\n") + "\n")
        elif line.endswith("\n"):
            out.append(line)
        else:  # the file's last line has no newline
            out.append(line + "\n" + _NO_EOL)
    return "".join(out)
