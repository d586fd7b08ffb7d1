"""The dependency mirror: a pinned dependency sdist (served by a local PyPI) becomes a source
tree of envs.deps' package index, so the task's build imports it in the sandbox with no
network; a manifest that needs it sets the index, and refuses a different one."""

from __future__ import annotations

import hashlib
import os

import pytest

from jaxrepair.corpus.manifest import Record, write_manifest
from jaxrepair.corpus.mirror import build_mirror
from jaxrepair.corpus.python_breakages import breakages
from jaxrepair.corpus.snapshots import snapshot
from jaxrepair.corpus.sources import SourceSpec, fetch
from jaxrepair.envs import deps
from jaxrepair.envs.reward import validate
from jaxrepair.envs.task import TaskError, load_tasks

from .conftest import fake_pypi, make_tarball

DEP = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "greetdep"\nversion = "1.0"\n\n[tool.setuptools]\npackages = ["greetdep"]\n'
    ),
    "greetdep/__init__.py": 'def greet(name):\n    return "hello " + name\n',
}
CORE = "import greetdep\n\n\ndef welcome(name):\n    return greetdep.greet(name).upper()\n"
TESTS = (
    "from tiny.core import welcome\n\n\ndef test_welcome():\n    assert welcome('x') == 'HELLO X'\n"
)


def _spec(tmp_path, name: str, files: dict[str, str]) -> SourceSpec:
    sdist = make_tarball(tmp_path / f"{name}-1.0.tar.gz", f"{name}-1.0", files)
    index = fake_pypi(tmp_path / f"reg-{name}", name, "1.0", sdist)
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    return SourceSpec("pypi", name, "1.0", f"sha256:{sha}", sdist.name, index)


def test_a_mirrored_dependency_is_importable_in_the_sandbox(tmp_path, monkeypatch, local_sandbox):
    dep = _spec(tmp_path, "greetdep", DEP)
    files = {"tiny/__init__.py": "", "tiny/core.py": CORE, "tests/test_core.py": TESTS}
    proj = _spec(tmp_path, "tinydep", files)
    tree, th = snapshot(fetch(proj))
    [edit] = [
        b for b in breakages({"tiny/core.py": CORE}, TESTS)["import"] if b.kind == "remove-import"
    ]
    rec = Record(
        id="tinydep-1.0-import-0", project="tinydep", version="1.0", source=proj, tree_sha256=th,
        build_system="python", category="import", kind=edit.kind,
        build=("python -m pytest -q -p no:cacheprovider tests",), timeout_s=60.0,
        protected=("tests/**",), relevant_files=(edit.path,), issue="The build fails.",
        break_patch=edit.break_patch, fix_patch=edit.fix_patch, pins={"greetdep": "1.0"},
        dependency_sources=(dep,),
    )  # fmt: skip
    path = tmp_path / "corpus.jsonl"
    write_manifest(path, [rec])
    # a different package index would not hold the pins: refused, naming the mirror
    with pytest.raises(TaskError, match="points at") as e:
        load_tasks(path)
    assert e.value.field == "dependency_sources"
    monkeypatch.delenv("JAXREPAIR_PACKAGES_DIR")
    [task] = load_tasks(path)
    assert os.environ["JAXREPAIR_PACKAGES_DIR"] == str(build_mirror([dep]))
    assert deps.available_versions("greetdep") == ["1.0"]
    assert (task.repo_dir / "requirements.txt").read_text() == "greetdep==1.0\n"
    fixed = validate(task, task.fix_patch, local_sandbox)
    assert (fixed.outcome, fixed.reward, fixed.tests_ran) == ("pass", 1.0, 1), fixed.log[-2000:]
    broken = validate(task, "", local_sandbox)
    assert broken.outcome == "fail" and "NameError: name 'greetdep' is not defined" in broken.log
