"""`jaxrepair envs validate --sample N`: a stratified, seeded sample of the shipped manifests
(records only, no network) spreads over every build system, then over projects and
categories; several `--tasks` sources are validated as one set, a manifest's records sampled
before anything is fetched or materialised."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import jaxrepair
from jaxrepair.corpus.manifest import corpus_version, read_manifest, write_manifest
from jaxrepair.envs import deps
from jaxrepair.envs.corpus_validate import load_for_validation, project_of, stratified_sample
from jaxrepair.envs.task import TaskError, load_tasks

from .test_manifest import _records

DATA = Path(jaxrepair.__file__).parent / "data"
SHIPPED = [DATA / "corpus_pypi.jsonl", DATA / "corpus_c.jsonl", DATA / "corpus_npm.jsonl"]


@pytest.fixture(scope="module")
def shipped():
    return {p.name: read_manifest(p) for p in SHIPPED}


def _ids(items) -> list[str]:
    return [it.id for it in items]


def test_a_sample_of_the_shipped_manifests_spreads_over_build_systems_and_projects(shipped):
    records = [r for rs in shipped.values() for r in rs]
    systems = Counter(r.build_system for r in records)
    assert set(systems) == {"python", "make", "cmake", "npm"}
    n = 40
    sample = stratified_sample(records, n, seed=0)
    assert len(sample) == n and len(set(_ids(sample))) == n
    assert _ids(sample) == sorted(_ids(sample))
    # deterministic for a seed, another seed another sample
    assert _ids(stratified_sample(records, n, seed=0)) == _ids(sample)
    assert _ids(stratified_sample(list(reversed(records)), n, seed=0)) == _ids(sample)
    assert _ids(stratified_sample(records, n, seed=1)) != _ids(sample)
    # every build system gets an even share (all have more than n // 4 tasks)
    per_system = Counter(r.build_system for r in sample)
    assert set(per_system) == set(systems)
    assert all(c == n // len(systems) for c in per_system.values()), per_system
    for bs in systems:
        mine = [r for r in sample if r.build_system == bs]
        projects = {project_of(r) for r in records if r.build_system == bs}
        # as many projects as the share allows, each project at most once more than another
        assert len({project_of(r) for r in mine}) == min(len(mine), len(projects)), bs
        counts = Counter(project_of(r) for r in mine).values()
        assert max(counts) - min(counts) <= 1, (bs, counts)
        # categories spread: as many as the share allows
        cats = {r.category for r in records if r.build_system == bs}
        assert len({r.category for r in mine}) == min(len(mine), len(cats)), bs


def test_a_build_systems_picks_depend_only_on_its_own_tasks(shipped):
    records = [r for rs in shipped.values() for r in rs]
    together = stratified_sample(records, 40, seed=3)
    for name, rs in shipped.items():
        alone = stratified_sample(rs, 40, seed=3)
        mine = [r.id for r in together if r.build_system in {x.build_system for x in rs}]
        assert set(mine) <= set(_ids(alone)), name  # a smaller share is a prefix of a larger
    # and a larger sample keeps every task of a smaller one
    assert set(_ids(stratified_sample(records, 20, seed=3))) <= set(_ids(together))


def test_a_sample_of_one_manifest_covers_all_its_projects(shipped):
    c = shipped["corpus_c.jsonl"]
    sample = stratified_sample(c, 40, seed=0)
    assert {project_of(r) for r in sample} == {project_of(r) for r in c}
    assert Counter(r.build_system for r in sample) == {"make": 20, "cmake": 20}
    # project_of tells the manifests' projects (project and version) apart, one to one
    pairs = {(r.project, r.version, project_of(r)) for rs in shipped.values() for r in rs}
    assert len(pairs) == len({p[:2] for p in pairs}) == len({p[2] for p in pairs})
    # larger than the set: every task once
    npm = shipped["corpus_npm.jsonl"]
    assert _ids(stratified_sample(npm, 10_000)) == sorted(_ids(npm))
    assert stratified_sample(npm, 0) == []


def _two_manifests(tmp_path, project):
    recs = _records(project, 3)
    m1, m2 = tmp_path / "m1.jsonl", tmp_path / "m2.jsonl"
    write_manifest(m1, recs[:2])
    write_manifest(m2, recs[2:])
    return recs, m1, m2


def test_a_manifest_is_sampled_before_it_is_materialised(tmp_path, project):
    recs, m1, _ = _two_manifests(tmp_path, project)
    (task,) = load_for_validation([m1], sample=1, seed=0)
    parent = deps.cache_dir() / "corpus" / "tasks" / corpus_version(recs[:2])
    # the task is where load_manifest puts it (the whole manifest's version): one made
    assert task.root.parent == parent and (parent / "VERSION").is_file()
    assert sorted(p.name for p in parent.iterdir() if p.is_dir()) == [task.id]
    assert {t.root for t in load_tasks(m1) if t.id == task.id} == {task.root}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "jaxrepair"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "jaxrepair.cli"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_several_tasks_sources_validate_as_one_set(tmp_path, project, local_sandbox):
    """Two manifests, one `envs validate` in the real local sandbox: one report holds the
    tasks of both, each failing broken and passing fixed; one source twice is refused."""
    recs, m1, m2 = _two_manifests(tmp_path, project)
    out = tmp_path / "report.json"
    proc = _cli(
        "envs", "validate", "--tasks", str(m1), "--tasks", str(m2), "--repeats", "1",
        "--workers", "2", "--json", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert sorted(t["id"] for t in report["tasks"]) == sorted(r.id for r in recs)
    assert all(t["broken"] == ["fail"] and t["fixed"] == ["pass"] for t in report["tasks"])
    (row,) = report["by_build_system"]
    assert row["build_system"] == "python" and row["ok"] == row["count"] == 3
    assert row["median_task_s"] >= row["median_run_s"] > 0
    with pytest.raises(TaskError, match="duplicate id"):
        load_for_validation([m1, m2, m1])


def test_a_mirrored_manifest_and_tasks_pinning_the_default_index_are_refused(
    tmp_path, project, pypi_spec
):
    """One package index per process: a manifest whose records need the dependency mirror
    cannot be validated with tasks that pin packages from the bundled index."""
    from dataclasses import replace

    from jaxrepair.collect import bundled_corpus

    (rec,) = _records(project, 1)
    mirrored = tmp_path / "mirrored.jsonl"
    write_manifest(mirrored, [replace(rec, dependency_sources=(pypi_spec,))])
    pinned = next(t for t in load_tasks(bundled_corpus()) if deps.read_pins(t.repo_dir))
    with pytest.raises(TaskError, match="separate runs") as err:
        load_for_validation([bundled_corpus(), mirrored], task_ids=[pinned.id, rec.id])
    assert pinned.id in str(err.value)
    version = corpus_version(read_manifest(mirrored))
    assert not (deps.cache_dir() / "corpus" / "tasks" / version).exists()  # refused first
    # either alone is fine
    assert _ids(load_for_validation([bundled_corpus()], task_ids=[pinned.id])) == [pinned.id]
