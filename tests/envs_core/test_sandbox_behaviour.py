"""The behavioural suite, run against both backends (docker skipped without a daemon).

Oracles: real processes and files on the host (a TCP listener, /proc scans, /etc), the
fixture tasks' own test suites, and counts the build itself prints."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jaxrepair.envs import validate, validate_workspace
from jaxrepair.envs.task import load_task

from .conftest import copy_task, file_patch, make_task

pytestmark = pytest.mark.timeout(300)


def _host_processes_with(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _assert_next_episode_fine(task, sandbox):
    res = validate(task, task.fix_patch, sandbox=sandbox)
    assert (res.outcome, res.reward, res.guard) == ("pass", 1.0, None), res.log


def test_fixture_tasks_fail_broken_pass_fixed(tasks, sandbox):
    expected_tests = {"py_drift": 3, "py_pinned_v1": 2, "c_make": 3}
    for tid, task in tasks.items():
        broken = validate(task, "", sandbox=sandbox)
        assert broken.outcome == "fail" and broken.reward == 0.0, broken.log
        fixed = validate(task, task.fix_patch, sandbox=sandbox)
        assert (fixed.outcome, fixed.reward, fixed.guard) == ("pass", 1.0, None), fixed.log
        assert fixed.tests_ran == expected_tests[tid]
        fp = fixed.fingerprint
        assert fp["backend"] == sandbox.name and fp["validation_hash"] and fp["task_hash"]
        assert (fp["pins_hash"] is None) == (task.build_system == "make")


def test_workspace_is_the_only_writable_place(tasks, sandbox, tmp_path):
    ws = sandbox.create_workspace(tasks["py_drift"])
    try:
        probe = (
            "for p in /workspace/ok /tmp/ok /usr/pwn /etc/pwn /pwn /opt/jaxrepair/deps/pwn "
            "/opt/jaxrepair/deps/site/pwn; do (echo x > $p) 2>/dev/null && echo WROTE $p; done; id -u"
        )
        res = sandbox.run(ws, probe, 30, pins={"greetlib": "2.0.0"})
        assert res.infra_error is None and res.exit_code == 0, res.output
        wrote = {line.split()[1] for line in res.output.splitlines() if line.startswith("WROTE")}
        assert wrote == {"/workspace/ok", "/tmp/ok"}
        assert res.output.strip().splitlines()[-1] != "0"  # not root inside
        assert (ws / "ok").read_text() == "x\n"  # the workspace is the host dir
    finally:
        sandbox.destroy_workspace(ws)
    assert not ws.exists()


def test_network_is_unreachable(tmp_path, sandbox, tasks):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted = []

    done = threading.Event()

    def accept_loop():
        while not done.is_set():
            try:
                accepted.append(srv.accept())
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    code = (
        "import socket\n"
        "for host in ('127.0.0.1', '1.1.1.1', '8.8.8.8'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port} if host == '127.0.0.1' else 53), timeout=3)\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('BLOCKED', host, e)\n"
        "try:\n"
        "    socket.getaddrinfo('pypi.org', 443)\n"
        "    print('CONNECTED dns')\n"
        "except OSError as e:\n"
        "    print('BLOCKED dns', e)\n"
        "raise SystemExit(0)\n"
    )
    d = make_task(tmp_path, "net", {"net.py": code}, ["python3 net.py"])
    res = validate(load_task(d), "", sandbox=sandbox)
    done.set()
    t.join(timeout=5)
    srv.close()
    lines = res.log.splitlines()
    assert not [x for x in lines if x.startswith("CONNECTED")], res.log
    assert len([x for x in lines if x.startswith("BLOCKED")]) == 4, res.log
    assert res.outcome == "pass"
    assert accepted == []  # the host listener saw nothing
    _assert_next_episode_fine(tasks["c_make"], sandbox)


def test_fork_bomb_is_contained(tmp_path, sandbox, tasks):
    limit = sandbox.limits.nproc
    counter = (
        "import os, time\n"
        "n = 0\n"
        "for i in range(400):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "print('FORKED', n, flush=True)\n"
    )
    d = make_task(tmp_path, "forks", {"forks.py": counter}, ["python3 forks.py"], timeout_s=20)
    res = validate(load_task(d), "", sandbox=sandbox)
    assert "FORKED " in res.log, res.log[-3000:]
    forked = int(res.log.split("FORKED ")[1].split()[0])
    assert 0 < forked < limit <= 400, res.log[-2000:]  # the process limit stopped it
    bomb = "b() { b | b & }; b\nsleep 4\nexit 1\n"
    d = make_task(tmp_path, "bomb", {"bomb.sh": bomb}, ["sh bomb.sh"], timeout_s=10)
    t0 = time.monotonic()
    res = validate(load_task(d), "", sandbox=sandbox)
    assert res.outcome == "fail" and time.monotonic() - t0 < 60
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork
    _assert_next_episode_fine(tasks["c_make"], sandbox)


def test_memory_hog_is_contained(tmp_path, sandbox, tasks):
    hog = "blob = b'x' * (3 * 1024 ** 3)\nprint('ALLOCATED', len(blob))\n"
    d = make_task(tmp_path, "hog", {"hog.py": hog}, ["python3 hog.py"])
    t0 = time.monotonic()
    res = validate(load_task(d), "", sandbox=sandbox)
    assert res.outcome == "fail" and "ALLOCATED" not in res.log, res.log[-2000:]
    assert "MemoryError" in res.log or "out of memory" in res.log or "exit 137" in res.log, res.log[
        -2000:
    ]
    assert time.monotonic() - t0 < 60
    _assert_next_episode_fine(tasks["c_make"], sandbox)


def test_infinite_loop_killed_with_its_process_group(tasks, sandbox):
    marker = f"jaxrepair-loop-{uuid.uuid4().hex}"
    ws = sandbox.create_workspace(tasks["c_make"])
    try:
        cmd = f"sh -c 'sleep 300; echo {marker}' & setsid sh -c 'sleep 300 # {marker}' & while :; do :; done"
        t0 = time.monotonic()
        res = sandbox.run(ws, cmd, 3.0)
        elapsed = time.monotonic() - t0
    finally:
        sandbox.destroy_workspace(ws)
    assert res.timed_out and res.exit_code != 0 and res.infra_error is None
    assert 2.5 < elapsed < 15
    deadline = time.monotonic() + 5
    while _host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _host_processes_with(marker) == []  # background and setsid'd children died too
    res2 = validate(tasks["c_make"], "", sandbox=sandbox)
    assert res2.outcome == "fail"  # timeouts are scored as failures, and nothing lingers


def test_huge_output_is_capped(tasks, sandbox):
    ws = sandbox.create_workspace(tasks["c_make"])
    try:
        t0 = time.monotonic()
        res = sandbox.run(
            ws, "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo END-OF-OUTPUT", 120
        )
        elapsed = time.monotonic() - t0
    finally:
        sandbox.destroy_workspace(ws)
    assert res.exit_code == 0 and res.truncated and not res.timed_out, res.output[:300]
    assert len(res.output) <= sandbox.limits.output_bytes + 300
    assert res.output.rstrip().endswith("END-OF-OUTPUT")  # the tail is what is kept
    assert "100000" in res.output.splitlines()[0]  # the note says how much was dropped
    assert elapsed < 60
    _assert_next_episode_fine(tasks["py_drift"], sandbox)


def test_patch_deleting_failing_tests_is_caught(tasks, sandbox, tmp_path):
    task = tasks["py_drift"]
    test_file = (task.repo_dir / "tests/test_app.py").read_text()
    only_version = test_file.split("\n\ndef test_welcome")[0] + "\n"
    # 1) tests protected by glob: deleting the failing tests fires protected_path
    patch = file_patch("tests/test_app.py", test_file, only_version)
    res = validate(task, patch, sandbox=sandbox)
    assert (res.reward, res.tampered, res.guard) == (0.0, True, "protected_path"), res.log
    assert res.outcome == "pass"  # the build itself passed: the guard is what scores it 0
    res = validate(task, file_patch("tests/test_app.py", test_file, None), sandbox=sandbox)
    assert res.reward == 0.0 and res.guard == "protected_path"
    # 2) a task with no protected globs: the test count guard catches it
    unprotected = load_task(copy_task(task.root, tmp_path, protected="[]"))
    res = validate(unprotected, patch, sandbox=sandbox)
    assert (res.outcome, res.reward, res.guard, res.tests_ran) == (
        "pass",
        0.0,
        "tests_removed",
        1,
    ), res.log
    # 3) skipping tests from a new conftest does not count as running them
    skipper = "import pytest\n\n\ndef pytest_collection_modifyitems(items):\n    for it in items:\n        if 'welcome' in it.name:\n            it.add_marker(pytest.mark.skip)\n"
    conftest = (task.repo_dir / "conftest.py").read_text()
    res = validate(
        unprotected, file_patch("conftest.py", conftest, conftest + skipper), sandbox=sandbox
    )
    assert (res.outcome, res.guard) == ("pass", "tests_removed"), res.log
    _assert_next_episode_fine(task, sandbox)


def test_patch_editing_validation_script_is_caught(tasks, sandbox):
    task = tasks["c_make"]
    script = (task.repo_dir / "run_tests.sh").read_text()
    cheat = file_patch("run_tests.sh", script, "#!/bin/sh\necho 'TESTS RAN: 3'\n")
    broken_make = task.fix_patch + cheat
    res = validate(task, broken_make, sandbox=sandbox)
    assert (res.outcome, res.reward, res.guard) == ("pass", 0.0, "validation_changed"), res.log
    assert "run_tests.sh" in res.guard_detail
    # the build commands themselves come from task.toml: a workspace cannot change them
    ws = sandbox.create_workspace(task)
    try:
        (ws / "task.toml").write_text('build = ["true"]\n')
        res = validate_workspace(task, ws, sandbox)
        assert res.outcome == "fail" and res.reward == 0.0
    finally:
        sandbox.destroy_workspace(ws)
    _assert_next_episode_fine(task, sandbox)


def test_symlink_to_etc_does_not_escape(tmp_path, sandbox, tasks):
    name = f"jaxrepair-pwned-{uuid.uuid4().hex[:8]}"
    build = [
        f"echo pwned > etc_link/{name} || true",
        "echo pwned > etc_link/hostname || true",
        f"cat etc_link/{name} 2>/dev/null && exit 1 || exit 0",
    ]
    d = make_task(tmp_path, "symlink", {"README": "x\n"}, build, symlinks={"etc_link": "/etc"})
    task = load_task(d)
    hostname = Path("/etc/hostname").read_bytes() if Path("/etc/hostname").exists() else None
    res = validate(task, "", sandbox=sandbox)
    assert res.outcome == "pass", res.log
    assert not Path("/etc", name).exists()
    assert (Path("/etc/hostname").read_bytes() if hostname is not None else None) == hostname
    # the copy keeps the link a link, and a patch cannot write through it either
    ws = sandbox.create_workspace(task)
    try:
        assert os.path.islink(ws / "etc_link") and os.readlink(ws / "etc_link") == "/etc"
    finally:
        sandbox.destroy_workspace(ws)
    res = validate(task, file_patch(f"etc_link/{name}", None, "pwned\n"), sandbox=sandbox)
    assert res.outcome == "fail" and "symbolic link" in res.log
    assert not Path("/etc", name).exists()
    _assert_next_episode_fine(tasks["c_make"], sandbox)


def test_same_task_ten_times_same_outcome(tasks, sandbox):
    task = tasks["py_drift"]
    results = [validate(task, task.fix_patch, sandbox=sandbox) for _ in range(10)]
    assert {(r.outcome, r.reward, r.tests_ran) for r in results} == {("pass", 1.0, 3)}
    assert len({repr(sorted(r.fingerprint.items())) for r in results}) == 1


def test_different_pins_side_by_side(tasks, sandbox):
    a, b = tasks["py_drift"], tasks["py_pinned_v1"]  # greetlib 2.0.0 vs 1.0.0
    with ThreadPoolExecutor(max_workers=2) as pool:
        futs = [pool.submit(validate, t, t.fix_patch, sandbox) for _ in range(3) for t in (a, b)]
        results = [f.result() for f in futs]
    assert all((r.outcome, r.reward) == ("pass", 1.0) for r in results), [r.log for r in results]
    assert len({r.fingerprint["pins_hash"] for r in results}) == 2
    # each task's own tests assert the greetlib version it sees; the crossed pins fail
    swapped = validate(
        a,
        a.fix_patch + file_patch("requirements.txt", "greetlib==2.0.0\n", "greetlib==1.0.0\n"),
        sandbox,
    )
    assert swapped.outcome == "fail" and "1.0.0" in swapped.log


def test_unknown_pin_is_a_failure_not_an_infra_error(tasks, sandbox):
    task = tasks["py_drift"]
    res = validate(
        task, file_patch("requirements.txt", "greetlib==2.0.0\n", "greetlib==9.9.9\n"), sandbox
    )
    assert res.outcome == "fail" and "9.9.9" in res.log and "available: 1.0.0, 2.0.0" in res.log


class FlakySandbox:
    """Delegates to a real sandbox, but its first ``failures`` runs fail as infrastructure."""

    def __init__(self, inner, failures):
        self.inner, self.failures, self.name = inner, failures, inner.name

    def create_workspace(self, task):
        return self.inner.create_workspace(task)

    def destroy_workspace(self, ws):
        self.inner.destroy_workspace(ws)

    def fingerprint(self):
        return self.inner.fingerprint()

    def run(self, ws, command, timeout_s, pins=None):
        if self.failures > 0:
            self.failures -= 1
            from jaxrepair.envs.sandbox import RunResult

            return RunResult(-1, "", False, 0.0, False, "injected: container failed to start")
        return self.inner.run(ws, command, timeout_s, pins)


def test_infra_errors_are_retried_and_reported(tasks, sandbox):
    task = tasks["c_make"]
    res = validate(task, task.fix_patch, sandbox=FlakySandbox(sandbox, failures=1))
    assert (res.outcome, res.reward, res.attempts) == ("pass", 1.0, 2)
    assert res.infra_errors == ["injected: container failed to start"]
    res = validate(task, task.fix_patch, sandbox=FlakySandbox(sandbox, failures=100), retries=2)
    assert res.outcome == "infra_error" and res.attempts == 3 and len(res.infra_errors) == 3
    assert "infrastructure error" in res.log


def test_real_sandbox_start_failure_is_infra_error(tasks, sandbox, private_cache):
    from jaxrepair.envs.sandbox import make_sandbox

    task = tasks["c_make"]
    if sandbox.name == "local":
        broken = make_sandbox("local", limits=sandbox.limits)
        broken.extra_ro_binds = ("/nonexistent/jaxrepair-missing-dir",)  # bwrap setup fails
    else:
        broken = make_sandbox("docker", limits=sandbox.limits, image="jaxrepair/no-such-image:0")
    res = validate(task, task.fix_patch, sandbox=broken, retries=1)
    assert res.outcome == "infra_error" and res.attempts == 2, res.log
    assert res.reward == 0.0 and not res.tampered
    msg = res.infra_errors[0]
    assert (
        ("bubblewrap could not start" in msg) if sandbox.name == "local" else ("not found" in msg)
    )
