"""Shared fixtures for the envs-agent tests: the bundled corpus and a real local sandbox."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jaxrepair.envs.task import load_tasks

CORPUS = Path(__file__).resolve().parents[2] / "jaxrepair" / "data" / "tasks" / "corpus"


@pytest.fixture(scope="session")
def corpus_tasks():
    return load_tasks(CORPUS)


@pytest.fixture(scope="session")
def tasks_by_id(corpus_tasks):
    return {t.id: t for t in corpus_tasks}


@pytest.fixture(scope="session")
def sandbox():
    """The local bubblewrap sandbox; skipped (with the reason) where it cannot run."""
    from jaxrepair.envs.sandbox import SandboxUnavailable, make_sandbox

    try:
        return make_sandbox("local")
    except SandboxUnavailable as e:
        pytest.skip(f"local sandbox unavailable: {e}")


def stratified_sample(tasks, per_group: int = 2):
    """``per_group`` tasks per (build system, category): the first and the last by id."""
    groups: dict[tuple[str, str], list] = {}
    for t in sorted(tasks, key=lambda t: t.id):
        groups.setdefault((t.build_system, t.category), []).append(t)
    out = []
    for key in sorted(groups):
        g = groups[key]
        picks = [g[0], g[-1]] if per_group >= 2 and len(g) > 1 else [g[0]]
        out.extend(picks[:per_group])
    return out


@pytest.fixture
def workspace(tmp_path, tasks_by_id):
    """A copy of one Python task's repo, plus the task."""
    task = tasks_by_id["blogkit-dependency-001"]
    ws = tmp_path / "ws"
    shutil.copytree(task.repo_dir, ws, symlinks=True)
    return task, ws
