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

from .sources import SourceSpec, dsc_name

__all__ = ["PROJECTS", "Project", "cmake_build"]

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
    build_system: str = "python"  # python, make or cmake
    test_step: int = 0  # build[test_step:] run the tests; the commands before only build

    def __post_init__(self) -> None:
        if not 0 <= self.test_step < len(self.build):
            raise ValueError(f"{self.name}: test_step {self.test_step} is not a build command")

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def pins(self) -> dict[str, str]:
        """The exact pins the build runs with: one per dependency source."""
        return {d.name: d.version for d in self.dependencies}


def _pypi(name: str, version: str, sha256: str, filename: str) -> SourceSpec:
    return SourceSpec("pypi", name, version, f"sha256:{sha256}", filename=filename)


def _debian(name: str, version: str, dsc_sha256: str) -> SourceSpec:
    """A Debian source package in the public pool, pinned by its .dsc (which pins the
    upstream tarball and the debian/ tarball; the tree is upstream's, patches unapplied)."""
    return SourceSpec("debian", name, version, f"sha256:{dsc_sha256}", dsc_name(name, version))


def cmake_build(*configure: str) -> tuple[str, ...]:
    """Configure, build, run ctest (``--no-tests=error``: a tree whose tests were configured
    away fails), then print ``TESTS RAN: N`` (the registered tests, after they all passed)
    so the reward's test-count guard sees a test dropped from the CMake files."""
    return (
        " ".join(("cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug", *configure)),
        "cmake --build build -j2",
        "ctest --test-dir build --output-on-failure --no-tests=error",
        "ctest --test-dir build -N | sed -n 's/^Total Tests: /TESTS RAN: /p'",
    )


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
        # -- C and C++ (Debian source packages). The test commands are in the build list, not
        # only in the Makefile, because the Makefile is a source the config breakages edit:
        # a fix must not be able to turn the tests off.
        Project(  # zlib: its own test programs (test/example.c, test/infcover.c, minigzip)
            _debian(
                "zlib",
                "1.3.dfsg+really1.3.1-1",
                "ede2791e29c1d3b422f9208bdd7edf040c20445ea1e7453a72037576e64fa197",
            ),
            build=(
                "./configure --static",
                "make -j2 libz.a example minigzip infcover",
                "./example tmpst",
                './infcover && test "$(echo hello world | ./minigzip | ./minigzip -d)" = '
                '"hello world"',
            ),
            test_step=2,
            sources=("*.c", "Makefile.in"),
            protected=("test/**", "configure"),
            timeout_s=90,
            build_system="make",
        ),
        Project(  # bzip2: upstream's `make test`, round trips checked byte for byte
            _debian(
                "bzip2",
                "1.0.8-5",
                "ed9c40f4de3f9e064535e15eac1c61a0f606763db98f4579dbc04067b94a8944",
            ),
            build=(
                "make -j2 bzip2",
                "./bzip2 -1 < sample1.ref > sample1.rb2 && ./bzip2 -2 < sample2.ref > sample2.rb2"
                " && ./bzip2 -3 < sample3.ref > sample3.rb2"
                " && cmp sample1.bz2 sample1.rb2 && cmp sample2.bz2 sample2.rb2"
                " && cmp sample3.bz2 sample3.rb2",
                "./bzip2 -d < sample1.bz2 > sample1.tst && ./bzip2 -d < sample2.bz2 > sample2.tst"
                " && ./bzip2 -ds < sample3.bz2 > sample3.tst"
                " && cmp sample1.tst sample1.ref && cmp sample2.tst sample2.ref"
                " && cmp sample3.tst sample3.ref",
            ),
            test_step=1,
            # not bzip2.c: the command line's many branches the round trips never take
            sources=(
                "blocksort.c",
                "huffman.c",
                "crctable.c",
                "randtable.c",
                "compress.c",
                "decompress.c",
                "bzlib.c",
                "Makefile",
            ),  # fmt: skip
            protected=("sample*.ref", "sample*.bz2"),
            timeout_s=60,
            build_system="make",
        ),
        Project(  # cJSON (+ cJSON_Utils): Unity tests under tests/, registered with ctest
            _debian(
                "cjson",
                "1.7.15-1+deb12u4",
                "764c2de141d680f4fb4cada30c526dacaa30ead061b9b9c34f2b81e2df0f8439",
            ),
            build=cmake_build("-DENABLE_CJSON_UTILS=On"),
            test_step=2,
            sources=("cJSON.c", "cJSON_Utils.c", "CMakeLists.txt"),
            protected=("tests/**", "test.c"),
            timeout_s=120,
            build_system="cmake",
        ),
        Project(  # jansson: API tests and the valid/invalid JSON suites, through ctest
            _debian(
                "jansson",
                "2.14-2",
                "6296ddd9c0a022bd1b70074aefb171cfcdf5694a04ffd32b35fd66097621af87",
            ),
            build=cmake_build("-DJANSSON_BUILD_DOCS=OFF", "-DJANSSON_EXAMPLES=OFF"),
            test_step=2,
            sources=("src/*.c", "CMakeLists.txt"),
            protected=("test/**",),
            timeout_s=120,
            build_system="cmake",
        ),
    )
}
