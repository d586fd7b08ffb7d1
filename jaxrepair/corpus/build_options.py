"""The corpus build's command-line options, shared by ``python -m jaxrepair.corpus.build`` and
``jaxrepair envs build-corpus``.

Why a module of its own: the ``jaxrepair`` command builds every subcommand's parser on each
start, so the options must not import the build pipeline (the sandbox, the validator).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_build_arguments"]


def add_build_arguments(ap: argparse.ArgumentParser) -> None:
    """The build's options (projects are checked against the project list when it runs)."""
    ap.add_argument("--out", type=Path, required=True, help="the manifest (.jsonl) to write")
    ap.add_argument(
        "--project", action="append", metavar="NAME", help="only this project (repeatable)"
    )
    ap.add_argument("--quota", type=int, default=2, help="tasks per category per project")
    ap.add_argument("--max-tries", type=int, default=6, help="candidates run per category")
    ap.add_argument("--repeats", type=int, default=3, help="validation repeats")
    ap.add_argument("--workers", type=int, default=2, help="validation threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true", help="redo projects already in --out")
    ap.add_argument("--no-progress", action="store_true")
