"""Fixtures for the farm tests: a private jaxrepair cache (inherited by the spawned workers),
corpus C tasks (fast `make test` builds, no dependency environments), process helpers, and the
farm backends the shared tests run on: the process farm and the Ray farm on a local Ray
cluster that these tests start once (per test worker process) and stop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from jaxrepair.envs import load_tasks
from jaxrepair.envs.farm import EnvFarm
from jaxrepair.envs.farm_scheduler import FarmScheduler
from jaxrepair.envs.sandbox import SandboxUnavailable, make_sandbox
from jaxrepair.envs.task import Task, load_task

CORPUS = Path(__file__).resolve().parents[2] / "jaxrepair" / "data" / "tasks" / "corpus"


@pytest.fixture(scope="package", autouse=True)
def private_cache(tmp_path_factory):
    """Workers are spawned with the parent's environment, so they share this cache."""
    old = os.environ.get("JAXREPAIR_CACHE")
    os.environ["JAXREPAIR_CACHE"] = str(tmp_path_factory.mktemp("farm-jaxrepair-cache"))
    yield Path(os.environ["JAXREPAIR_CACHE"])
    if old is None:
        os.environ.pop("JAXREPAIR_CACHE", None)
    else:
        os.environ["JAXREPAIR_CACHE"] = old


@pytest.fixture(scope="package")
def ray_cluster(private_cache):
    """A Ray cluster on this machine (Ray's own test utility: a head node with 5 logical CPUs,
    its raylet started with this process's environment, so the actors share the private
    cache); tests that need more nodes add them (`add_nodes`). Skipped without Ray."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 5, "include_dashboard": False}
    )
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


NODE_RESOURCE = "farm_test_node"  # only added nodes have it: a farm asking for it avoids the head


@pytest.fixture
def add_nodes(ray_cluster):
    """Adds one-CPU Ray nodes holding one `NODE_RESOURCE` each (so a farm with
    ``resources={NODE_RESOURCE: 1}`` puts one actor per node); removes them after the test."""
    added: list[Any] = []

    def add(n: int) -> list[Any]:
        nodes = [ray_cluster.add_node(num_cpus=1, resources={NODE_RESOURCE: 1}) for _ in range(n)]
        ray_cluster.wait_for_nodes()
        added.extend(nodes)
        return nodes

    yield add
    for node in added:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node, allow_graceful=False)


BACKENDS = ("process", "ray")


@dataclasses.dataclass
class Backend:
    """A farm backend for the shared farm tests: builds the farm and says where its workers
    keep their directories (the process farm's own directory; the Ray actors' base dir)."""

    name: str
    actors_dir: Path

    def farm(self, **kw: Any) -> FarmScheduler:
        if self.name == "process":
            return EnvFarm(**kw)
        from jaxrepair.envs.ray_farm import RayFarm

        opts = {**(kw.pop("sandbox_opts", None) or {}), "workdir": str(self.actors_dir)}
        return RayFarm(sandbox_opts=opts, **kw)

    def workdir(self, farm: FarmScheduler) -> str:
        return farm.workdir if isinstance(farm, EnvFarm) else str(self.actors_dir)

    def leftovers(self, workdir: str) -> list[str]:
        """What the farm's workers left on disk after close (nothing, when clean)."""
        return sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    """Each shared farm test runs on the process farm and on the Ray farm."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return Backend(request.param, tmp_path / "ray-actors")


def wait_gone(pids: Iterable[int], timeout_s: float = 15.0) -> list[int]:
    """The pids still alive after waiting up to timeout_s (Ray kills actors asynchronously)."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


@pytest.fixture(scope="package")
def local_sandbox(private_cache):
    try:
        return make_sandbox("local")
    except SandboxUnavailable as e:
        pytest.skip(f"local sandbox unavailable: {e}")


@pytest.fixture(scope="package")
def c_tasks(private_cache) -> list[Task]:
    """Corpus C tasks (make), one per category first, so that tests do not depend on ids."""
    if not CORPUS.is_dir():
        pytest.skip(f"bundled corpus missing at {CORPUS}")
    tasks = sorted((t for t in load_tasks(CORPUS) if t.build_system == "make"), key=lambda t: t.id)
    if len(tasks) < 8:
        pytest.skip(f"the corpus has only {len(tasks)} make tasks")
    by_cat: dict[str, list[Task]] = {}
    for t in tasks:
        by_cat.setdefault(t.category, []).append(t)
    out = []
    while any(by_cat.values()):  # round robin over categories
        for cat in sorted(by_cat):
            if by_cat[cat]:
                out.append(by_cat[cat].pop(0))
    return out


def make_task(root: Path, tid: str, build: list[str], files: dict[str, str] | None = None) -> Task:
    """A tiny task directory (no reference fix needed: it is never run)."""
    d = root / tid
    (d / "repo").mkdir(parents=True)
    for rel, text in (files or {"README": "tiny\n"}).items():
        (d / "repo" / rel).write_text(text)
    data = {
        "id": tid,
        "category": "test",
        "build_system": "make",
        "issue": "synthetic",
        "timeout_s": 120,
        "build": build,
        "protected": [],
        "dependencies": {},
    }
    (d / "task.toml").write_text(tomli_w.dumps(data))
    (d / "fix.patch").write_text("")
    return load_task(d)


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (psutil: an independent view of /proc)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_under(directory: str) -> list[int]:
    """Processes whose command line or working directory refers to ``directory``."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = p.info
        if info["status"] == psutil.STATUS_ZOMBIE or info["pid"] == os.getpid():
            continue
        cmd = " ".join(info["cmdline"] or [])
        cwd = info["cwd"] or ""
        if directory in cmd or cwd.startswith(directory):
            out.append(info["pid"])
    return out


def sleeping_build_task(root: Path) -> tuple[Task, Path]:
    """A task whose build writes its shell's pid to a mark file, then sleeps 30 s."""
    mark = root / "build.pid"
    task = make_task(
        root / "tasks", "slow", [f"echo $$ > {mark}.tmp; mv {mark}.tmp {mark}; sleep 30"]
    )
    return task, mark


async def sleeping_build(mark: Path, timeout_s: float = 30.0) -> list[psutil.Process]:
    """Once the build of `sleeping_build_task` sleeps: its shell and the shell's `sleep`."""
    deadline = time.monotonic() + timeout_s
    while not mark.exists():
        assert time.monotonic() < deadline, "the slow build never started"
        await asyncio.sleep(0.05)
    shell = psutil.Process(int(mark.read_text()))
    while not [p for p in shell.children() if p.name() == "sleep"]:
        assert time.monotonic() < deadline, "the slow build never slept"
        await asyncio.sleep(0.02)
    return [shell, *shell.children(recursive=True)]
