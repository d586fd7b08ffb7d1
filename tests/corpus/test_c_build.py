"""The build pipeline on small C projects served from a local Debian pool, in the real local
sandbox: make and CMake+ctest tasks are kept only when their build fails and the reference fix
passes (the reward's own validation agrees), a logic break must fail at the tests rather than
at the compiler, and a CMake fix that configures the tests away is not a pass."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from jaxrepair.corpus.build import build_project
from jaxrepair.corpus.manifest import write_manifest
from jaxrepair.corpus.projects import Project, cmake_build
from jaxrepair.corpus.sources import pin
from jaxrepair.envs.reward import count_tests, validate
from jaxrepair.envs.sandbox import copy_repo, remove_tree
from jaxrepair.envs.task import load_tasks

from .conftest import fake_debian
from .test_c_breakages import HEADER, SOURCE

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gcc", "make", "cmake", "ctest")),
    reason="needs gcc, make and cmake",
)

CHECK = """#include <stdio.h>
#include "../tiny.h"

int main(void)
{
    int bad = 0;
    if (tiny_add(2, 3) != 5) { puts("FAIL tiny_add(2, 3)"); bad = 1; }
    if (tiny_max(4, 9) != 9 || tiny_max(9, 4) != 9) { puts("FAIL tiny_max"); bad = 1; }
    if (tiny_count("banana", 'a') != 3) { puts("FAIL tiny_count"); bad = 1; }
    puts(bad ? "some checks failed" : "all checks passed");
    return bad;
}
"""
MAKEFILE = """CFLAGS=-Wall -O0
OBJS= tiny.o

check_tiny: $(OBJS) tests/check.o
\t$(CC) $(CFLAGS) -o $@ $(OBJS) tests/check.o
"""
CMAKELISTS = """cmake_minimum_required(VERSION 3.13)
project(tiny C)
enable_testing()
add_library(tiny tiny.c)
add_executable(check_tiny tests/check.c)
target_link_libraries(check_tiny tiny)
add_test(NAME check_tiny COMMAND check_tiny)
"""


def _project(tmp_path, name: str, build_file: str, **kw) -> Project:
    files = {
        "tiny.h": HEADER,
        "tiny.c": SOURCE,
        "tests/check.c": CHECK,
        **{build_file: kw.pop("text")},
    }
    dsc = fake_debian(tmp_path / "pool", name, "1.0+dfsg-1", files)  # "+": not in a task id
    spec = pin("debian", name, "1.0+dfsg-1", dsc_url=dsc.as_uri())
    return Project(
        spec, sources=("tiny.c", build_file), protected=("tests/**",), timeout_s=60, **kw
    )


def _check_tasks(tmp_path, res, sandbox) -> None:
    """The independent check: the manifest loads, and the reward's validation agrees."""
    out = tmp_path / "corpus.jsonl"
    write_manifest(out, res.records)
    for task in load_tasks(out):
        broken = validate(task, "", sandbox)
        fixed = validate(task, task.fix_patch, sandbox)
        assert (broken.outcome, fixed.outcome, fixed.reward) == ("fail", "pass", 1.0), task.id


def test_make_tasks_fail_broken_and_pass_fixed(tmp_path, local_sandbox):
    p = _project(
        tmp_path, "tinymake", "Makefile", text=MAKEFILE, build_system="make",
        build=("make check_tiny", "./check_tiny"), test_step=1,
    )  # fmt: skip
    res = build_project(
        p, local_sandbox, quota=1, max_tries=6, repeats=1, workers=1, progress=False,
        categories=("logic", "config"),
    )  # fmt: skip
    assert res.problem is None
    by_cat = {r.category: r for r in res.records}
    assert set(by_cat) == {"logic", "config"} and by_cat["config"].kind == "drop-object"
    assert "FAIL tiny_" in by_cat["logic"].issue  # the test program's own output
    assert "undefined reference" in by_cat["config"].issue  # the real linker's
    assert all(r.build_system == "make" and r.protected == ("tests/**",) for r in res.records)
    _check_tasks(tmp_path, res, local_sandbox)


def test_a_logic_break_the_compiler_rejects_is_not_kept(tmp_path, local_sandbox):
    # compile and tests in one command: a failure there is never at the tests' step (1) ...
    p = _project(
        tmp_path, "tinyonestep", "Makefile", text=MAKEFILE, build_system="make",
        build=("make check_tiny && ./check_tiny", "true"), test_step=1,
    )  # fmt: skip
    kw = dict(quota=1, max_tries=4, repeats=1, progress=False, categories=("logic",))
    res = build_project(p, local_sandbox, **kw)
    assert res.screened == 4 and res.records == []
    # ... while the same candidates, with the tests counted from step 0, give a task
    assert build_project(replace(p, test_step=0), local_sandbox, **kw).records


def test_cmake_tasks_fail_broken_and_pass_fixed(tmp_path, local_sandbox):
    p = _project(
        tmp_path, "tinycmake", "CMakeLists.txt", text=CMAKELISTS, build_system="cmake",
        build=cmake_build(), test_step=2, split="test",
    )  # fmt: skip
    res = build_project(
        p, local_sandbox, quota=1, max_tries=2, repeats=1, workers=1, progress=False,
        categories=("config",),
    )  # fmt: skip
    assert res.baseline_tests == 1  # ctest's own count of the registered tests
    [rec] = res.records
    assert (rec.build_system, rec.kind, rec.tests_ran) == ("cmake", "drop-source", 1)
    assert rec.id.startswith("tinycmake-1.0-dfsg-1-config-")
    assert "CMake Error" in rec.issue and res.validated_ok == 1  # broken fails, fix passes
    out = tmp_path / "corpus.jsonl"
    write_manifest(out, res.records)
    [task] = load_tasks(out)
    assert task.build_system == "cmake"
    # a "fix" that configures the tests away does not pass: ctest --no-tests=error
    no_tests = task.fix_patch + (
        "diff --git a/CMakeLists.txt b/CMakeLists.txt\n--- a/CMakeLists.txt\n"
        "+++ b/CMakeLists.txt\n@@ -7 +6,0 @@\n-add_test(NAME check_tiny COMMAND check_tiny)\n"
    )
    assert validate(task, no_tests, local_sandbox).outcome == "fail"


def test_cmake_build_in_a_subdirectory_with_a_test_left_out(tmp_path, local_sandbox):
    """``source``: the top CMakeLists.txt is in a subdirectory (expat's layout); ``select``:
    ctest's selection applies to the run and to the count, so a test left out (here one that
    would fail) neither runs nor counts; ``targets``: only its program is built."""
    src = tmp_path / "tree"
    files = {
        "sub/tiny.h": HEADER,
        "sub/tiny.c": SOURCE,
        "sub/tests/check.c": CHECK,
        "sub/CMakeLists.txt": CMAKELISTS + "add_test(NAME slow_tiny COMMAND false)\n",
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    for select, want_ok, want_count in (("-E slow", True, 1), ("", False, None)):
        ws = copy_repo(src)
        try:
            codes, counts = [], []
            targets = "check_tiny" if select else ""  # only the selected test's program
            for cmd in cmake_build(source="sub", select=select, targets=targets):
                res = local_sandbox.run(ws, cmd, 120)
                codes.append(res.exit_code)
                counts.append(count_tests(res.output))
                if res.exit_code:
                    break
            assert all(c == 0 for c in codes) is want_ok, (select, codes)
            if want_ok:
                assert counts[-1] == want_count, counts
        finally:
            remove_tree(ws)
