"""The shipped real-world manifests parse (no network: records only), span the upstream
projects pinned by hash as the project list pins them, keep each project's tasks in one split,
and every fix patch is the inverse of its break patch. The C manifest's tasks, rebuilt from
their Debian sources, fail broken and pass fixed in the local sandbox (slow: it fetches)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

import jaxrepair
from jaxrepair.corpus.manifest import read_manifest, record_split
from jaxrepair.corpus.projects import PROJECTS

SHIPPED = Path(jaxrepair.__file__).parent / "data" / "corpus_pypi.jsonl"
SHIPPED_C = SHIPPED.with_name("corpus_c.jsonl")


def _changed(patch: str, sign: str) -> list[str]:
    head = sign * 3
    return [ln[1:] for ln in patch.splitlines() if ln.startswith(sign) and not ln.startswith(head)]


def test_the_shipped_manifest_is_well_formed():
    records = read_manifest(SHIPPED)
    assert len({r.project for r in records}) >= 5
    for r in records:
        assert r.source == PROJECTS[r.project].source and r.source.hash.startswith("sha256:")
        # a project's tasks never straddle train and out-of-project
        assert r.split == record_split(PROJECTS[r.project].split, r.break_patch), r.id
        assert _changed(r.fix_patch, "-") == _changed(r.break_patch, "+"), r.id
        assert _changed(r.fix_patch, "+") == _changed(r.break_patch, "-"), r.id
    assert set(Counter(r.category for r in records)) == {
        "import",
        "signature",
        "logic",
        "type",
        "syntax",
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
    assert len(systems.get("make", ())) >= 2 and len(systems.get("cmake", ())) >= 2
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
