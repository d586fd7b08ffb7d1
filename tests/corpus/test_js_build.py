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
from jaxrepair.corpus.manifest import load_manifest, read_manifest, write_manifest
from jaxrepair.corpus.npm import (
    NpmError,
    install_node_modules,
    lock_specs,
    node_modules_store,
    npm_spec,
    tap_build,
)
from jaxrepair.corpus.projects import NpmProject
from jaxrepair.corpus.sources import pin
from jaxrepair.envs.corpus_validate import validate_corpus
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
def test_a_shipped_npm_task_fails_broken_and_passes_fixed(local_sandbox, tmp_path):
    """The first task of the shipped npm manifest, materialised from the registry's tarballs
    (network on a cold cache: the project and its node_modules lock) and validated."""
    import jaxrepair

    shipped = read_manifest(Path(jaxrepair.__file__).parent / "data" / "corpus_npm.jsonl")
    one = tmp_path / "one.jsonl"
    write_manifest(one, shipped[:1])
    tasks = load_manifest(one)
    assert (tasks[0].repo_dir / "node_modules" / ".bin" / "tape").is_symlink()
    report = validate_corpus(
        tasks, local_sandbox, repeats=1, workers=1, progress=False, print_summary=False
    )
    assert report.ok, [t.problems for t in report.tasks]
    assert report.tasks[0].tests_ran == shipped[0].tests_ran
