"""Pinned dependencies: the wheel index built from package sources, pins files, and cached,
isolated, concurrency-safe environments. Oracle: the installed files and a real interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from jaxrepair.envs import deps


def test_versions_and_index(private_cache):
    assert deps.packages_dir().name == "packages"
    assert deps.available_versions("greetlib") == ["1.0.0", "2.0.0"]
    assert deps.available_versions("GreetLib") == ["1.0.0", "2.0.0"]  # PEP 503 names
    assert deps.available_versions("nope") == []
    index = deps.package_index_dir()
    assert sorted(p.name for p in index.glob("*.whl")) == [
        "greetlib-1.0.0-py3-none-any.whl",
        "greetlib-2.0.0-py3-none-any.whl",
    ]
    assert index.is_relative_to(private_cache)
    assert deps.package_index_dir() == index  # built once


def test_read_and_write_pins(tmp_path):
    (tmp_path / "requirements.txt").write_text("# pins\ngreetlib==1.0.0  # old\n\n")
    assert deps.read_pins(tmp_path) == {"greetlib": "1.0.0"}
    deps.write_pin(tmp_path, "greetlib", "2.0.0")
    assert deps.read_pins(tmp_path) == {"greetlib": "2.0.0"}
    assert "# pins" in (tmp_path / "requirements.txt").read_text()  # other lines kept
    with pytest.raises(deps.DepsError, match="no version '3.0.0'; available: 1.0.0, 2.0.0"):
        deps.write_pin(tmp_path, "greetlib", "3.0.0")
    with pytest.raises(deps.DepsError, match="not in the corpus package index"):
        deps.write_pin(tmp_path, "requests", "2.0.0")
    for bad in ("greetlib>=1.0", "greetlib", "-e .", "https://x/y.whl", "--index-url http://x"):
        (tmp_path / "requirements.txt").write_text(bad + "\n")
        with pytest.raises(deps.DepsError, match="line 1"):
            deps.read_pins(tmp_path)
    (tmp_path / "requirements.txt").unlink()
    assert deps.read_pins(tmp_path) == {}
    deps.write_pin(tmp_path, "greetlib", "1.0.0")
    assert deps.read_pins(tmp_path) == {"greetlib": "1.0.0"}


def test_pins_hash_is_canonical():
    assert deps.pins_hash({"a": "1", "b": "2"}) == deps.pins_hash({"b": "2", "A": "1"})
    assert deps.pins_hash({"a": "1"}) != deps.pins_hash({"a": "2"})


def _run_in_env(env, code):
    """Run code with the base interpreter, isolated (-I drops PYTHONPATH, so set sys.path)."""
    py = getattr(sys, "_base_executable", sys.executable)
    return subprocess.run(
        [py, "-S", "-c", f"import sys; sys.path.insert(0, {str(env / 'site')!r}); {code}"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )


def test_env_for_pins_installs_exactly_the_pins(private_cache):
    e1 = deps.env_for_pins({"greetlib": "1.0.0"})
    e2 = deps.env_for_pins({"greetlib": "2.0.0"})
    assert e1 != e2 and deps.env_for_pins({"greetlib": "1.0.0"}) == e1  # cached by pins
    manifest = json.loads((e1 / "manifest.json").read_text())
    assert manifest["pins"] == {"greetlib": "1.0.0"}
    for env, version, api in ((e1, "1.0.0", "hello"), (e2, "2.0.0", "greet")):
        r = _run_in_env(
            env, f"import greetlib; print(greetlib.__version__, hasattr(greetlib, {api!r}))"
        )
        assert r.stdout.split() == [version, "True"], r.stderr
    r = _run_in_env(e1, "import pytest; print(pytest.__version__)")  # the test tools come along
    assert r.returncode == 0 and r.stdout.strip()
    bare = deps.env_for_pins({})
    assert not (bare / "site" / "greetlib").exists() and (bare / "site" / "pytest").is_dir()
    with pytest.raises(deps.DepsError, match="greetlib==9.0 is not in the corpus package index"):
        deps.env_for_pins({"greetlib": "9.0"})
    with pytest.raises(deps.DepsError, match="'requests' is not in the corpus"):
        deps.env_for_pins({"requests": "2.31.0"})  # never fetched from PyPI


def test_env_build_is_concurrency_safe(private_cache, tmp_path, monkeypatch):
    # a fresh cache so that the environment really gets built by racing threads
    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path / "cache"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        envs = list(pool.map(lambda _: deps.env_for_pins({"greetlib": "2.0.0"}), range(4)))
    assert len(set(envs)) == 1
    built = [p for p in (tmp_path / "cache" / "envs").iterdir() if p.is_dir()]
    assert built == [envs[0]]  # one environment, no leftover temp dirs
    assert (envs[0] / "manifest.json").is_file()


def test_index_rebuilds_when_sources_change(tmp_path, monkeypatch):
    import shutil

    from .conftest import FIXTURES

    pkgs = tmp_path / "packages"
    shutil.copytree(FIXTURES / "packages", pkgs)
    monkeypatch.setenv("JAXREPAIR_PACKAGES_DIR", str(pkgs))
    first = deps.package_index_dir()
    init = pkgs / "greetlib/2.0.0/greetlib/__init__.py"
    init.write_text(init.read_text() + "\nEXTRA = 1\n")
    os.utime(init.parent.parent, None)
    second = deps.package_index_dir()
    assert first != second
    assert not list(pkgs.rglob("*.egg-info")) and not (pkgs / "greetlib/2.0.0/build").exists()


def test_simple_wheel_builder_matches_setuptools(tmp_path):
    """The no-setuptools fallback builds a wheel pip installs like the setuptools one."""
    import zipfile

    from .conftest import FIXTURES

    src = FIXTURES / "packages/greetlib/2.0.0"
    simple = deps.build_wheel_simple(src, tmp_path)
    assert simple.name == "greetlib-2.0.0-py3-none-any.whl"
    ref = next((deps.package_index_dir()).glob("greetlib-2.0.0-*.whl"))
    modules = lambda w: sorted(
        n for n in zipfile.ZipFile(w).namelist() if not n.startswith("greetlib-")
    )  # noqa: E731
    assert modules(simple) == modules(ref) == ["greetlib/__init__.py"]
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(simple),
        ],
        check=True,
        env=deps._pip_env(),
    )
    r = _run_in_env(
        tmp_path,
        "import greetlib, importlib.metadata as m; print(greetlib.greet('x'), m.version('greetlib'))",
    )
    assert r.stdout.split() == ["Hello,", "x!", "2.0.0"], r.stderr
