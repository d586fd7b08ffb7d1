"""Reward building blocks: patch application, test counting, guards (no sandbox needed)."""

from __future__ import annotations

import shutil

import pytest

from jaxrepair.envs.reward import (
    PatchError,
    apply_patch,
    check_guards,
    count_tests,
    validation_scripts,
)
from jaxrepair.envs.task import load_task

from .conftest import FIXTURES, file_patch


def test_apply_patch_modify_create_delete(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "tasks/c_make/repo", ws)
    calc = (ws / "src/calc.c").read_text()
    patch = (
        file_patch("src/calc.c", calc, calc.replace("resutl", "result"))
        + file_patch("src/new/extra.h", None, "int extra(void);\n")
        + file_patch("run_tests.sh", (ws / "run_tests.sh").read_text(), None)
    )
    apply_patch(ws, patch)
    assert "return result;" in (ws / "src/calc.c").read_text()
    assert (ws / "src/new/extra.h").read_text() == "int extra(void);\n"
    assert not (ws / "run_tests.sh").exists()
    apply_patch(ws, "")  # an empty answer changes nothing


def test_apply_patch_errors_are_clear(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "tasks/c_make/repo", ws)
    with pytest.raises(PatchError, match="does not apply"):
        apply_patch(ws, file_patch("src/calc.c", "nothing like this\n", "x\n"))
    with pytest.raises(PatchError):
        apply_patch(ws, "--- /dev/null\n+++ b/../../escape.txt\n@@ -0,0 +1 @@\n+x\n")
    assert not (tmp_path.parent / "escape.txt").exists()
    with pytest.raises(PatchError):
        apply_patch(ws, "this is not a diff at all\n")


def test_count_tests():
    assert count_tests("...\n3 passed in 0.01s\n") == 3
    assert count_tests("== 2 failed, 3 passed, 1 skipped, 2 warnings in 0.12s ==\n") == 5
    assert count_tests("== 1 passed, 1 xfailed, 1 error in 1.0s ==") == 3
    assert count_tests("no tests ran in 0.01s") == 0
    assert count_tests("TESTS RAN: 4\nTESTS RAN: 2\n") == 6
    assert count_tests("compiled fine") is None
    # only pytest's final summary counts, not numbers in earlier output
    assert count_tests("print: 99 passed in 1s\n...\n1 passed in 0.1s\n") == 1


def test_guards_on_a_workspace(tmp_path):
    task = load_task(FIXTURES / "tasks/c_make")
    assert validation_scripts(task) == ["run_tests.sh"]
    ws = tmp_path / "ws"
    shutil.copytree(task.repo_dir, ws, symlinks=True)
    assert check_guards(task, ws) == (None, None)
    (ws / "build").mkdir()
    (ws / "build/test_calc").write_bytes(b"\x7fELF....")
    (ws / "tests/test_calc.o").write_bytes(b"obj")  # build artifacts in a protected dir are fine
    (ws / "src/calc.c").write_text("changed\n")  # not protected
    assert check_guards(task, ws) == (None, None)
    (ws / "tests/conftest.py").write_text("x = 1\n")
    assert check_guards(task, ws)[0] == "protected_path"
    (ws / "tests/conftest.py").unlink()
    (ws / "tests/test_calc.c").unlink()
    (ws / "tests/test_calc.c").symlink_to("/etc/passwd")
    assert check_guards(task, ws) == ("protected_path", "tests/test_calc.c modified")
    (ws / "tests/test_calc.c").unlink()
    shutil.copy(task.repo_dir / "tests/test_calc.c", ws / "tests/test_calc.c")
    (ws / "run_tests.sh").write_text("#!/bin/sh\necho 'TESTS RAN: 3'\n")
    assert check_guards(task, ws)[0] == "validation_changed"
