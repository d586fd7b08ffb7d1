"""Task loading: the on-disk format and SWE-bench JSONL import; broken files name the task
and the field."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from jaxrepair.envs import load_tasks
from jaxrepair.envs.task import Task, TaskError, load_task

from .conftest import FIXTURES


def test_fixture_tasks_load_with_all_fields():
    tasks = {t.id: t for t in load_tasks(FIXTURES / "tasks")}
    assert set(tasks) == {"py_drift", "py_pinned_v1", "c_make"}
    t = tasks["py_drift"]
    assert isinstance(t, Task)
    assert t.build == ("python -m pytest -q tests",) and t.timeout_s == 60.0
    assert t.dependencies == {"greetlib": "2.0.0"} and t.build_system == "python"
    assert t.protected == ("tests/**",) and t.split == "train" and t.image is None
    assert t.relevant_files == ("app/__init__.py",)
    assert t.repo_dir == FIXTURES / "tasks/py_drift/repo"
    assert t.fix_patch.startswith("--- a/app/__init__.py")
    assert tasks["c_make"].dependencies == {} and tasks["c_make"].build == (
        "make",
        "./run_tests.sh",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.id = "other"  # frozen
    assert load_tasks(FIXTURES / "tasks/c_make")[0].id == "c_make"  # a single task dir


def _broken(tmp_path, old, new):
    d = tmp_path / "py_drift"
    shutil.copytree(FIXTURES / "tasks/py_drift", d)
    text = (d / "task.toml").read_text()
    assert old in text
    (d / "task.toml").write_text(text.replace(old, new))
    return d


@pytest.mark.parametrize(
    "old,new,field",
    [
        ('category = "dependency"\n', "", "category"),
        ('build = ["python -m pytest -q tests"]', "build = []", "build"),
        ('build = ["python -m pytest -q tests"]', "build = [1, 2]", "build"),
        ("timeout_s = 60", "timeout_s = -1", "timeout_s"),
        ("timeout_s = 60", 'timeout_s = "soon"', "timeout_s"),
        ('build_system = "python"', 'build_system = "bazel"', "build_system"),
        ('split = "train"', 'split = "dev"', "split"),
        ('protected = ["tests/**"]', 'protected = ["../etc"]', "protected"),
        ('greetlib = "2.0.0"', "greetlib = 2", "dependencies"),
        ('issue = "tests', 'issue = 5\nx = "', "issue"),
        ('id = "py_drift"', 'id = "bad id!"', "id"),
    ],
)
def test_broken_task_file_names_task_and_field(tmp_path, old, new, field):
    d = _broken(tmp_path, old, new)
    with pytest.raises(TaskError) as e:
        load_task(d)
    assert e.value.field == field
    assert field in str(e.value) and ("py_drift" in str(e.value) or "bad id" in str(e.value))


def test_invalid_toml_and_missing_parts(tmp_path):
    d = _broken(tmp_path, 'id = "py_drift"', 'id = "py_drift')
    with pytest.raises(TaskError, match="task 'py_drift'.*task.toml.*not valid TOML"):
        load_task(d)
    d2 = tmp_path / "second"
    shutil.copytree(FIXTURES / "tasks/c_make", d2)
    shutil.rmtree(d2 / "repo")
    with pytest.raises(TaskError, match="'c_make'.*'repo'"):
        load_task(d2)
    (d2 / "fix.patch").unlink()
    with pytest.raises(FileNotFoundError):
        load_tasks(tmp_path / "nope")


def test_duplicate_ids_rejected(tmp_path):
    shutil.copytree(FIXTURES / "tasks/c_make", tmp_path / "a")
    shutil.copytree(FIXTURES / "tasks/c_make", tmp_path / "b")
    with pytest.raises(TaskError, match="duplicate"):
        load_tasks(tmp_path)


SWE = {
    "instance_id": "astropy__astropy-12907",
    "repo": "astropy/astropy",
    "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607",
    "patch": "diff --git a/astropy/modeling/separable.py b/astropy/modeling/separable.py\n--- a/astropy/modeling/separable.py\n+++ b/astropy/modeling/separable.py\n@@ -1 +1 @@\n-a\n+b\n",
    "test_patch": "diff --git a/astropy/modeling/tests/test_separable.py b/astropy/modeling/tests/test_separable.py\n--- a/astropy/modeling/tests/test_separable.py\n+++ b/astropy/modeling/tests/test_separable.py\n@@ -1 +1 @@\n-a\n+b\n",
    "problem_statement": "Modeling's separability_matrix does not compute separability correctly",
    # the Hugging Face dataset stores these two as JSON-encoded strings
    "FAIL_TO_PASS": json.dumps(
        ["astropy/modeling/tests/test_separable.py::test_separable[compound_model6]"]
    ),
    "PASS_TO_PASS": ["astropy/modeling/tests/test_separable.py::test_coord_matrix"],
    "image": "swebench/sweb.eval.x86_64.astropy_1776_astropy-12907:latest",
}


def test_swebench_jsonl_import(tmp_path):
    p = tmp_path / "swe.jsonl"
    second = dict(SWE, instance_id="x__y-1", image_name=SWE["image"])
    del second["image"]
    p.write_text(json.dumps(SWE) + "\n\n" + json.dumps(second) + "\n")
    tasks = load_tasks(p)
    t = tasks[0]
    assert [x.id for x in tasks] == ["astropy__astropy-12907", "x__y-1"]
    assert t.image == SWE["image"] and t.build_system == "swebench" and t.category == "swe-bench"
    assert t.issue.startswith("Modeling's separability_matrix")
    src = t.swebench
    assert src.repo == "astropy/astropy" and src.base_commit == SWE["base_commit"]
    assert src.fail_to_pass == (
        "astropy/modeling/tests/test_separable.py::test_separable[compound_model6]",
    )
    assert src.pass_to_pass == ("astropy/modeling/tests/test_separable.py::test_coord_matrix",)
    assert src.repo_path == "/testbed" and src.test_patch == SWE["test_patch"]
    assert t.fix_patch == SWE["patch"]
    assert t.protected == (
        "astropy/modeling/tests/test_separable.py",
    )  # the tests the fix must not touch
    assert t.relevant_files == ("astropy/modeling/separable.py",)
    assert (
        "'astropy/modeling/tests/test_separable.py::test_separable[compound_model6]'" in t.build[0]
    )
    assert t.build[0].startswith("python -m pytest")
    with pytest.raises(TaskError, match="repository lives inside image"):
        _ = t.repo_dir


@pytest.mark.parametrize(
    "change,field",
    [
        ({"image": None}, "image"),
        ({"FAIL_TO_PASS": "[not json"}, "FAIL_TO_PASS"),
        ({"FAIL_TO_PASS": []}, "FAIL_TO_PASS"),
        ({"base_commit": 7}, "base_commit"),
        ({"instance_id": ""}, "instance_id"),
    ],
)
def test_swebench_bad_records(tmp_path, change, field):
    rec = {**SWE, **change}
    rec = {k: v for k, v in rec.items() if v is not None}
    p = tmp_path / "swe.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    with pytest.raises(TaskError) as e:
        load_tasks(p)
    assert e.value.field == field


def test_swebench_bad_json_line(tmp_path):
    p = tmp_path / "swe.jsonl"
    p.write_text(json.dumps(SWE) + "\n{oops\n")
    with pytest.raises(TaskError, match="swe.jsonl:2"):
        load_tasks(p)
