"""The shipped real-world manifests parse (no network: records only), span the upstream
projects pinned by hash as the project list pins them, keep each project's tasks in one split,
and every fix patch is the inverse of its break patch. The C manifest's tasks, rebuilt from
their Debian sources, fail broken and pass fixed in the local sandbox (slow: it fetches).
The npm manifest's records carry their projects' node_modules lock."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

import jaxrepair
from jaxrepair.corpus import drift
from jaxrepair.corpus.manifest import read_manifest, record_split
from jaxrepair.corpus.projects import PROJECTS, NpmProject

SHIPPED = Path(jaxrepair.__file__).parent / "data" / "corpus_pypi.jsonl"
SHIPPED_C = SHIPPED.with_name("corpus_c.jsonl")
SHIPPED_NPM = SHIPPED.with_name("corpus_npm.jsonl")


def _changed(patch: str, sign: str) -> list[str]:
    head = sign * 3
    return [ln[1:] for ln in patch.splitlines() if ln.startswith(sign) and not ln.startswith(head)]


def _side(patch: str, sign: str) -> list[str]:
    """One side of a diff's hunks: context and the lines ``sign`` marks, in order."""
    body = [ln for ln in patch.splitlines() if not ln.startswith(("diff ", "--- ", "+++ "))]
    return [ln[1:] for ln in body if ln[:1] in (" ", sign)]


def test_the_shipped_manifest_is_well_formed():
    records = read_manifest(SHIPPED)
    assert len({r.project for r in records}) >= 25
    for r in records:
        assert r.source == PROJECTS[r.project].source and r.source.hash.startswith("sha256:")
        assert r.pins == PROJECTS[r.project].pins, r.id
        assert r.dependency_sources == drift.mirror_sources(PROJECTS[r.project]), r.id
        if r.category == "dependency":  # one pin moved: to a mirrored release, or a missing one
            assert r.break_patch.startswith("diff --git a/requirements.txt b/requirements.txt")
            [pin] = _changed(r.break_patch, "+")
            assert r.kind in ("api-drift", "missing-version"), r.id
            mirrored = {f"{d.name}=={d.version}" for d in r.dependency_sources}
            assert (pin in mirrored) == (r.kind == "api-drift"), r.id
        # a project's tasks never straddle train and out-of-project
        assert r.split == record_split(PROJECTS[r.project].split, r.break_patch), r.id
        # the fix undoes the break, hunk by hunk (two swapped lines may diff either way round)
        assert _side(r.fix_patch, "-") == _side(r.break_patch, "+"), r.id
        assert _side(r.fix_patch, "+") == _side(r.break_patch, "-"), r.id
    assert set(Counter(r.category for r in records)) == {
        "import",
        "signature",
        "logic",
        "type",
        "syntax",
        "dependency",
    }


def test_the_shipped_c_manifest_is_well_formed():
    records = read_manifest(SHIPPED_C)
    systems: dict[str, set[str]] = {}
    for r in records:
        p = PROJECTS[r.project]
        systems.setdefault(r.build_system, set()).add(r.project)
        assert r.source == p.source and r.source.registry == "debian", r.id
        assert r.source.hash.startswith("sha256:") and r.build_system == p.build_system
        assert r.build == p.build and set(r.protected) <= set(p.protected), r.id
        assert r.split == record_split(p.split, r.break_patch), r.id
        assert _changed(r.fix_patch, "-") == _changed(r.break_patch, "+"), r.id
        assert _changed(r.fix_patch, "+") == _changed(r.break_patch, "-"), r.id
    assert len(systems.get("make", ())) >= 3 and len(systems.get("cmake", ())) >= 3
    # a held-out C project (split test): all its tasks, no other project's
    assert {r.split for r in records} == {"train", "test_id", "test"}
    assert {r.project for r in records if r.split == "test"} == {
        n for n, p in PROJECTS.items() if p.split == "test" and p.source.registry == "debian"
    }
    assert set(Counter(r.category for r in records)) == {
        "import",
        "signature",
        "logic",
        "type",
        "syntax",
        "config",
    }


def test_the_shipped_npm_manifest_is_well_formed():
    records = read_manifest(SHIPPED_NPM)
    for r in records:
        p = PROJECTS[r.project]
        assert isinstance(p, NpmProject) and r.build == p.build, r.id
        assert r.source == p.source and r.source.registry == "npm", r.id
        assert r.source.hash.startswith("sha512:") and r.build_system == "npm", r.id
        assert r.dependency_sources == p.node_modules and not r.pins, r.id  # the lock
        assert set(r.protected) <= set(p.protected), r.id
        if r.dependency_sources:  # a node_modules: the runner and what the tests require
            assert "node_modules/**" in r.protected, r.id
        assert r.split == record_split(p.split, r.break_patch), r.id
        assert r.tests_ran is not None and r.tests_ran > 0, r.id  # TESTS RAN from the TAP
        assert _changed(r.fix_patch, "-") == _changed(r.break_patch, "+"), r.id
        assert _changed(r.fix_patch, "+") == _changed(r.break_patch, "-"), r.id
    assert len({r.project for r in records}) >= 10
    assert {r.split for r in records} >= {"train", "test"}
    # the test runners: tape and mocha, each from the record's own lock, and node's own
    runners = {r.build[0].split()[0] for r in records}
    assert runners == {"node_modules/.bin/tape", "node_modules/.bin/mocha", "node"}
    for r in records:
        runner = r.build[0].split()[0]
        if runner == "node":
            assert r.build[0].startswith("node --test --test-reporter=tap "), r.id
        else:
            assert runner.rsplit("/", 1)[-1] in {s.name for s in r.dependency_sources}, r.id
    assert set(Counter(r.category for r in records)) == {
        "import",
        "signature",
        "logic",
        "type",
        "syntax",
        "config",
    }


@pytest.mark.slow
def test_shipped_c_tasks_fail_broken_and_pass_fixed(local_sandbox):
    """One task per build system, materialised from its pinned Debian source (network on a
    cold cache) and validated as ``jaxrepair envs validate`` does."""
    from jaxrepair.envs.corpus_validate import validate_corpus
    from jaxrepair.envs.task import load_tasks

    if not all(shutil.which(t) for t in ("gcc", "g++", "make", "cmake")):
        pytest.skip("needs gcc, g++, make and cmake")
    tasks = load_tasks(SHIPPED_C)
    sample = [
        min((t for t in tasks if t.build_system == bs), key=lambda t: t.id)
        for bs in ("make", "cmake")
    ]
    report = validate_corpus(
        sample, local_sandbox, repeats=1, workers=1, progress=False, print_summary=False
    )
    assert report.ok, [t.problems for t in report.tasks]
