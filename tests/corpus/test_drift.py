"""Dependency drift: a task's break moves a pin in requirements.txt to another release, its
fix moves it back. On synthetic releases served by a local registry, in the real local
sandbox: a moved pin is kept only when the build fails on it; the broken pin fails, another
wrong release fails, the pinned one passes; a version the mirror lacks fails naming the
versions it holds. The shipped drift entries fit their projects; (slow, network) a shipped
drift task rebuilt from PyPI behaves the same."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

import jaxrepair
from jaxrepair.corpus import drift, sources
from jaxrepair.corpus.build import build_corpus
from jaxrepair.corpus.drift import Drift, DriftError
from jaxrepair.corpus.manifest import Record, read_manifest, write_manifest
from jaxrepair.corpus.patches import file_diff
from jaxrepair.corpus.projects import PROJECTS
from jaxrepair.corpus.snapshots import snapshot
from jaxrepair.corpus.sources import SourceSpec, fetch
from jaxrepair.envs import deps
from jaxrepair.envs.reward import validate
from jaxrepair.envs.task import load_tasks

from .conftest import fake_pypi, make_tarball

SHIPPED = Path(jaxrepair.__file__).parent / "data" / "corpus_pypi.jsonl"

# driftdep's releases: 1.1 is compatible, 2.0 removes greet (renamed), 3.0 changes its default
RELEASES = {
    "1.0": 'def greet(name, greeting="hello"):\n    return greeting + " " + name\n',
    "1.1": 'def greet(name, greeting="hello"):\n    return greeting + " " + name\n\n\n'
    "def shout(name):\n    return greet(name).upper()\n",
    "2.0": 'def salute(name, greeting="hello"):\n    return greeting + " " + name\n',
    "3.0": 'def greet(name, greeting="hi"):\n    return greeting + " " + name\n',
}
CORE = "from driftdep import greet\n\n\ndef welcome(name):\n    return greet(name).title()\n"
TESTS = (
    "from tiny.core import welcome\n\n\n"
    "def test_welcome():\n    assert welcome('ada') == 'Hello Ada'\n"
)


def _spec(tmp_path: Path, name: str, version: str, files: dict[str, str]) -> SourceSpec:
    sdist = make_tarball(tmp_path / f"{name}-{version}.tar.gz", f"{name}-{version}", files)
    index = fake_pypi(tmp_path / f"reg-{name}-{version}", name, version, sdist)
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    return SourceSpec("pypi", name, version, f"sha256:{sha}", sdist.name, index)


def _release(tmp_path: Path, version: str) -> SourceSpec:
    setup = f'from setuptools import setup\n\nsetup(name="driftdep", version="{version}", '
    setup += 'py_modules=["driftdep"])\n'
    files = {"setup.py": setup, "driftdep.py": RELEASES[version]}
    return _spec(tmp_path, "driftdep", version, files)


def _swap(old: str, new: str) -> str:
    """A patch moving the driftdep pin in requirements.txt from old to new."""
    return file_diff("requirements.txt", f"driftdep=={old}\n", f"driftdep=={new}\n")


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, SourceSpec]:
    """driftdep's releases, made once: the mirror holds one source per version."""
    root = tmp_path_factory.mktemp("driftdep")
    return {v: _release(root, v) for v in RELEASES}


def _drift_project(tmp_path, project, monkeypatch, rel):
    """tinydrift pinning driftdep 1.0, with drift to the other releases and to 1.5 (missing)."""
    files = {"tiny/__init__.py": "", "tiny/core.py": CORE, "tests/test_core.py": TESTS}
    # a range, as jsonpatch's sdist ships: the exact pins replace it
    files["requirements.txt"] = "driftdep>=1.0\n"
    p = replace(
        project,
        source=_spec(tmp_path, "tinydrift", "1.0", files),
        sources=("tiny/*.py",),
        dependencies=(rel["1.0"],),
    )
    others = tuple(s for v, s in rel.items() if v != "1.0")
    monkeypatch.setitem(drift.DRIFTS, "tinydrift", (Drift("driftdep", others, "greet renamed"),))
    monkeypatch.setitem(drift.MISSING, "tinydrift", {"driftdep": "1.5"})
    return p, rel


def test_a_drift_task_is_fixed_only_by_the_right_pin(
    tmp_path, project, monkeypatch, local_sandbox, releases
):
    rel = {v: releases[v] for v in ("1.0", "2.0", "3.0")}
    p, rel = _drift_project(tmp_path, project, monkeypatch, rel)
    tree, th = snapshot(fetch(p.source))
    records = []
    for b in drift.breakages(p)["dependency"]:
        h = hashlib.sha256(b.break_patch.encode()).hexdigest()[:8]
        records.append(
            Record(
                id=f"tinydrift-1.0-dependency-{h}", project=p.name, version="1.0",
                source=p.source, tree_sha256=th, build_system="python", category=b.category,
                kind=b.kind, build=p.build, timeout_s=60.0, protected=("tests/**",),
                relevant_files=(b.path,), issue="The build fails.", break_patch=b.break_patch,
                fix_patch=b.fix_patch, pins=p.pins, dependency_sources=drift.mirror_sources(p),
            )
        )  # fmt: skip
    out = tmp_path / "corpus.jsonl"
    write_manifest(out, records)
    monkeypatch.delenv("JAXREPAIR_PACKAGES_DIR")  # the manifest's own mirror
    moved = {r.id: r.break_patch.splitlines()[-1] for r in records}  # the broken pin line
    tasks = {moved[t.id]: t for t in load_tasks(out)}
    assert sorted(tasks) == ["+driftdep==1.5", "+driftdep==2.0", "+driftdep==3.0"]
    removed = tasks["+driftdep==2.0"]  # greet removed
    assert (removed.repo_dir / "requirements.txt").read_text() == "driftdep==2.0\n"
    broken = validate(removed, "", local_sandbox)
    assert broken.outcome == "fail" and "cannot import name 'greet'" in broken.log
    assert validate(removed, _swap("2.0", "3.0"), local_sandbox).outcome == "fail"  # wrong too
    fixed = validate(removed, removed.fix_patch, local_sandbox)
    assert (fixed.outcome, fixed.reward) == ("pass", 1.0), fixed.log[-2000:]

    missing = tasks["+driftdep==1.5"]
    broken = validate(missing, "", local_sandbox)
    assert broken.outcome == "fail"
    held = ", ".join(deps.available_versions("driftdep"))  # what the mirror holds
    assert "1.0" in held and "2.0, 3.0" in held
    assert f"driftdep==1.5 is not in the corpus package index; available: {held}" in broken.log
    assert validate(missing, missing.fix_patch, local_sandbox).reward == 1.0


@pytest.mark.slow
def test_the_build_keeps_only_the_pins_the_tests_reject(
    tmp_path, project, monkeypatch, local_sandbox, releases
):
    p, rel = _drift_project(tmp_path, project, monkeypatch, releases)
    out = tmp_path / "corpus.jsonl"
    [res] = build_corpus(
        out, [p], sandbox=local_sandbox, categories=("dependency",), quota=5, max_tries=5,
        repeats=1, workers=1, progress=False,
    )  # fmt: skip
    # four moved pins were run; the compatible release 1.1 passed the tests and was dropped
    assert res.problem is None and (res.screened, res.caught) == (4, 3)
    records = {r.break_patch.splitlines()[-1]: r for r in read_manifest(out)}
    assert sorted(records) == ["+driftdep==1.5", "+driftdep==2.0", "+driftdep==3.0"]
    for r in records.values():
        assert r.category == "dependency" and r.pins == {"driftdep": "1.0"}
        assert r.relevant_files[0] == "requirements.txt"
        assert set(r.dependency_sources) == set(rel.values())
    assert records["+driftdep==1.5"].kind == "missing-version"
    assert "cannot import name 'greet' from 'driftdep'" in records["+driftdep==2.0"].issue
    assert "assert 'Hi Ada' == 'Hello Ada'" in records["+driftdep==3.0"].issue
    monkeypatch.delenv("JAXREPAIR_PACKAGES_DIR")
    [task] = [t for t in load_tasks(out) if t.id == records["+driftdep==3.0"].id]
    compatible = validate(task, _swap("3.0", "1.1"), local_sandbox)  # any release that fits
    assert (compatible.outcome, compatible.reward) == ("pass", 1.0)


def test_every_shipped_drift_entry_fits_its_project():
    for name in {*drift.DRIFTS, *drift.MISSING}:
        p = PROJECTS[name]
        [cands] = drift.breakages(p).values()
        mirrored = {(s.name, s.version) for s in drift.mirror_sources(p)}
        assert {(s.name, s.version) for s in p.dependencies} <= mirrored
        for b in cands:
            assert b.category == "dependency" and b.path == "requirements.txt"
            assert b.break_patch.startswith("diff --git a/requirements.txt b/requirements.txt")
            [line] = [
                ln[1:] for ln in b.break_patch.splitlines() if ln.startswith("+") and "==" in ln
            ]
            dep, version = line.split("==")
            # an api-drift release is served by the mirror; a missing version is not
            assert ((dep, version) in mirrored) == (b.kind == "api-drift"), (name, line)
            assert p.pins[dep] != version


def test_a_drift_must_move_a_pinned_dependency(project):
    with pytest.raises(DriftError, match="does not pin"):
        drift._pin_edit(project, "driftdep", "2.0", "api-drift")
    pinned = replace(project, dependencies=(PROJECTS["m2r"].dependencies))
    with pytest.raises(DriftError, match="the pinned version"):
        drift._pin_edit(pinned, "mistune", "0.8.4", "api-drift")


@pytest.mark.slow
def test_a_shipped_drift_task_is_fixed_only_by_the_right_pin(tmp_path, monkeypatch, local_sandbox):
    """m2r's mistune moved across the 2.0 rewrite, rebuilt from PyPI (network, cold cache)."""
    records = [r for r in read_manifest(SHIPPED) if r.project == "m2r" and r.kind == "api-drift"]
    [rec] = [r for r in records if "+mistune==2.0.5" in r.break_patch]
    path = tmp_path / "m2r.jsonl"
    write_manifest(path, [rec])
    monkeypatch.delenv("JAXREPAIR_PACKAGES_DIR")
    [task] = load_tasks(path)
    pins = "docutils==0.20.1\nmistune=={}\n"
    broken = validate(task, "", local_sandbox)
    assert broken.outcome == "fail" and "has no attribute 'BlockGrammar'" in broken.log
    other = file_diff("requirements.txt", pins.format("2.0.5"), pins.format("3.0.2"))
    assert validate(task, other, local_sandbox).outcome == "fail"
    fixed = validate(task, task.fix_patch, local_sandbox)
    assert (fixed.outcome, fixed.reward) == ("pass", 1.0), fixed.log[-2000:]


@pytest.mark.slow
def test_the_missing_versions_were_never_published():
    """Each missing-version pin is absent from PyPI's release list (network)."""
    for project, missing in drift.MISSING.items():
        for name, version in missing.items():
            releases = sources._get_json(f"{sources.PYPI_URL}/{name}/json")["releases"]
            assert releases and version not in releases, (project, name, version)
