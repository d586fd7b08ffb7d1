"""The build pipeline on a synthetic sdist in the real local sandbox: a breakage is kept only
when the tests catch it and the validator (broken fails, fix passes) agrees; a project whose
own tests fail gives nothing; the manifest it writes loads, and a rerun resumes."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from jaxrepair.corpus.build import build_corpus, build_project
from jaxrepair.corpus.manifest import read_manifest
from jaxrepair.corpus.sources import SourceSpec
from jaxrepair.envs.reward import validate
from jaxrepair.envs.task import load_tasks

from .conftest import fake_pypi, make_tarball

# two logic candidates: add's '+' (the tests catch it) and is_big's '>=' (an equivalent
# mutant: the tests never try 100)
CORE = "def add(a, b):\n    return a + b\n\n\ndef is_big(x):\n    return x >= 100\n"
TESTS = (
    "from tiny.core import add, is_big\n\n\n"
    "def test_add():\n    assert add(2, 3) == 5\n\n\n"
    "def test_is_big():\n    assert is_big(500) and not is_big(1)\n"
)


def _project(tmp_path, project, name: str, tests: str):
    files = {"tiny/__init__.py": "", "tiny/core.py": CORE, "tests/test_core.py": tests}
    sdist = make_tarball(tmp_path / f"{name}-1.0.tar.gz", f"{name}-1.0", files)
    index = fake_pypi(tmp_path / f"reg-{name}", name, "1.0", sdist)
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    spec = SourceSpec("pypi", name, "1.0", f"sha256:{sha}", sdist.name, index)
    # "**/*.py" covers the tests too: breakages must still never touch a protected file
    return replace(project, source=spec, sources=("**/*.py",))


def test_only_caught_and_validated_breakages_are_kept(tmp_path, project, local_sandbox):
    p = _project(tmp_path, project, "tiny", TESTS)
    out = tmp_path / "corpus.jsonl"
    [res] = build_corpus(
        out, [p], sandbox=local_sandbox, categories=("logic",), quota=5, max_tries=5,
        repeats=1, workers=1, progress=False,
    )  # fmt: skip
    assert res.problem is None and res.baseline_tests == 2
    assert (res.screened, res.caught) == (2, 1)  # the equivalent mutant was run and dropped
    [rec] = read_manifest(out)
    assert rec.kind == "swap-arithmetic" and "-    return a + b" in rec.break_patch
    assert rec.tests_ran == 2 and rec.protected == ("tests/**",)
    assert "assert -1 == 5" in rec.issue  # the real build output
    [task] = load_tasks(out)
    # the independent check: the reward's own validation in the real sandbox
    broken, fixed = validate(task, "", local_sandbox), validate(task, task.fix_patch, local_sandbox)
    assert (broken.outcome, fixed.outcome, fixed.reward) == ("fail", "pass", 1.0)
    # a rerun resumes: the project's pinned source already has records, nothing is rebuilt
    assert build_corpus(out, [p], sandbox=local_sandbox, progress=False) == []
    assert read_manifest(out) == [rec]


def test_a_project_whose_own_tests_fail_gives_nothing(tmp_path, project, local_sandbox):
    failing = TESTS + "\n\ndef test_broken_upstream():\n    assert add(1, 1) == 3\n"
    p = _project(tmp_path, project, "tinyfail", failing)
    res = build_project(p, local_sandbox, repeats=1, workers=1, progress=False)
    assert res.records == [] and res.screened == 0
    assert "fails its own build" in res.problem and "assert 2 == 3" in res.problem


def test_the_cli_refuses_an_unknown_project_in_one_line(tmp_path, capsys):
    from jaxrepair.cli import main

    out = tmp_path / "cli.jsonl"
    assert main(["envs", "build-corpus", "--out", str(out), "--project", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such project" in err and "zlib" in err
    assert not out.exists()


@pytest.mark.slow
def test_the_cli_builds_a_manifest(tmp_path, project, local_sandbox, monkeypatch, capsys):
    from jaxrepair.cli import main
    from jaxrepair.corpus.projects import PROJECTS

    p = _project(tmp_path, project, "tinycli", TESTS)
    monkeypatch.setitem(PROJECTS, p.name, p)
    out = tmp_path / "cli.jsonl"
    argv = ["envs", "build-corpus", "--out", str(out), "--project", p.name, "--no-progress"]
    assert main([*argv, "--quota", "1", "--max-tries", "2", "--repeats", "1"]) == 0
    records = read_manifest(out)
    assert records and {r.project for r in records} == {"tinycli"}
    assert "logic" in {r.category for r in records}  # add's '+', caught by test_add
    assert "corpus build" in capsys.readouterr().err  # the summary table
