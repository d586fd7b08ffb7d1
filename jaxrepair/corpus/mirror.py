"""The dependency mirror: the pinned upstream sources of a corpus's dependencies, laid out as
the package index envs.deps builds its offline dependency environments from.

Why no second mechanism: envs.deps already turns ``<name>/<version>/`` source trees into
wheels and installs exact pins from them with no index access (``pip --no-index
--no-deps``); a real dependency only has to arrive as such a tree. Each is fetched by exact
version and hash (sources.fetch), unpacked once (snapshots), and linked as
``<cache>/corpus/packages/<name>/<version>``; ``JAXREPAIR_PACKAGES_DIR`` pointing there makes
it the package index of every sandbox run in this process and its children. Builds then run
with no network, and a pin the mirror does not hold fails as any unknown pin does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..envs import deps
from .snapshots import snapshot
from .sources import SourceSpec, fetch

__all__ = ["MirrorError", "build_mirror", "mirror_dir", "use_mirror"]

PACKAGES_ENV = "JAXREPAIR_PACKAGES_DIR"


class MirrorError(ValueError):
    """Two sources claim the same name and version, or the package index is elsewhere."""


def mirror_dir() -> Path:
    return deps.cache_dir() / "corpus" / "packages"


def build_mirror(specs: Iterable[SourceSpec]) -> Path:
    """Fetch and unpack each dependency source, link it as ``<name>/<version>``; the mirror."""
    root = mirror_dir()
    for spec in specs:
        tree, _ = snapshot(fetch(spec))
        link = root / deps.normalize(spec.name) / spec.version
        if link.is_symlink() or link.exists():
            if link.resolve() != tree.resolve():
                raise MirrorError(
                    f"{spec.label}: the mirror already holds another source for this version "
                    f"({link.resolve()})"
                )
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.parent / f".{spec.version}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(tree, tmp)
        os.replace(tmp, link)
    return root


@contextlib.contextmanager
def use_mirror(root: Path) -> Iterator[Path]:
    """Make ``root`` the package index (``JAXREPAIR_PACKAGES_DIR``) for the duration."""
    old = os.environ.get(PACKAGES_ENV)
    os.environ[PACKAGES_ENV] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop(PACKAGES_ENV, None)
        else:
            os.environ[PACKAGES_ENV] = old


def require_mirror(specs: list[SourceSpec]) -> Path:
    """Build the mirror for a loaded corpus and make it this process's package index: set
    ``JAXREPAIR_PACKAGES_DIR`` when unset (children inherit it); refuse when it points at
    another directory, which would not hold the corpus's pins."""
    root = build_mirror(specs)
    current = os.environ.get(PACKAGES_ENV)
    if current is None:
        os.environ[PACKAGES_ENV] = str(root)
    elif Path(current).resolve() != root.resolve():
        raise MirrorError(
            f"the corpus's dependencies are mirrored in {root}, but {PACKAGES_ENV} points at "
            f"{current}; unset it or point it at the mirror"
        )
    return root
