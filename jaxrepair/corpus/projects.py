"""The upstream projects the real-world corpus is built from, each pinned by exact version and
archive hash, with the build command its own test suite runs under.

Why a list in code: adding a project is one entry (``sources.pin`` prints the spec), reviewed
like any change; the build refuses an archive whose bytes differ from the pin.

Build commands run in the sandbox with no network; ``-o addopts=`` drops a project's own pytest
options (coverage plugins and the like the sandbox does not have), ``-p no:cacheprovider``
keeps the workspace clean. ``sources`` are the globs of files breakages are made in;
``protected`` the globs the agent may not change (the tests and the test configuration).
"""

from __future__ import annotations

from dataclasses import dataclass

from .sources import SourceSpec

__all__ = ["PROJECTS", "Project"]

_PYTEST = "python -m pytest -q -p no:cacheprovider -o addopts="


@dataclass(frozen=True)
class Project:
    """One upstream project at one pinned version."""

    source: SourceSpec
    build: tuple[str, ...]
    sources: tuple[str, ...]  # globs (relative to the project root) of files to break
    protected: tuple[str, ...]  # globs the agent may not change (those that match a file)
    split: str = "train"
    dependencies: tuple[SourceSpec, ...] = ()  # pinned sources the dependency mirror holds
    timeout_s: float = 120.0
    build_system: str = "python"

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def pins(self) -> dict[str, str]:
        """The exact pins the build runs with: one per dependency source."""
        return {d.name: d.version for d in self.dependencies}


def _pypi(name: str, version: str, sha256: str, filename: str) -> SourceSpec:
    return SourceSpec("pypi", name, version, f"sha256:{sha256}", filename=filename)


_CONFIG = ("setup.cfg", "setup.py", "pyproject.toml", "tox.ini", "pytest.ini", "conftest.py")

PROJECTS: dict[str, Project] = {
    p.name: p
    for p in (
        Project(
            _pypi(
                "six",
                "1.17.0",
                "ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81",
                "six-1.17.0.tar.gz",
            ),
            build=(f"{_PYTEST} test_six.py",),
            sources=("six.py",),
            protected=("test_six.py", *_CONFIG),
        ),
        Project(
            _pypi(
                "toolz",
                "1.0.0",
                "2c86e3d9a04798ac556793bced838816296a2f085017664e4995cb40a1047a02",
                "toolz-1.0.0.tar.gz",
            ),
            build=(f"{_PYTEST} toolz/tests",),
            sources=("toolz/*.py", "toolz/curried/*.py"),
            protected=("toolz/tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "idna",
                "3.10",
                "12f65c9b470abda6dc35cf8e63cc574b1c52b11df2c86030af0ac09b01b13ea9",
                "idna-3.10.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("idna/core.py", "idna/codec.py", "idna/compat.py", "idna/intranges.py"),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "cachetools",
                "5.5.0",
                "2cc24fb4cbe39633fb7badd9db9ca6295d766d9c2995f245725a46715d050f2a",
                "cachetools-5.5.0.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} tests",),
            sources=("src/cachetools/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "inflection",
                "0.5.1",
                "1a29730d366e996aaacffb2f1f1cb9593dc38e2ddd30c91250c6dde09ea9b417",
                "inflection-0.5.1.tar.gz",
            ),
            build=(f"{_PYTEST} test_inflection.py",),
            sources=("inflection/*.py",),
            protected=("test_inflection.py", *_CONFIG),
        ),
        Project(
            _pypi(
                "jmespath",
                "1.0.1",
                "90261b206d6defd58fdd5e85f478bf633a2901798906be2ad389150c5c60edbe",
                "jmespath-1.0.1.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("jmespath/*.py",),
            protected=("tests/**", *_CONFIG),
            split="test",  # held out: a project never seen in training
        ),
        Project(
            _pypi(
                "more-itertools",
                "10.5.0",
                "5482bfef7849c25dc3c6dd53a6173ae4795da2a41a80faea6700d9f5846c5da6",
                "more-itertools-10.5.0.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("more_itertools/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "wcwidth",
                "0.2.13",
                "72ea0c06399eb286d978fdedb6923a9eb47e1c486ce63e9b4e64fc18303972b5",
                "wcwidth-0.2.13.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("wcwidth/wcwidth.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(  # a real runtime dependency (six), served by the dependency mirror
            _pypi(
                "isodate",
                "0.6.1",
                "48c5881de7e8b0a0d648cb024c8062dc84e7b840ed81e864c7614fd3c127bde9",
                "isodate-0.6.1.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} src/isodate/tests",),
            sources=("src/isodate/*.py",),
            protected=("src/isodate/tests/**", *_CONFIG),
            dependencies=(
                _pypi(
                    "six",
                    "1.16.0",
                    "1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926",
                    "six-1.16.0.tar.gz",
                ),
            ),
        ),
    )
}
