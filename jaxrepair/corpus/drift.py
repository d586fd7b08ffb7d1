"""Real dependency drift: tasks whose break moves one of a project's dependency pins in
``requirements.txt``, and whose fix moves it back.

Why real versions: the drift a developer meets is a published release whose API changed under
the code that uses it, not a synthetic one. Each entry below names published releases of a
pinned dependency that the project's own tests reject, with the API change that makes them
reject it (read from the two releases' sources and confirmed by running the tests). The
releases are pinned by hash like every source and served offline by the dependency mirror, so
the broken build installs the wrong release and fails in the tests; which candidates the tests
really reject is decided, as for every breakage, by running them (build.py screens them).

Two kinds (category ``dependency``): ``api-drift`` pins a published release whose API changed;
``missing-version`` pins a version the registry never published, and the build fails before
any test, naming the versions the mirror holds. The pins file is the one a task's repo holds
(``manifest.requirements_text``): not protected, so the fix may edit it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..envs.deps import REQUIREMENTS, normalize
from .manifest import requirements_text
from .projects import Project
from .python_breakages import Breakage
from .sources import SourceSpec

__all__ = ["DRIFTS", "MISSING", "Drift", "DriftError", "breakages", "mirror_sources"]


class DriftError(ValueError):
    """A drift entry that does not fit its project (an unpinned dependency, the pinned version)."""


@dataclass(frozen=True)
class Drift:
    """Published releases of one pinned dependency that the project's tests reject."""

    dependency: str
    versions: tuple[SourceSpec, ...]  # pinned by hash; the dependency mirror serves them
    change: str  # the API change between the pinned release and these


def _pypi(name: str, version: str, sha256: str, filename: str) -> SourceSpec:
    return SourceSpec("pypi", name, version, f"sha256:{sha256}", filename=filename)


DRIFTS: dict[str, tuple[Drift, ...]] = {
    # jsonpatch 1.33 declares jsonpointer>=1.9, but its tests need 2.0's behaviour
    "jsonpatch": (
        Drift(
            "jsonpointer",
            (
                _pypi(
                    "jsonpointer",
                    "1.9",
                    "39403b47a71aa782de6d80db3b78f8a5f68ad8dfc9e674ca3bb5b32c15ec7308",
                    "jsonpointer-1.9.tar.gz",
                ),
                _pypi(
                    "jsonpointer",
                    "1.10",
                    "9fa5dcac35eefd53e25d6cd4c310d963c9f0b897641772cd6e5e7b89df7ee0b1",
                    "jsonpointer-1.10.tar.gz",
                ),
            ),
            "jsonpointer 2.0's JsonPointer() first matches the path against an escape regex, so "
            "a path that is not a string raises TypeError (jsonpatch turns it into "
            "InvalidJsonPatch); 1.x calls str.split on it and raises AttributeError",
        ),
    ),
    # m2r 0.3.1 declares mistune<2 for this reason
    "m2r": (
        Drift(
            "mistune",
            (
                _pypi(
                    "mistune",
                    "2.0.5",
                    "0246113cb2492db875c6be56974a7c893333bf26cd92891c85f63151cee09d34",
                    "mistune-2.0.5.tar.gz",
                ),
                _pypi(
                    "mistune",
                    "3.0.2",
                    "fc7f93ded930c92394ef2cb6f04a8aabab4117a91449e72dcc8dfa646a508be8",
                    "mistune-3.0.2.tar.gz",
                ),
            ),
            "mistune 2.0 is a rewrite: BlockGrammar, BlockLexer, InlineGrammar, InlineLexer "
            "and Renderer, the base classes of m2r's grammars, lexers and RestRenderer, are gone "
            "(BlockParser, InlineParser and HTMLRenderer replace them)",
        ),
    ),
}

# versions PyPI never published (checked against the registry's release list)
MISSING: dict[str, dict[str, str]] = {
    "isodate": {"six": "1.16.1"},
    "jsonpatch": {"jsonpointer": "3.0.1"},
    "m2r": {"mistune": "0.8.5", "docutils": "0.20.2"},
    "tinycss2": {"webencodings": "0.5.2"},
}


def mirror_sources(project: Project) -> tuple[SourceSpec, ...]:
    """What the dependency mirror must hold for the project: its pins and their drift."""
    extra = tuple(v for d in DRIFTS.get(project.name, ()) for v in d.versions)
    return project.dependencies + extra


def _pin_edit(project: Project, name: str, version: str, kind: str) -> Breakage:
    pins = project.pins
    key = next((k for k in pins if normalize(k) == normalize(name)), None)
    if key is None:
        raise DriftError(f"{project.name}: {kind} of {name}, which the project does not pin")
    if pins[key] == version:
        raise DriftError(f"{project.name}: {kind} of {name} to {version}, the pinned version")
    broken = {**pins, key: version}
    line = sorted(pins).index(key) + 1
    return Breakage(
        "dependency",
        kind,
        REQUIREMENTS,
        line,
        requirements_text(pins),
        requirements_text(broken),
    )


def breakages(project: Project) -> dict[str, list[Breakage]]:
    """The project's candidate dependency breakages (``{}`` for a project without drift):
    each moves one pin in ``requirements.txt``; the fix moves it back."""
    found: list[Breakage] = []
    for d in DRIFTS.get(project.name, ()):
        for spec in d.versions:
            if normalize(spec.name) != normalize(d.dependency):
                raise DriftError(f"{project.name}: {spec.label} is not a release of {d.dependency}")
            found.append(_pin_edit(project, d.dependency, spec.version, "api-drift"))
    for name, version in MISSING.get(project.name, {}).items():
        found.append(_pin_edit(project, name, version, "missing-version"))
    return {"dependency": found} if found else {}
