"""The bundled corpus: size, categories, splits by seed project, task fields, real API drift
between package versions, and a deterministic generator that reproduces the committed tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections import Counter

import pytest

from jaxrepair.data.tasks import generate as gen
from jaxrepair.envs import deps

from .conftest import CORPUS


def test_corpus_shape(corpus_tasks):
    assert len(corpus_tasks) >= 150
    cats = Counter(t.category for t in corpus_tasks)
    assert len(cats) >= 4 and all(n >= 10 for n in cats.values()), cats
    assert {t.build_system for t in corpus_tasks} == {"python", "make"}
    seed_split: dict[str, set] = {}
    for t in corpus_tasks:
        seed = tomllib.loads((t.root / "task.toml").read_text())["seed_project"]
        assert t.id.startswith(seed + "-")
        seed_split.setdefault(seed, set()).add(t.split)
    assert all(len(s) == 1 for s in seed_split.values()), seed_split  # split by seed project
    assert {next(iter(s)) for s in seed_split.values()} == {"train", "test"}
    size = sum(f.stat().st_size for f in CORPUS.parent.rglob("*") if f.is_file())
    assert size < 3_000_000, f"corpus folder holds {size} bytes"


def test_task_fields(corpus_tasks):
    for t in corpus_tasks:
        assert "tests/**" in t.protected
        assert t.relevant_files and all((t.repo_dir / f).is_file() for f in t.relevant_files), t.id
        assert "```" in t.issue and len(t.issue) < 4000
        assert t.fix_patch.startswith("diff --git a/")
        if t.build_system == "python":
            assert t.dependencies == deps.read_pins(t.repo_dir), t.id
            assert t.build == ("python -m pytest -q",)
        else:
            assert t.dependencies == {} and t.build == ("make test",)
        # the fix never touches what the task protects
        touched = {line[6:] for line in t.fix_patch.splitlines() if line.startswith("+++ b/")}
        assert not any(p.startswith("tests/") for p in touched), t.id


def _api(pkg: str, version: str, code: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": str(gen.PACKAGES_DIR / pkg / version),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    ).stdout.strip()


def test_package_versions_really_differ():
    names = "import {0}, pkgutil; print(sorted(n for n in dir({0}) if not n.startswith('_')))"
    assert "slugify" in _api("slugkit", "1.0.0", names.format("slugkit"))
    assert "slugify" not in _api("slugkit", "2.0.0", names.format("slugkit"))
    assert "'convert'" in _api("unitconv", "1.0.0", names.format("unitconv"))
    assert "'convert'" not in _api("unitconv", "2.0.0", names.format("unitconv"))  # moved to .core
    ret = "from unitconv.core import convert; import inspect; print(inspect.signature(convert))"
    assert _api("unitconv", "2.0.0", ret) == "(value, src, dst)"
    assert _api("unitconv", "3.0.0", ret) == "(value, *, src, dst)"
    assert (
        _api(
            "confparse",
            "1.0.0",
            "import confparse; print(type(confparse.parse('[a]\\nb = 1')).__name__)",
        )
        == "dict"
    )
    assert (
        _api(
            "confparse",
            "2.0.0",
            "import confparse; print(type(confparse.loads('[a]\\nb = 1')).__name__)",
        )
        == "Config"
    )
    for pkg in ("slugkit", "unitconv", "confparse"):
        assert len(deps.available_versions(pkg)) >= 2


def test_generator_is_deterministic_and_matches_the_committed_corpus(tmp_path):
    """Regenerating one seed (C, the fastest) reproduces the committed tasks byte for byte."""
    gen.generate(tmp_path, write=True, verbose=False, seeds=["cstr"])
    made = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in CORPUS.iterdir() if p.name.startswith("cstr-"))
    assert made == committed and len(made) >= 25
    for name in made:
        # repo and reference fix byte for byte; the issue text (compiler messages) only up to
        # the toolchain, so it is compared in the slow full-regeneration test
        a, b = gen.read_tree(tmp_path / name), gen.read_tree(CORPUS / name)
        a_toml, b_toml = tomllib.loads(a.pop("task.toml")), tomllib.loads(b.pop("task.toml"))
        assert a == b, name
        assert {**a_toml, "issue": ""} == {**b_toml, "issue": ""}, name
        assert a_toml["issue"].splitlines()[-3:] == b_toml["issue"].splitlines()[-3:], name


def test_unified_diff_applies_with_git(tmp_path):
    old = {"a.txt": "1\n2\n3\n", "b/c.txt": "x\n"}
    new = {"a.txt": "1\nTWO\n3\n", "b/c.txt": "x", "d.txt": "new\n"}
    gen.write_tree(old, tmp_path)
    patch = gen.unified_diff(old, new)
    subprocess.run(["git", "apply", "-p1", "-"], input=patch.encode(), cwd=tmp_path, check=True)
    assert gen.read_tree(tmp_path) == new


@pytest.mark.slow
def test_full_regeneration_matches(tmp_path):
    gen.generate(tmp_path, write=True, verbose=False)
    assert gen.read_tree(tmp_path) == gen.read_tree(CORPUS)
