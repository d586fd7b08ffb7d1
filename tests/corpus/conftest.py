"""Shared fixtures for the corpus tests: a private cache, a tiny synthetic sdist (a package and
its pytest tests) and local registries (PyPI JSON API, npm) that serve it from files, so the
real fetch code runs with no network."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from jaxrepair.corpus.projects import Project
from jaxrepair.corpus.sources import SourceSpec
from jaxrepair.envs.sandbox import SandboxUnavailable, make_sandbox
from tests.environ import environ

CORE = '''"""A tiny arithmetic package."""

import math


def add(a, b):
    return a + b


def is_big(x):
    return x >= 100


def hypot(a, b):
    return math.sqrt(a * a + b * b)
'''

TESTS = """from minicalc.core import add, hypot, is_big


def test_add():
    assert add(2, 3) == 5


def test_is_big():
    assert is_big(500)
    assert not is_big(1)


def test_hypot():
    assert hypot(3, 4) == 5.0
"""

FILES = {
    "minicalc/__init__.py": '"""minicalc."""\n',
    "minicalc/core.py": CORE,
    "tests/test_core.py": TESTS,
    "setup.cfg": "[metadata]\nname = minicalc\nversion = 1.0.0\n",
    "PKG-INFO": "Metadata-Version: 2.1\nName: minicalc\nVersion: 1.0.0\n",
}


def make_tarball(
    path: Path, top: str, files: dict[str, str], extra: dict[str, str] | None = None
) -> Path:
    """A .tar.gz with every file under ``top/`` (as an sdist lays it out); ``extra`` members
    are added with their names as given (e.g. an escaping ``../evil``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in [*((f"{top}/{k}", v) for k, v in files.items()), *(extra or {}).items()]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def fake_pypi(
    root: Path, name: str, version: str, archive: Path, stated_sha256: str | None = None
) -> str:
    """A PyPI JSON API laid out under ``root`` (``<name>/json``, files under ``files/``, a
    relative URL as the real API's mirrors give); returns the index URL."""
    sha = stated_sha256 or hashlib.sha256(archive.read_bytes()).hexdigest()
    doc = {
        "info": {"name": name, "version": version},
        "releases": {
            version: [
                {
                    "packagetype": "sdist",
                    "filename": archive.name,
                    "url": f"../../files/{archive.name}",
                    "digests": {"sha256": sha},
                }
            ]
        },
    }
    (root / "pypi" / name).mkdir(parents=True, exist_ok=True)
    (root / "pypi" / name / "json").write_text(json.dumps(doc))
    (root / "files").mkdir(exist_ok=True)
    if archive.parent != root / "files":
        (root / "files" / archive.name).write_bytes(archive.read_bytes())
    return (root / "pypi").as_uri()


def fake_npm(root: Path, name: str, version: str, archive: Path) -> str:
    """An npm registry document at ``npm/<name>`` stating the tarball's sha512 integrity."""
    sri = "sha512-" + base64.b64encode(hashlib.sha512(archive.read_bytes()).digest()).decode()
    dist = {"tarball": f"../tarballs/{archive.name}", "integrity": sri}
    (root / "npm").mkdir(parents=True, exist_ok=True)
    (root / "npm" / name).write_text(
        json.dumps({"name": name, "versions": {version: {"dist": dist}}})
    )
    (root / "tarballs").mkdir(exist_ok=True)
    (root / "tarballs" / archive.name).write_bytes(archive.read_bytes())
    return (root / "npm").as_uri()


@pytest.fixture(scope="package", autouse=True)
def private_cache(tmp_path_factory):
    """A private jaxrepair cache and an empty corpus package index for these tests."""
    cache, packages = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("packages")
    with environ(JAXREPAIR_CACHE=str(cache), JAXREPAIR_PACKAGES_DIR=str(packages)):
        yield cache


@pytest.fixture
def sdist(tmp_path) -> Path:
    return make_tarball(tmp_path / "dl" / "minicalc-1.0.0.tar.gz", "minicalc-1.0.0", FILES)


@pytest.fixture
def pypi_spec(tmp_path, sdist) -> SourceSpec:
    index = fake_pypi(tmp_path / "registry", "minicalc", "1.0.0", sdist)
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    return SourceSpec("pypi", "minicalc", "1.0.0", f"sha256:{sha}", sdist.name, index)


@pytest.fixture
def project(pypi_spec) -> Project:
    return Project(
        pypi_spec,
        build=("python -m pytest -q -p no:cacheprovider -o addopts= tests",),
        sources=("minicalc/*.py",),
        protected=("tests/**", "setup.cfg", "tox.ini"),
        timeout_s=60,
    )


@pytest.fixture(scope="package")
def local_sandbox(private_cache):
    try:
        return make_sandbox("local")
    except SandboxUnavailable as e:
        pytest.skip(f"local sandbox unavailable: {e}")


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def fake_debian(pool: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A Debian pool directory holding ``<name>_<upstream>.orig.tar.gz`` (the files under
    ``<name>-<upstream>/``) and the ``.dsc`` that pins it by sha256; returns the .dsc."""
    upstream = version.split(":", 1)[-1].rsplit("-", 1)[0]
    orig = make_tarball(pool / f"{name}_{upstream}.orig.tar.gz", f"{name}-{upstream}", files)
    sha = hashlib.sha256(orig.read_bytes()).hexdigest()
    dsc = pool / f"{name}_{version.split(':', 1)[-1]}.dsc"
    dsc.write_text(
        f"Source: {name}\nVersion: {version}\n"
        f"Checksums-Sha256:\n {sha} {orig.stat().st_size} {orig.name}\n"
    )
    return dsc
