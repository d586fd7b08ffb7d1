"""npm projects: the pinned node_modules is assembled from tarballs fetched by integrity (a
local registry here, so the real fetch code runs with no network), hard-linked into tasks and
copied into workspaces; an npm project builds into tasks that fail broken and pass fixed in
the local sandbox, with the runner's test count; and a build that tries to download fails."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jaxrepair.corpus.build import build_project
from jaxrepair.corpus.manifest import Record, load_manifest, read_manifest, write_manifest
from jaxrepair.corpus.npm import (
    NpmError,
    install_node_modules,
    lock_specs,
    node_modules_store,
    npm_spec,
    tap_build,
)
from jaxrepair.corpus.npm_locks import MOCHA_10_8_2
from jaxrepair.corpus.projects import NpmProject
from jaxrepair.corpus.sources import pin
from jaxrepair.envs.corpus_validate import validate_corpus
from jaxrepair.envs.reward import count_tests
from jaxrepair.envs.sandbox import copy_repo, remove_tree

from .conftest import fake_npm, make_tarball
from .test_js_breakages import INDEX, PACKAGE, UTIL

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node")

# a minimal TAP runner: requires each test file, one "ok" line each, then the TAP summary
RUNNER = """#!/usr/bin/env node
'use strict';
var path = require('path');
var files = process.argv.slice(2);
files.forEach(function (f, i) {
  require(path.resolve(f));
  console.log('ok ' + (i + 1) + ' ' + f);
});
console.log('1..' + files.length);
console.log('# tests ' + files.length);
"""
RUNNER_PACKAGE = json.dumps({"name": "minitap", "version": "0.1.0", "bin": "bin/minitap.js"})
TESTS = {
    "test/clamp.js": "var assert = require('assert');\nvar m = require('../');\n"
    "assert.strictEqual(m.clamp(5, 0, 3), 3);\nassert.strictEqual(m.clamp(-1, 0, 3), 0);\n",
    "test/words.js": "var assert = require('assert');\nvar m = require('../');\n"
    "assert.strictEqual(m.words('a bc  d', '-'), 'A-BC-D');\n",
    "test/total.js": "var assert = require('assert');\nvar m = require('../');\n"
    "assert.strictEqual(m.total([1, 2, 3]), 6);\n",
}
PROJECT_FILES = {"package.json": PACKAGE, "lib/index.js": INDEX, "lib/util.js": UTIL, **TESTS}


@pytest.fixture
def registry(tmp_path):
    """A local npm registry serving the runner and the project; their pinned sources."""
    root = tmp_path / "registry"
    runner_tgz = make_tarball(
        tmp_path / "dl" / "minitap-0.1.0.tgz",
        "package",
        {"package.json": RUNNER_PACKAGE, "bin/minitap.js": RUNNER},
    )
    project_tgz = make_tarball(tmp_path / "dl" / "fixture-1.0.0.tgz", "package", PROJECT_FILES)
    index = fake_npm(root, "minitap", "0.1.0", runner_tgz)
    fake_npm(root, "fixture", "1.0.0", project_tgz)
    return {
        "runner": pin("npm", "minitap", "0.1.0", index=index),
        "project": pin("npm", "fixture", "1.0.0", index=index),
        "runner_tgz": runner_tgz,
    }


def test_npm_specs_and_locks_pin_one_version_of_each_package():
    data = b"a tarball"
    sri = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    spec = npm_spec("@scope/pkg", "1.0.0", sri)
    assert spec.hash == "sha512:" + hashlib.sha512(data).hexdigest()
    assert spec.filename == "pkg-1.0.0.tgz" and spec.registry == "npm"
    a = {"x": ("1.0.0", sri)}
    assert lock_specs(a, {"y": ("2.0.0", sri)}, a) == (
        npm_spec("x", "1.0.0", sri),
        npm_spec("y", "2.0.0", sri),
    )
    with pytest.raises(NpmError, match="x is pinned at 1.0.0 and 1.0.1"):
        lock_specs(a, {"x": ("1.0.1", sri)})
    with pytest.raises(NpmError, match="sha512"):
        npm_spec("x", "1.0.0", "sha1-abc=")


@needs_node
def test_the_store_is_a_flat_node_modules_of_the_pinned_tarballs(registry, tmp_path):
    store = node_modules_store([registry["runner"]]) / "node_modules"
    assert (store / "minitap" / "package.json").read_text() == RUNNER_PACKAGE
    lock = json.loads((store / ".package-lock.json").read_text())
    digest = hashlib.sha512(registry["runner_tgz"].read_bytes()).digest()
    assert lock["packages"]["node_modules/minitap"] == {
        "version": "0.1.0",
        "integrity": "sha512-" + base64.b64encode(digest).decode(),
    }
    # the .bin link npm would make runs (its target made executable)
    ran = subprocess.run(
        [str(store / ".bin" / "minitap")], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0 and "# tests 0" in ran.stdout, ran.stderr
    with pytest.raises(NpmError, match="pinned twice"):
        node_modules_store([registry["runner"], registry["runner"]])

    task_repo, ws = tmp_path / "task", tmp_path / "ws"
    task_repo.mkdir(), ws.mkdir()
    install_node_modules(task_repo, [registry["runner"]])  # a task: hard links
    install_node_modules(ws, [registry["runner"]], link=False)  # a workspace: copies
    src = store / "minitap" / "bin" / "minitap.js"
    assert os.stat(task_repo / "node_modules/minitap/bin/minitap.js").st_ino == os.stat(src).st_ino
    assert os.stat(ws / "node_modules/minitap/bin/minitap.js").st_ino != os.stat(src).st_ino
    assert os.readlink(ws / "node_modules/.bin/minitap") == "../minitap/bin/minitap.js"
    with pytest.raises(NpmError, match="already has node_modules"):
        install_node_modules(ws, [registry["runner"]])


@needs_node
def test_a_build_that_tries_to_download_fails(local_sandbox, tmp_path):
    """No network in the sandbox: npm cannot install, node cannot reach the registry."""
    src = tmp_path / "project"
    src.mkdir()
    ws = copy_repo(src)
    try:
        (ws / "package.json").write_text('{"name": "x", "version": "1.0.0"}\n')
        res = local_sandbox.run(ws, "node --version", 60)
        assert res.exit_code == 0 and res.output.strip().startswith("v"), res.output
        fetch = (
            "node -e \"require('https').get('https://registry.npmjs.org/left-pad', "
            "() => process.exit(0)).on('error', (e) => { console.error(e.code); "
            'process.exit(3); })"'
        )
        res = local_sandbox.run(ws, fetch, 60)
        assert res.exit_code == 3, res.output
        assert "EAI_AGAIN" in res.output or "ENOTFOUND" in res.output, res.output
        if shutil.which("npm"):
            res = local_sandbox.run(
                ws, "npm install --no-audit --no-fund --fetch-retries=0 left-pad@1.3.0", 120
            )
            assert res.exit_code != 0, res.output
            assert not (ws / "node_modules" / "left-pad").exists()
    finally:
        remove_tree(ws)


@needs_node
def test_an_npm_project_builds_into_tasks_that_validate(registry, local_sandbox, tmp_path):
    """Screen, validate, write, load (node_modules materialised), validate again."""
    project = NpmProject(
        registry["project"],
        build=(tap_build("node_modules/.bin/minitap test/*.js"),),
        sources=("lib/*.js", "package.json"),
        protected=("test/**", "node_modules/**"),
        node_modules=(registry["runner"],),
        timeout_s=60,
    )
    res = build_project(
        project,
        local_sandbox,
        quota=1,
        max_tries=3,
        repeats=1,
        workers=1,
        progress=False,
        categories=("logic", "type", "config"),
    )
    assert res.problem is None and res.baseline_tests == 3
    assert {r.category for r in res.records} == {"logic", "type", "config"}
    for r in res.records:
        assert r.build_system == "npm" and r.dependency_sources == (registry["runner"],)
        assert "node_modules/**" in r.protected and r.tests_ran == 3
    out = tmp_path / "npm.jsonl"
    write_manifest(out, res.records)
    assert read_manifest(out) == sorted(res.records, key=lambda r: r.id)
    tasks = load_manifest(out)
    assert all((t.repo_dir / "node_modules/.bin/minitap").is_symlink() for t in tasks)
    report = validate_corpus(
        tasks, local_sandbox, repeats=1, workers=1, progress=False, print_summary=False
    )
    assert report.ok, [t.problems for t in report.tasks]


@pytest.mark.slow
@needs_node
def test_shipped_npm_tasks_fail_broken_and_pass_fixed(local_sandbox, tmp_path):
    """The first task of each test runner (tape, mocha, node --test) in the shipped npm manifest,
    materialised from the registry's tarballs (network on a cold cache: the project and its
    node_modules lock) and validated, with the test count the build recorded."""
    import jaxrepair

    shipped = read_manifest(Path(jaxrepair.__file__).parent / "data" / "corpus_npm.jsonl")
    first: dict[str, Record] = {}
    for r in shipped:  # sorted by id
        first.setdefault(r.build[0].split()[0], r)
    assert set(first) == {"node_modules/.bin/tape", "node_modules/.bin/mocha", "node"}
    sample = tmp_path / "sample.jsonl"
    write_manifest(sample, list(first.values()))
    tasks = load_manifest(sample)
    for task in tasks:
        runner = next(k for k, r in first.items() if r.id == task.id)
        if runner != "node":  # node's own runner needs no node_modules
            assert (task.repo_dir / runner).is_symlink(), task.id
    report = validate_corpus(
        tasks, local_sandbox, repeats=1, workers=1, progress=False, print_summary=False
    )
    assert report.ok, [t.problems for t in report.tasks]
    ran = {t.id: t.tests_ran for t in report.tasks}
    assert ran == {r.id: r.tests_ran for r in first.values()}


# node's own runner (node:test): three top-level tests, one with two subtests, in two files
NODE_TESTS = {
    "test/a.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\n"
    "test('adds', () => { assert.strictEqual(1 + 1, 2); });\n"
    "test('a group', async (t) => {\n"
    "  await t.test('one', () => assert.ok(true));\n"
    "  await t.test('two', () => assert.ok(true));\n"
    "});\n",
    "test/b.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\n"
    "test('repeats', () => { assert.strictEqual('x'.repeat(2), 'xx'); });\n",
}
# mocha's BDD interface: three tests in two suites
MOCHA_TESTS = {
    "test/math.js": "const assert = require('assert');\n"
    "describe('math', () => {\n"
    "  it('adds', () => assert.strictEqual(1 + 1, 2));\n"
    "  it('multiplies', () => assert.strictEqual(2 * 3, 6));\n"
    "});\n",
    "test/text.js": "const assert = require('assert');\n"
    "describe('text', () => { it('repeats', () => assert.strictEqual('x'.repeat(2), 'xx')); });\n",
}


def _run_tap_build(sandbox, tmp_path, files, runner, specs=()):
    """Run ``tap_build(runner)`` in the sandbox over a tree of ``files`` (with the pinned
    ``node_modules`` of ``specs``), then again with one assertion broken: (exit code, tests
    counted) of each run."""
    src = tmp_path / "tap-project"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    out = []
    for broken in (False, True):
        ws = copy_repo(src)
        try:
            if specs:
                install_node_modules(ws, specs, link=False)
            if broken:
                first = ws / sorted(files)[0]
                first.write_text(first.read_text().replace("1 + 1, 2", "1 + 1, 3"))
            res = sandbox.run(ws, tap_build(runner), 120)
            out.append((res.exit_code, count_tests(res.output), res.output))
        finally:
            remove_tree(ws)
    return out


@needs_node
def test_tap_build_counts_node_test_runner_tests(local_sandbox, tmp_path):
    """node --test with its TAP reporter: every test and subtest is counted; a failing test
    fails the build and is still counted."""
    (ok, n_ok, out_ok), (bad, n_bad, out_bad) = _run_tap_build(
        local_sandbox, tmp_path, NODE_TESTS, "node --test --test-reporter=tap test/"
    )
    assert ok == 0 and n_ok == 5, out_ok
    assert "TESTS RAN: 5" in out_ok
    assert bad != 0 and n_bad == 5 and "# fail 1" in out_bad, out_bad


@pytest.mark.slow
@needs_node
def test_tap_build_counts_mocha_tests_with_the_pinned_lock(local_sandbox, tmp_path):
    """mocha 10.8.2 from the pinned lock (its tarballs fetched by integrity: network on a cold
    cache), run with its TAP reporter: the tests run are counted; a failure fails the build."""
    (ok, n_ok, out_ok), (bad, n_bad, out_bad) = _run_tap_build(
        local_sandbox,
        tmp_path,
        MOCHA_TESTS,
        "node_modules/.bin/mocha -R tap 'test/*.js'",
        lock_specs(MOCHA_10_8_2),
    )
    assert ok == 0 and n_ok == 3 and "TESTS RAN: 3" in out_ok, out_ok
    assert bad != 0 and n_bad == 3 and "# fail 1" in out_bad, out_bad
