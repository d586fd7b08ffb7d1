"""SWE-bench-style tasks end to end on the Docker backend, with a stand-in image made here
(the real SWE-bench images need a registry): the repository lives in the image at /testbed,
the workspace is copied out of it, validation applies test_patch and runs the listed tests."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from jaxrepair.envs import load_tasks, validate

from .conftest import TEST_LIMITS, _docker_sandbox, file_patch

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

RUNNER = """import importlib.util, sys
ran = failed = 0
for tid in sys.argv[1:]:
    path, func = tid.split("::")
    spec = importlib.util.spec_from_file_location("m", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, ".")
    ran += 1
    try:
        spec.loader.exec_module(mod)
        getattr(mod, func)()
        print("PASSED", tid)
    except Exception as e:  # noqa
        failed += 1
        print("FAILED", tid, repr(e))
print(f"TESTS RAN: {ran}")
sys.exit(1 if failed else 0)
"""
CALC = "def add(a, b):\n    return a + b\n"
OLD_TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
NEW_TEST = "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"


@pytest.fixture(scope="module")
def swe_image(private_cache):
    sb = _docker_sandbox(TEST_LIMITS)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in {
            "testbed/calc.py": CALC,
            "testbed/run_tests.py": RUNNER,
            "testbed/tests/test_old.py": OLD_TEST,
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    c = sb.client.containers.create("jaxrepair/python:3.11", command=["true"])
    try:
        c.put_archive("/", buf.getvalue())
        image = c.commit(repository="jaxrepair/test-swebench", tag="1")
    finally:
        c.remove(force=True)
    yield sb, "jaxrepair/test-swebench:1"
    sb.client.images.remove(image.id, force=True)


def test_swebench_task_on_docker(swe_image, tmp_path):
    sb, image = swe_image
    rec = {
        "instance_id": "demo__calc-1",
        "repo": "demo/calc",
        "base_commit": "0" * 40,
        "patch": file_patch("calc.py", CALC, CALC + "\n\ndef mul(a, b):\n    return a * b\n"),
        "test_patch": file_patch("tests/test_new.py", None, NEW_TEST),
        "FAIL_TO_PASS": json.dumps(["tests/test_new.py::test_mul"]),
        "PASS_TO_PASS": json.dumps(["tests/test_old.py::test_add"]),
        "image": image,
        "test_cmd": "python3 run_tests.py",
        "problem_statement": "calc has no mul()",
    }
    p = tmp_path / "swe.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    (task,) = load_tasks(p)
    ws = sb.create_workspace(task)
    try:
        assert (ws / "calc.py").read_text() == CALC and (ws / "run_tests.py").is_file()
        assert not (ws / "tests/test_new.py").exists()  # the test patch is not given to the agent
    finally:
        sb.destroy_workspace(ws)
    broken = validate(task, "", sandbox=sb)
    assert broken.outcome == "fail" and "FAILED tests/test_new.py::test_mul" in broken.log, (
        broken.log
    )
    fixed = validate(task, task.fix_patch, sandbox=sb)
    assert (fixed.outcome, fixed.reward, fixed.tests_ran) == ("pass", 1.0, 2), fixed.log
    assert fixed.fingerprint["image"].startswith(image + "@sha256:")
