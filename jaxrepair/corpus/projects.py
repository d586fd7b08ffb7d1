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


def cmake_build(
    *configure: str, source: str = ".", select: str = "", targets: str = ""
) -> tuple[str, ...]:
    """Configure, build, run ctest (``--no-tests=error``: a tree whose tests were configured
    away fails), then print ``TESTS RAN: N`` (the registered tests, after they all passed)
    so the reward's test-count guard sees a test dropped from the CMake files. ``source`` is
    the directory holding the top CMakeLists.txt; ``select`` are ctest's test selection
    options (``-E <regex>``: a slow test left out), given to both ctest runs; ``targets``
    the targets built (default all; the selected tests' programs must be among them)."""
    sel = f" {select}" if select else ""
    return (
        " ".join((f"cmake -S {source} -B build -DCMAKE_BUILD_TYPE=Debug", *configure)),
        f"cmake --build build -j2 --target {targets}" if targets else "cmake --build build -j2",
        f"ctest --test-dir build --output-on-failure --no-tests=error{sel}",
        f"ctest --test-dir build -N{sel} | sed -n 's/^Total Tests: /TESTS RAN: /p'",
    )


_CONFIG = ("setup.cfg", "setup.py", "pyproject.toml", "tox.ini", "pytest.ini", "conftest.py")

# dependencies the mirror serves (also corpus projects of their own)
_JSONPOINTER = _pypi(
    "jsonpointer",
    "3.0.0",
    "2b2d729f2091522d61c3b31f82e11870f60b68f43fbc705cb76bf4b832af59ef",
    "jsonpointer-3.0.0.tar.gz",
)
_WEBENCODINGS = _pypi(
    "webencodings",
    "0.5.1",
    "b36a1c245f2d304965eb4e0a82848379241dc04b865afcc4aab16748587e1923",
    "webencodings-0.5.1.tar.gz",
)

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
        Project(
            _pypi(
                "colorama",
                "0.4.6",
                "08695f5cb7ed6e0531a20572697297273c47b8cae5a63ffc6d6ed5c201be6e44",
                "colorama-0.4.6.tar.gz",
            ),
            build=(f"{_PYTEST} colorama/tests",),
            sources=("colorama/*.py",),
            protected=("colorama/tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "xmltodict",
                "0.13.0",
                "341595a488e3e01a85a9d8911d8912fd922ede5fecc4dce437eb4b6c8d037e56",
                "xmltodict-0.13.0.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("xmltodict.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "pyflakes",
                "3.2.0",
                "1c61603ff154621fb2a9172037d84dca3500def8c8b630657d1701f026f8af3f",
                "pyflakes-3.2.0.tar.gz",
            ),
            build=(f"{_PYTEST} pyflakes/test",),
            sources=("pyflakes/*.py",),
            protected=("pyflakes/test/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "jsonpointer",
                "3.0.0",
                "2b2d729f2091522d61c3b31f82e11870f60b68f43fbc705cb76bf4b832af59ef",
                "jsonpointer-3.0.0.tar.gz",
            ),
            build=(f"{_PYTEST} tests.py",),
            sources=("jsonpointer.py",),
            protected=("tests.py", *_CONFIG),
        ),
        Project(
            _pypi(
                "ordered-set",
                "4.1.0",
                "694a8e44c87657c59292ede72891eb91d34131f6531463aab3009191c77364a8",
                "ordered-set-4.1.0.tar.gz",
            ),
            build=(f"{_PYTEST} test",),
            sources=("ordered_set/*.py",),
            protected=("test/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "parse",
                "1.20.2",
                "b41d604d16503c79d81af5165155c0b20f6c8d6c559efa66b4b695c3e5a0a0ce",
                "parse-1.20.2.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("parse.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "termcolor",
                "2.4.0",
                "aab9e56047c8ac41ed798fa36d892a37aca6b3e9159f3e0c24bc64a9b3ac7b7a",
                "termcolor-2.4.0.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} tests",),
            sources=("src/termcolor/*.py",),
            protected=("tests/**", *_CONFIG),
            split="test",  # held out
        ),
        Project(
            _pypi(
                "sqlparse",
                "0.5.1",
                "bb6b4df465655ef332548e24f08e205afc81b9ab86cb1c45657a7ff173a3a00e",
                "sqlparse-0.5.1.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("sqlparse/*.py", "sqlparse/engine/*.py", "sqlparse/filters/*.py"),
            protected=("tests/**", *_CONFIG),
            split="test",  # held out
        ),
        Project(
            _pypi(
                "webencodings",
                "0.5.1",
                "b36a1c245f2d304965eb4e0a82848379241dc04b865afcc4aab16748587e1923",
                "webencodings-0.5.1.tar.gz",
            ),
            build=(f"{_PYTEST} webencodings/tests.py",),
            sources=("webencodings/__init__.py", "webencodings/x_user_defined.py"),
            protected=("webencodings/tests.py", *_CONFIG),
        ),
        Project(
            _pypi(
                "markupsafe",
                "2.0.1",
                "594c67807fb16238b30c44bdf74f36c02cdf22d1c8cda91ef8a0ed8dabf5620a",
                "MarkupSafe-2.0.1.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} tests",),
            sources=("src/markupsafe/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "simplejson",
                "3.19.3",
                "8e086896c36210ab6050f2f9f095a5f1e03c83fa0e7f296d6cba425411364680",
                "simplejson-3.19.3.tar.gz",
            ),
            build=(f"{_PYTEST} simplejson/tests",),
            sources=("simplejson/*.py",),
            protected=("simplejson/tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "pytz",
                "2024.2",
                "2aa355083c50a0f93fa581709deac0c9ad65cca8a9e9beac660adcbd493c798a",
                "pytz-2024.2.tar.gz",
            ),
            build=(f"{_PYTEST} pytz/tests",),
            sources=("pytz/*.py",),
            protected=("pytz/tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "semver",
                "3.0.2",
                "6253adb39c70f6e51afed2fa7152bcd414c411286088fb4b9effb133885ab4cc",
                "semver-3.0.2.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} tests",),
            sources=("src/semver/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "mistune",
                "3.0.2",
                "fc7f93ded930c92394ef2cb6f04a8aabab4117a91449e72dcc8dfa646a508be8",
                "mistune-3.0.2.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} tests",),
            sources=("src/mistune/*.py", "src/mistune/plugins/*.py", "src/mistune/renderers/*.py"),
            protected=("tests/**", *_CONFIG),
        ),
        Project(  # a real runtime dependency, served by the dependency mirror
            _pypi(
                "jsonpatch",
                "1.33",
                "9fcd4009c41e6d12348b4a0ff2563ba56a2923a7dfee731d004e212e1ee5030c",
                "jsonpatch-1.33.tar.gz",
            ),
            build=(f"{_PYTEST} tests.py",),
            sources=("jsonpatch.py",),
            protected=("tests.py", "tests.js", *_CONFIG),
            dependencies=(_JSONPOINTER,),
        ),
        Project(  # a real runtime dependency, served by the dependency mirror
            _pypi(
                "tinycss2",
                "1.3.0",
                "152f9acabd296a8375fbca5b84c961ff95971fcfc32e79550c8df8e29118c54d",
                "tinycss2-1.3.0.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("tinycss2/*.py",),
            protected=("tests/**", *_CONFIG),
            dependencies=(_WEBENCODINGS,),
        ),
        Project(  # two real dependencies; drift.py moves its mistune pin across the 2.0 rewrite
            _pypi(
                "m2r",
                "0.3.1",
                "aafb67fc49cfb1d89e46a3443ac747e15f4bb42df20ed04f067ad9efbee256ab",
                "m2r-0.3.1.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("m2r.py",),
            protected=("tests/**", *_CONFIG),
            dependencies=(
                _pypi(
                    "docutils",
                    "0.20.1",
                    "f08a4e276c3a1583a86dce3e34aba3fe04d02bba2dd51ed16106244e8a923e3b",
                    "docutils-0.20.1.tar.gz",
                ),
                _pypi(
                    "mistune",
                    "0.8.4",
                    "59a3429db53c50b5c6bcc8a07f8848cb00d7dc8bdb431a4ab41920d201d4756e",
                    "mistune-0.8.4.tar.gz",
                ),
            ),
        ),
        Project(
            _pypi(
                "h11",
                "0.14.0",
                "8f19fbbe99e72420ff35c00b27a34cb9937e902a8b810e2c88300c6f0a3b699d",
                "h11-0.14.0.tar.gz",
            ),
            build=(f"{_PYTEST} h11/tests",),
            sources=("h11/*.py",),
            protected=("h11/tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "uritemplate",
                "4.1.1",
                "4346edfc5c3b79f694bccd6d6099a322bbeb628dbf2cd86eea55a456ce5124f0",
                "uritemplate-4.1.1.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("uritemplate/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(  # its requirements.txt is a range ('contextlib2>=0.5.5'): pinned exactly here
            _pypi(
                "schema",
                "0.7.7",
                "7da553abd2958a19dc2547c388cde53398b39196175a9be59ea1caf5ab0a1807",
                "schema-0.7.7.tar.gz",
            ),
            build=(f"{_PYTEST} test_schema.py",),
            sources=("schema.py",),
            protected=("test_schema.py", *_CONFIG),
            dependencies=(
                _pypi(
                    "contextlib2",
                    "21.6.0",
                    "ab1e2bfe1d01d968e1b7e8d9023bc51ef3509bba217bb730cee3827e1ee82869",
                    "contextlib2-21.6.0.tar.gz",
                ),
            ),
        ),
        Project(
            _pypi(
                "voluptuous",
                "0.15.2",
                "6ffcab32c4d3230b4d2af3a577c87e1908a714a11f6f95570456b1849b0279aa",
                "voluptuous-0.15.2.tar.gz",
            ),
            build=(f"{_PYTEST} voluptuous/tests",),
            sources=("voluptuous/*.py",),
            protected=("voluptuous/tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "pathspec",
                "0.12.1",
                "a482d51503a1ab33b1c67a6c3813a26953dbdc71c31dacaef9a838c4e29f5712",
                "pathspec-0.12.1.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("pathspec/*.py", "pathspec/patterns/*.py"),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "semantic_version",
                "2.10.0",
                "bdabb6d336998cbb378d4b9db3a4b56a1e3235701dc05ea2690d9a997ed5041c",
                "semantic_version-2.10.0.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("semantic_version/base.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "text-unidecode",
                "1.3",
                "bad6603bb14d279193107714b288be206cac565dfa49aa5b105294dd5c4aab93",
                "text-unidecode-1.3.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} test_unidecode.py",),
            sources=("src/text_unidecode/*.py",),
            protected=("test_unidecode.py", *_CONFIG),
        ),
        Project(
            _pypi(
                "hyperframe",
                "6.0.1",
                "ae510046231dc8e9ecb1a6586f63d2347bf4c8905914aa84ba585ae85f28a914",
                "hyperframe-6.0.1.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} test",),
            sources=("src/hyperframe/*.py",),
            protected=("test/**", *_CONFIG),
            split="test",  # held out
        ),
        Project(
            _pypi(
                "configobj",
                "5.0.9",
                "03c881bbf23aa07bccf1b837005975993c4ab4427ba57f959afdd9d1a2386848",
                "configobj-5.0.9.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} src/tests",),
            sources=("src/configobj/*.py", "src/validate/*.py"),
            protected=("src/tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "validators",
                "0.28.3",
                "c6c79840bcde9ba77b19f6218f7738188115e27830cbaff43264bc4ed24c429d",
                "validators-0.28.3.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} tests",),
            sources=("src/validators/*.py", "src/validators/i18n/*.py"),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "simpleeval",
                "1.0.0",
                "f3d259deeb751d34c63e56747bab384efad63a2dbdb4f130281c42279788ac3c",
                "simpleeval-1.0.0.tar.gz",
            ),
            build=(f"{_PYTEST} test_simpleeval.py",),
            sources=("simpleeval.py",),
            protected=("test_simpleeval.py", *_CONFIG),
            split="test",  # held out
        ),
        Project(
            _pypi(
                "addict",
                "2.4.0",
                "b3b2210e0e067a281f5646c8c5db92e99b7231ea8b0eb5f74dbdf9e259d4e494",
                "addict-2.4.0.tar.gz",
            ),
            build=(f"{_PYTEST} test_addict.py",),
            sources=("addict/*.py",),
            protected=("test_addict.py", *_CONFIG),
        ),
        Project(
            _pypi(
                "tabulate",
                "0.9.0",
                "0095b12bf5966de529c0feb1fa08671671b3368eec77d7ef7ab114be2c068b3c",
                "tabulate-0.9.0.tar.gz",
            ),
            build=(f"{_PYTEST} test",),
            sources=("tabulate/*.py",),
            protected=("test/**", *_CONFIG),
        ),
        Project(  # two tests read the toml-test suite, which the sdist does not ship
            _pypi(
                "toml",
                "0.10.2",
                "b3bda1d108d5dd99f4a20d24d9c348e91c4db7ab1b749200bded2f839ccbe68f",
                "toml-0.10.2.tar.gz",
            ),
            build=(
                f"{_PYTEST} tests --deselect tests/test_api.py::test_valid_tests"
                " --deselect tests/test_api.py::test_invalid_tests",
            ),
            sources=("toml/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "webcolors",
                "24.8.0",
                "08b07af286a01bcd30d583a7acadf629583d1f79bfef27dd2c2c5c263817277d",
                "webcolors-24.8.0.tar.gz",
            ),
            build=(f"PYTHONPATH=src:$PYTHONPATH {_PYTEST} tests",),
            sources=("src/webcolors/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "u-msgpack-python",
                "2.8.0",
                "b801a83d6ed75e6df41e44518b4f2a9c221dc2da4bcd5380e3a0feda520bc61a",
                "u-msgpack-python-2.8.0.tar.gz",
            ),
            build=(f"{_PYTEST} test_umsgpack.py",),
            sources=("umsgpack/*.py",),
            protected=("test_umsgpack.py", *_CONFIG),
        ),
        Project(
            _pypi(
                "dictdiffer",
                "0.9.0",
                "17bacf5fbfe613ccf1b6d512bd766e6b21fb798822a133aa86098b8ac9997578",
                "dictdiffer-0.9.0.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("dictdiffer/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "schedule",
                "1.2.2",
                "15fe9c75fe5fd9b9627f3f19cc0ef1420508f9f9a46f45cd0769ef75ede5f0b7",
                "schedule-1.2.2.tar.gz",
            ),
            build=(f"{_PYTEST} test_schedule.py",),
            sources=("schedule/*.py",),
            protected=("test_schedule.py", *_CONFIG),
        ),
        Project(  # two tests fail on Python 3.11 (the int string limit, a stdlib round trip)
            _pypi(
                "astor",
                "0.8.1",
                "6a6effda93f4e1ce9f618779b2dd1d9d84f1e32812c23a29b3fff6fd7f63fa5e",
                "astor-0.8.1.tar.gz",
            ),
            build=(
                f"{_PYTEST} tests --deselect tests/test_code_gen.py::CodegenTestCase::test_huge_int"
                " --deselect tests/test_rtrip.py::RtripTestCase::test_convert_stdlib",
            ),
            sources=("astor/*.py",),
            protected=("tests/**", *_CONFIG),
        ),
        Project(
            _pypi(
                "unidecode",
                "1.3.8",
                "cfdb349d46ed3873ece4586b96aa75258726e2fa8ec21d6f00a591d98806c2f4",
                "Unidecode-1.3.8.tar.gz",
            ),
            build=(f"{_PYTEST} tests",),
            sources=("unidecode/__init__.py", "unidecode/util.py"),  # not the x*.py tables
            protected=("tests/**", *_CONFIG),
        ),
        Project(  # its conftest.py uses a hook argument pytest 9 removed: --noconftest
            _pypi(
                "boltons",
                "24.0.0",
                "7153feccaea1ff2e1472f68d4b57fadb796a2ee49d29f638f1c9cd8fb5ebd916",
                "boltons-24.0.0.tar.gz",
            ),
            build=(f"{_PYTEST} --noconftest tests",),
            sources=("boltons/*.py",),
            protected=("tests/**", *_CONFIG),
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
        Project(  # cmark: API tests, the CommonMark spec, smart punctuation, regressions
            _debian(
                "cmark",
                "0.30.2-6",
                "ba2b32318538b710166cfa2b256b0c8dc9eab6b2d68de3027cff53ce2639cb99",
            ),
            # not the pathological-input tests: 10 s of timing a quadratic blow-up
            build=cmake_build(select="-E pathological"),
            test_step=2,
            sources=("src/*.c", "src/CMakeLists.txt"),
            protected=("test/**", "api_test/**"),
            timeout_s=180,
            build_system="cmake",
        ),
        Project(  # lz4: upstream's frame and block fuzz testers, fixed seeds and iterations
            _debian(
                "lz4",
                "1.9.4-1",
                "e16302bca544d08d106efc216541f4a0403c8f8a5fad5eaac7588223a55af263",
            ),
            build=(
                "CFLAGS=-O0 make -j2 -C tests frametest fuzzer",
                "./tests/frametest -s1 -i60",
                "./tests/fuzzer -s1 -i15",
            ),
            test_step=1,
            sources=("lib/lz4.c", "lib/lz4hc.c", "lib/lz4frame.c", "tests/Makefile"),
            protected=("tests/*.c", "tests/*.h"),
            timeout_s=120,
            build_system="make",
        ),
        Project(  # expat: runtests, its 345 checks of the parser, through ctest
            _debian(
                "expat",
                "2.5.0-1+deb12u2",
                "6fc87dbd01f49999ed368cfb37c08d35e41348dda2281d60642f3aa14cb77e32",
            ),
            build=cmake_build(
                "-DEXPAT_BUILD_DOCS=OFF",
                "-DEXPAT_BUILD_EXAMPLES=OFF",
                "-DEXPAT_BUILD_TOOLS=OFF",
                source="expat",
                # not runtestspp: the same checks again, the library rebuilt as C++
                select="-R ^runtests$",
                targets="runtests",
            ),
            test_step=2,
            sources=(
                "expat/lib/xmlparse.c",
                "expat/lib/xmlrole.c",
                "expat/lib/xmltok.c",
                "expat/CMakeLists.txt",
            ),
            protected=("expat/tests/**",),
            timeout_s=180,
            build_system="cmake",
            split="test",  # held out: a C project never seen in training
        ),
    )
}


# -- JavaScript (npm registry tarballs). The test runner (tape) and what the tests require come
# from a pinned lock (npm_locks), installed as a flat node_modules from the tarballs (npm.py).
from .npm import lock_specs, tap_build  # noqa: E402 - the npm block extends the list above
from .npm_locks import (  # noqa: E402
    DEEP_DIFF_TESTS,
    JSON_STABLE_STRINGIFY_TESTS,
    MOCHA_10_8_2,
    NUMERAL_TESTS,
    QS_TESTS,
    TAPE_5_9_0,
    TRAVERSE_TESTS,
    URL_TESTS,
)


@dataclass(frozen=True)
class NpmProject(Project):
    """An npm project: ``node_modules`` is the pinned closure its tests run with (test runner
    and runtime dependencies alike, each package once); ``dependencies`` (the Python mirror)
    stays empty."""

    node_modules: tuple[SourceSpec, ...] = ()
    build_system: str = "npm"


def _npm(name: str, version: str, sha512: str) -> SourceSpec:
    """A tarball from the npm registry, pinned by its ``dist.integrity`` (as hex)."""
    return SourceSpec("npm", name, version, f"sha512:{sha512}", filename=f"{name}-{version}.tgz")


# tape over every test file; the build prints TESTS RAN: <assertions> (npm.tap_build)
_TAPE = tap_build("node_modules/.bin/tape 'test/**/*.js'")


def _mocha(tests: str) -> str:
    """mocha over ``tests`` with its TAP reporter; the build prints TESTS RAN: <tests run>."""
    return tap_build(f"node_modules/.bin/mocha -R tap {tests}")


_NPM_PROTECTED = ("test/**", "node_modules/**")

PROJECTS.update(
    {
        p.name: p
        for p in (
            NpmProject(
                _npm(
                    "minimist",
                    "1.2.8",
                    "db2c8047ca8190ddd8ba17896a7529582e54ddb6f9a2c0f2c0d07c4730d5943c"
                    "031dba1c009bdeaaa8f5bbcf92543ee39164f8cafb070a95aaa96a80c5bd3308",
                ),
                build=(_TAPE,),
                sources=("index.js", "package.json"),
                protected=_NPM_PROTECTED,
                node_modules=lock_specs(TAPE_5_9_0),
                timeout_s=60,
            ),
            NpmProject(
                _npm(
                    "shell-quote",
                    "1.8.1",
                    "ea3d56f65d6202cff8c58048d5260e559c857028acf5be0a08b43c7e00061b4e"
                    "d0bf36912d555142f032f39c8d9a66528d88e0e0c5a1e2036f94fba353fe4ba4",
                ),
                build=(_TAPE,),
                sources=("index.js", "parse.js", "quote.js", "package.json"),
                protected=_NPM_PROTECTED,
                node_modules=lock_specs(TAPE_5_9_0),
                timeout_s=60,
                split="test",  # held out: a project never seen in training
            ),
            NpmProject(
                _npm(
                    "json-stable-stringify",
                    "1.1.1",
                    "494ffdef52ade6a5507c9a720ef795850fefc9afb986fae30a514e72bf1cd05a"
                    "b968e0c98ccc2eb6b39f094f9e0a7543e60a71d50ddf12a932a26efbcc7d6222",
                ),
                build=(_TAPE,),
                sources=("index.js", "package.json"),
                protected=_NPM_PROTECTED,
                # its runtime dependencies (call-bind, isarray, jsonify, object-keys) too
                node_modules=lock_specs(TAPE_5_9_0, JSON_STABLE_STRINGIFY_TESTS),
                timeout_s=60,
            ),
            NpmProject(
                _npm(
                    "traverse",
                    "0.6.8",
                    "6972436e4e929ee9ae69948035ddb55c0a35e6e7020c4dfc1f87e4aa21ac7373"
                    "2108afb03a566f2cff5c07f4efa474f498ec96802e19f04c11973a98494cddb0",
                ),
                build=(_TAPE,),
                sources=("index.js", "package.json"),
                protected=_NPM_PROTECTED,
                node_modules=lock_specs(TAPE_5_9_0, TRAVERSE_TESTS),
                timeout_s=60,
            ),
            NpmProject(
                _npm(
                    "qs",
                    "6.13.0",
                    "fb7f2a23d48eafcb5f67842624da65314c6a8db7bb2cabef66059d13104e99df"
                    "9e8194ed8cb07aec6bb41d15f7bbf5ceabb514d8dc7a9ec8ef4b5e99f6ec1fa6",
                ),
                build=(_TAPE,),
                sources=("lib/*.js", "package.json"),
                protected=_NPM_PROTECTED,
                node_modules=lock_specs(TAPE_5_9_0, QS_TESTS),
                timeout_s=60,
            ),
            NpmProject(
                _npm(
                    "wordwrap",
                    "1.0.0",
                    "82f57324594fc9c29ce5d64de323e43fcc3b0dcdfb06d3f5c9ccc49de39be2ea"
                    "b7e295d972faed45399657c5be5267be5c2c4a81b8ccfa77af93214f3326dde1",
                ),
                build=(_TAPE,),
                sources=("index.js", "package.json"),
                protected=_NPM_PROTECTED,
                node_modules=lock_specs(TAPE_5_9_0),
                timeout_s=60,
            ),
            # mocha (BDD suites), its TAP reporter counting the tests run
            NpmProject(  # numeral: chai expectations over formats and locales
                _npm(
                    "numeral",
                    "2.0.6",
                    "a9a2919ad60f679a9dc388d6243e9bc447f514912a96526bc3108b226d2c414f"
                    "c0eefdbf7338a0cce6fe0b6b92885b1af65054cde1fb335a0af90f8e2f12f790",
                ),
                build=(_mocha("'tests/**/*.js'"),),
                # not src/: a copy of the modules the release's numeral.js is built from
                sources=("numeral.js", "locales.js", "package.json"),
                protected=("tests/**", "node_modules/**"),
                node_modules=lock_specs(MOCHA_10_8_2, NUMERAL_TESTS),
                timeout_s=60,
            ),
            NpmProject(  # deep-diff: expect.js assertions
                _npm(
                    "deep-diff",
                    "1.0.2",
                    "6964b7508547f8d3c6083d64922f83094f43b9ad37da24ac3b8dcba90a5cb384"
                    "77f9d56feed5f4a811a38951c91e3a65b2850cd9744efca07dda096a73af1ac2",
                ),
                build=(_mocha("'test/**/*.js'"),),
                sources=("index.js", "package.json"),
                protected=_NPM_PROTECTED,
                node_modules=lock_specs(MOCHA_10_8_2, DEEP_DIFF_TESTS),
                timeout_s=60,
            ),
            NpmProject(  # url: node's url module for browsers; runtime deps punycode and qs
                _npm(
                    "url",
                    "0.11.3",
                    "ea1c4e2c67d901240afdc8a39599d9253abc397024b7fdd819f417e39bef3185"
                    "e9668a3c35d599718ef72b5d3c25fef9f654b506fffcc179c70d34b3d7b75247",
                ),
                build=(_mocha("'test/*.js'"),),
                sources=("url.js", "package.json"),
                protected=_NPM_PROTECTED,
                node_modules=lock_specs(MOCHA_10_8_2, URL_TESTS),
                timeout_s=60,
            ),
            NpmProject(  # process: the browser shim (nextTick, vm), tested against node's
                _npm(
                    "process",
                    "0.11.10",
                    "71d19e7ff76b585a32743d49b0ccee15ff35d349d997e193fb269c7366c471e7"
                    "797fd463938cfe5ad1544c1bbd3e13a2f63fe37e604fbb498c118e3021d005f0",
                ),
                build=(_mocha("test.js"),),
                sources=("browser.js", "package.json"),
                protected=("test.js", "node_modules/**"),
                node_modules=lock_specs(MOCHA_10_8_2),
                timeout_s=60,
                split="test",  # held out: an npm project and runner setup never trained on
            ),
            # node's own test runner (node:test): nothing to install, the TAP reporter counts
            NpmProject(  # process-warning: warnings created, emitted once, reset, silenced
                _npm(
                    "process-warning",
                    "5.0.0",
                    "6b7f6df40a47371d8be3e1c19d02aac711cdb35afb285f889ed77c43f8356d48"
                    "7aab4588a7dbe83d727fc748fe64be39285d6925df7eab68cb21131fbc4b2190",
                ),
                build=(tap_build("node --test --test-reporter=tap test/"),),
                sources=("index.js", "package.json"),
                protected=("test/**",),  # no node_modules: it requires nothing
                timeout_s=60,
            ),
        )
    }
)
