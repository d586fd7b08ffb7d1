"""Task-format validation against the real repo on disk: protected globs must match files,
relevant files must exist, categories are a known set, SWE-bench tasks need Docker; and
`jaxrepair envs validate --task ID` validates exactly the chosen tasks in the real sandbox."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jaxrepair.envs import load_tasks
from jaxrepair.envs.corpus_validate import validate_corpus
from jaxrepair.envs.reward import check_guards
from jaxrepair.envs.task import CATEGORIES, TaskError, load_task, require_backend

from .conftest import FIXTURES
from .test_task import SWE

CORPUS = Path(__file__).resolve().parents[2] / "jaxrepair" / "data" / "tasks" / "corpus"


def _edited(tmp_path: Path, old: str, new: str, task: str = "py_drift") -> Path:
    d = tmp_path / task
    shutil.copytree(FIXTURES / "tasks" / task, d)
    text = (d / "task.toml").read_text()
    assert old in text
    (d / "task.toml").write_text(text.replace(old, new))
    return d


def _one_line(e: pytest.ExceptionInfo, task: str, field: str, *needles: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg and e.value.task == task and e.value.field == field, msg
    assert f"task {task!r}" in msg and f"field {field!r}" in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_protected_glob_matching_nothing_is_rejected(tmp_path):
    """With `test/**` instead of `tests/**` nothing is protected: the loader must refuse it."""
    d = _edited(tmp_path, 'protected = ["tests/**"]', 'protected = ["test/**"]')
    # why it matters: the reward's own guard, on a workspace whose test assertions were
    # rewritten, fires with `tests/**` and stays silent with the dead `test/**`
    good = load_task(FIXTURES / "tasks/py_drift")
    ws = tmp_path / "ws"
    shutil.copytree(good.repo_dir, ws)
    test = ws / "tests/test_app.py"
    test.write_text(test.read_text().replace("assert", "assert True or"))
    assert check_guards(good, ws)[0] == "protected_path"
    assert check_guards(dataclasses.replace(good, protected=("test/**",)), ws) == (None, None)
    with pytest.raises(TaskError) as e:
        load_task(d)
    _one_line(e, "py_drift", "protected", "'test/**'", "matches no file", "'tests/**'")
    with pytest.raises(TaskError, match="matches no file"):
        load_tasks(tmp_path)  # the corpus loader refuses it too
    # a glob naming an existing file or a directory (its contents) is accepted
    for ok in ('["conftest.py"]', '["tests"]', '["**/*.py"]', '["tests/test_?pp.py"]'):
        text = (d / "task.toml").read_text().splitlines()
        lines = [f"protected = {ok}" if ln.startswith("protected") else ln for ln in text]
        (d / "task.toml").write_text("\n".join(lines) + "\n")
        assert load_task(d).protected == tuple(json.loads(ok))


@pytest.mark.parametrize("glob", ["", "*.rs", "tests/**/*.java"])
def test_other_dead_protected_globs(tmp_path, glob):
    d = _edited(tmp_path, 'protected = ["tests/**"]', f'protected = ["tests/**", "{glob}"]')
    with pytest.raises(TaskError) as e:
        load_task(d)
    _one_line(e, "py_drift", "protected")


@pytest.mark.parametrize(
    "value,needle",
    [
        ('["app/__init__.py", "app/missing.py"]', "'app/missing.py' does not exist"),
        ('["app"]', "'app' does not exist"),  # a directory is not a file
        ('["../task.toml"]', "must be relative"),
        ('["/etc/passwd"]', "must be relative"),
    ],
)
def test_missing_relevant_file_is_rejected(tmp_path, value, needle):
    d = _edited(tmp_path, 'relevant_files = ["app/__init__.py"]', f"relevant_files = {value}")
    with pytest.raises(TaskError) as e:
        load_task(d)
    _one_line(e, "py_drift", "relevant_files", needle)


def test_symlinked_relevant_file_is_rejected(tmp_path):
    d = _edited(tmp_path, 'relevant_files = ["app/__init__.py"]', 'relevant_files = ["link.py"]')
    (d / "repo/link.py").symlink_to("/etc/hostname")
    with pytest.raises(TaskError) as e:
        load_task(d)
    _one_line(e, "py_drift", "relevant_files", "symlink")


def test_unknown_category_is_rejected(tmp_path):
    d = _edited(tmp_path, 'category = "dependency"', 'category = "dependancy"')
    with pytest.raises(TaskError) as e:
        load_task(d)
    _one_line(e, "py_drift", "category", "'dependancy'", "dependency")
    for cat in CATEGORIES:
        (d / "task.toml").write_text(
            "\n".join(
                f'category = "{cat}"' if ln.startswith("category") else ln
                for ln in (d / "task.toml").read_text().splitlines()
            )
        )
        assert load_task(d).category == cat
    p = tmp_path / "swe.jsonl"
    p.write_text(json.dumps({**SWE, "category": "misc"}) + "\n")
    with pytest.raises(TaskError) as e:
        load_tasks(p)
    _one_line(e, SWE["instance_id"], "category", "'misc'")


def test_whole_bundled_corpus_loads():
    """Every bundled task passes the new checks; its categories are all known, and the
    checks agree with a direct look at the files on disk."""
    tasks = load_tasks(CORPUS)
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    assert len(tasks) == 179 == len([p for p in CORPUS.iterdir() if (p / "task.toml").is_file()])
    assert manifest["tasks"] == 179 and set(manifest["by_category"]) <= set(CATEGORIES)
    counts = {c: sum(t.category == c for t in tasks) for c in manifest["by_category"]}
    assert counts == manifest["by_category"]
    for t in tasks:
        assert t.protected and t.relevant_files, t.id
        assert all((t.repo_dir / f).is_file() for f in t.relevant_files), t.id
        for g in t.protected:  # pathlib's own glob: a file, or a directory holding files
            hits = list(t.repo_dir.glob(g))
            assert any(p.is_file() or any(p.rglob("*")) for p in hits), (t.id, g)


def test_swebench_on_local_backend_refused_up_front(tmp_path):
    p = tmp_path / "swe.jsonl"
    p.write_text(json.dumps(SWE) + "\n")
    (task,) = load_tasks(p)
    with pytest.raises(TaskError) as e:
        validate_corpus([task], "local", repeats=1, progress=False, print_summary=False)
    _one_line(e, SWE["instance_id"], "build_system", "docker")
    require_backend([task], "docker")  # the docker backend accepts it
    with pytest.raises(TaskError):
        require_backend(task, "local")


def test_farm_refuses_swebench_on_local(tmp_path):
    """The farm's reset raises before any worker is asked (no infra_error episode)."""
    import asyncio

    from jaxrepair.envs.farm import EnvFarm

    p = tmp_path / "swe.jsonl"
    p.write_text(json.dumps(SWE) + "\n")
    (task,) = load_tasks(p)
    farm = EnvFarm(workers=1, sandbox_kind="local")  # never started: no worker needed
    with pytest.raises(TaskError, match="runs only in its Docker image"):
        asyncio.run(farm.reset("e0", task, "simplified"))
    assert farm.accounting()["started"] == 0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "jaxrepair"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "jaxrepair.cli"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if all(n in ln for n in needles)]
    assert lines, proc.stderr
    if "Traceback" not in proc.stderr:  # the CLI's one-line error mapping is in place
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_envs_validate_one_task_by_id(tmp_path):
    """Real sandbox, one bundled C task, one repeat: the report holds exactly that task."""
    make = sorted(t.id for t in load_tasks(CORPUS) if t.build_system == "make")
    tid = make[0]
    out = tmp_path / "report.json"
    proc = _cli(
        "envs", "validate", "--task", tid, "--repeats", "1", "--workers", "1",
        "--json", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert [t["id"] for t in report["tasks"]] == [tid]
    (t,) = report["tasks"]
    assert t["ok"] and t["broken"] == ["fail"] and t["fixed"] == ["pass"], t["problems"]
    # an unknown id is one line naming it
    _assert_one_line_error(
        _cli("envs", "validate", "--task", "no-such-task", cwd=tmp_path), "no-such-task", "--task"
    )


def test_envs_validate_swebench_on_local_is_refused(tmp_path):
    p = tmp_path / "swe.jsonl"
    p.write_text(json.dumps(SWE) + "\n")
    proc = _cli("envs", "validate", "--tasks", str(p), "--backend", "local", cwd=tmp_path)
    _assert_one_line_error(proc, SWE["instance_id"], "runs only in its Docker image")
    assert "validating" not in proc.stderr  # refused before any run started
