"""Shared fixtures for the envs-core tests: a private cache and package index, the fixture
tasks, sandboxes of both backends (docker skipped when no daemon/images), task builders."""

from __future__ import annotations

import difflib
import os
import re
import shutil
from pathlib import Path

import pytest
import tomli_w

from jaxrepair.envs.sandbox import Limits, SandboxUnavailable, make_sandbox
from jaxrepair.envs.task import load_task
from tests.environ import environ

# The fixture repositories hold their own tests; they run only inside sandboxes.
collect_ignore_glob = ["fixtures/*"]

FIXTURES = Path(__file__).parent / "fixtures"
TEST_LIMITS = Limits(cpu_s=30, memory_mb=1024, nproc=64, fsize_mb=256, output_bytes=64 * 1024)


@pytest.fixture(scope="package", autouse=True)
def private_cache(tmp_path_factory):
    """An isolated jaxrepair cache and the fixture package index (2 versions of greetlib)."""
    cache = tmp_path_factory.mktemp("jaxrepair-cache")
    with environ(JAXREPAIR_CACHE=str(cache), JAXREPAIR_PACKAGES_DIR=str(FIXTURES / "packages")):
        yield cache


@pytest.fixture(scope="package")
def tasks(private_cache):
    return {t: load_task(FIXTURES / "tasks" / t) for t in ("py_drift", "py_pinned_v1", "c_make")}


def _docker_sandbox(limits):
    from jaxrepair.envs.sandbox.images import IMAGES, image_exists

    try:
        sb = make_sandbox("docker", limits=limits)
    except SandboxUnavailable as e:
        pytest.skip(f"docker backend unavailable: {e}")
    missing = [tag for tag, _ in IMAGES.values() if not image_exists(tag)]
    if missing:
        pytest.skip(f"sandbox images missing ({', '.join(missing)}): run `bash .ci/docker_up.sh`")
    return sb


@pytest.fixture(
    scope="package",
    params=[pytest.param("local"), pytest.param("docker", marks=pytest.mark.docker)],
)
def sandbox(request, private_cache):
    """The same behavioural suite runs against both backends."""
    if request.param == "local":
        try:
            return make_sandbox("local", limits=TEST_LIMITS)
        except SandboxUnavailable as e:
            pytest.skip(f"local sandbox unavailable: {e}")
    return _docker_sandbox(TEST_LIMITS)


def make_task(
    root: Path,
    tid: str,
    files: dict[str, str],
    build,
    *,
    build_system="make",
    protected=(),
    timeout_s=60,
    deps=None,
    fix="",
    symlinks=None,
) -> Path:
    """Write a task directory (task.toml, repo/, fix.patch) and return it."""
    d = root / tid
    (d / "repo").mkdir(parents=True)
    for rel, text in files.items():
        p = d / "repo" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        if rel.endswith(".sh"):
            p.chmod(0o755)
    for rel, target in (symlinks or {}).items():
        os.symlink(target, d / "repo" / rel)
    data = {
        "id": tid,
        "category": "test",
        "build_system": build_system,
        "issue": "synthetic",
        "timeout_s": timeout_s,
        "build": list(build),
        "protected": list(protected),
        "dependencies": dict(deps or {}),
    }
    (d / "task.toml").write_text(tomli_w.dumps(data))
    (d / "fix.patch").write_text(fix)
    return d


def file_patch(rel: str, old: str | None, new: str | None) -> str:
    """A unified diff for one file (old None: create; new None: delete)."""
    a = [] if old is None else old.splitlines(keepends=True)
    b = [] if new is None else new.splitlines(keepends=True)
    out = "".join(
        difflib.unified_diff(
            a,
            b,
            fromfile="/dev/null" if old is None else f"a/{rel}",
            tofile="/dev/null" if new is None else f"b/{rel}",
        )
    )
    return out


def copy_task(src: Path, dst_root: Path, **toml_overrides) -> Path:
    dst = dst_root / src.name
    shutil.copytree(src, dst, symlinks=True)
    if toml_overrides:
        text = (dst / "task.toml").read_text()
        for key, val in toml_overrides.items():
            text = re.sub(rf"^{key} = .*$", f"{key} = {val}", text, flags=re.M)
        (dst / "task.toml").write_text(text)
    return dst
