"""The Ray farm backend on a local Ray cluster (this machine only, the package's `ray_cluster`;
Ray binds to the host's own address, not to loopback): real corpus episodes give what the
process farm gives, and an actor killed mid-build ends its episode as infra_error exactly
once. The contract tests shared with the process farm (accounting, faults, abandon,
backpressure, the cache) are in test_farm.py, run on both backends.

Oracles: the process farm (`EnvFarm`) on the same tasks and answers, the timestamps the builds
themselves write, psutil's view of the process table, and Ray's own actor death.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from jaxrepair.envs.expert import ExpertPolicy
from jaxrepair.envs.farm import EnvFarm, farm_from_config
from jaxrepair.envs.protocol import EnvService, Outcome, StepResult
from jaxrepair.envs.task import load_task

from .conftest import alive, sleeping_build, sleeping_build_task

ray = pytest.importorskip("ray")
from jaxrepair.envs.ray_farm import RayFarm  # noqa: E402

SUBMIT = '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>'
OPTS = {"unisolated": True}  # builds may write outside their workspace (the test's logs)


@pytest.fixture(scope="module")
def actors_dir(tmp_path_factory) -> Path:
    """Where the actors keep their directories (each its own, removed when it stops)."""
    return tmp_path_factory.mktemp("ray-actors")


@pytest.fixture(scope="module")
def farm(ray_cluster, actors_dir):
    """One Ray farm for the module: 3 actors, 2 builds at once."""
    with RayFarm(
        workers=3,
        sandbox_opts={**OPTS, "workdir": str(actors_dir)},
        max_attempts=1,
        step_timeout_s=60.0,
        max_concurrent_builds=2,
    ) as f:
        yield f
    assert not list(actors_dir.iterdir())  # every actor's directory is gone after close


async def play(farm: EnvService, eid: str, task, pipeline: str, turns: list[str]) -> list:
    res = await farm.reset(eid, task, pipeline)
    out = [res]
    turns = list(turns)
    while not res.done and turns:
        res = await farm.step(eid, turns.pop(0))
        out.append(res)
    return out


def run_all(farm: EnvService, specs: dict[str, tuple]) -> dict[str, list[StepResult]]:
    async def go():
        runs = await asyncio.gather(*(play(farm, e, *s) for e, s in specs.items()))
        return dict(zip(specs, runs, strict=True))

    return asyncio.run(go())


def test_same_outcomes_as_the_process_farm(farm, c_tasks, tmp_path):
    """Expert runs (full and simplified), a wrong answer and a bare submit: the Ray farm's
    results, step by step, are the process farm's. A task whose directory is gone from the
    driver's disk after its reset still runs: tasks travel by content, not by path."""
    t = c_tasks[:4]
    specs = {
        "full": (t[0], "full", ExpertPolicy(t[0]).full_turns()),
        "simple": (t[1], "simplified", [ExpertPolicy(t[1]).simplified_answer()]),
        "wrong": (t[2], "simplified", ["I am not sure what to change."]),
        "submit": (t[3], "full", [SUBMIT]),
    }
    with EnvFarm(workers=2, sandbox_opts=OPTS, max_attempts=1, step_timeout_s=60.0) as local:
        want = run_all(local, specs)
    got = run_all(farm, {f"ray-{e}": s for e, s in specs.items()})
    for e in specs:
        a, b = want[e], got[f"ray-{e}"]
        assert [(r.done, r.outcome, r.reward) for r in a] == [
            (r.done, r.outcome, r.reward) for r in b
        ], e
        assert [r.observation.splitlines()[:1] for r in a] == [
            r.observation.splitlines()[:1] for r in b
        ], e
        assert a[0].info["messages"] == b[0].info["messages"]
    assert [want[e][-1].outcome for e in specs] == ["pass", "pass", "fail", "fail"]

    moved = tmp_path / "moved"
    shutil.copytree(t[1].root, moved)
    task = load_task(moved)

    async def vanishing() -> StepResult:
        await farm.reset("moved", task, "simplified")
        shutil.rmtree(moved)
        return await farm.step("moved", ExpertPolicy(t[1]).simplified_answer())

    res = asyncio.run(vanishing())
    assert res.outcome == Outcome.PASS and res.reward == 1.0
    acc = farm.accounting()
    assert acc["complete"] and acc["infra_error"] == 0


def test_actor_killed_mid_build_is_one_infra_error(farm, actors_dir, c_tasks, tmp_path):
    """SIGKILL the actor running a build: that episode ends as infra_error (one attempt
    allowed), counted once; the other episodes pass; the orphaned build is killed; a new
    actor takes the slot and the next episode passes."""
    task, mark = sleeping_build_task(tmp_path)
    good = {f"ok{i}": c_tasks[i] for i in range(2)}
    before = farm.accounting()
    dirs_before = set(actors_dir.iterdir())
    assert len(dirs_before) == 3

    async def go():
        victim = asyncio.ensure_future(play(farm, "victim", task, "simplified", [""]))
        others = [
            asyncio.ensure_future(
                play(farm, e, t, "simplified", [ExpertPolicy(t).simplified_answer()])
            )
            for e, t in good.items()
        ]
        build = await sleeping_build(mark)
        actor = next(p for p in build[0].parents() if p.pid in farm.worker_pids())
        os.kill(actor.pid, signal.SIGKILL)
        return await victim, await asyncio.gather(*others), build, actor.pid

    victim, others, build, actor_pid = asyncio.run(go())
    end = victim[-1]
    assert end.done and end.outcome == Outcome.INFRA_ERROR and end.reward == 0.0
    assert "worker died" in end.infra_error and end.attempts == 1
    assert [r[-1].outcome for r in others] == [Outcome.PASS, Outcome.PASS]

    acc = farm.accounting()
    assert acc["complete"]
    assert acc["started"] - before["started"] == 3
    assert acc["infra_error"] - before["infra_error"] == 1
    assert acc["scored"] - before["scored"] == 2
    assert list(acc["infra_errors"]) == ["victim"]
    assert acc["outcomes"][Outcome.INFRA_ERROR] == 1
    assert farm.metrics()["worker_restarts"] == 1

    def swept() -> bool:  # the sweep on the actor's node: orphans killed, directory removed
        gone = dirs_before - set(actors_dir.iterdir())
        return len(gone) == 1 and not any(alive(p.pid) for p in build)

    deadline = time.monotonic() + 15
    while not swept() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(build) == 2 and not [p.pid for p in build if alive(p.pid)]
    assert swept() and not alive(actor_pid)

    again = run_all(
        farm, {"after": (c_tasks[0], "simplified", [ExpertPolicy(c_tasks[0]).simplified_answer()])}
    )
    assert again["after"][-1].outcome == Outcome.PASS
    assert len(farm.worker_pids()) == 3 and actor_pid not in farm.worker_pids()
    assert farm.accounting()["complete"]


def test_an_actor_without_a_sandbox_fails_start(farm, tmp_path):
    """No bubblewrap on the node: start fails with the actor's reason and leaves nothing."""
    actors = tmp_path / "actors"
    broken = RayFarm(
        workers=1, sandbox_opts={"bwrap": str(tmp_path / "no-bwrap"), "workdir": str(actors)}
    )
    with pytest.raises(RuntimeError, match="farm could not start: worker 0 .*bubblewrap"):
        broken.start()
    assert not list(actors.iterdir())
    assert ray.is_initialized()  # the farm did not own the cluster, so it left it running


def test_config_chooses_the_backend():
    from jaxrepair.config import ConfigError, EnvsConfig

    f = farm_from_config(EnvsConfig(backend="ray", max_concurrent_builds=3), episode_caps=True)
    assert isinstance(f, RayFarm) and isinstance(f, EnvService)
    assert f.max_concurrent_builds == 3 and f.address is None
    assert f.episode_caps == {"max_steps": 30, "max_context_tokens": 16384}
    assert isinstance(farm_from_config(EnvsConfig(), episode_caps=False), EnvFarm)
    with pytest.raises(ConfigError, match="envs.backend='k8s'"):
        EnvsConfig(backend="k8s")
    with pytest.raises(ConfigError, match="envs.max_concurrent_builds=0"):
        EnvsConfig(backend="ray", max_concurrent_builds=0)
    with pytest.raises(ValueError, match="max_concurrent_builds"):
        RayFarm(workers=2, max_concurrent_builds=0)
    for bad in ({"CPU": 1}, {"docker": 0}):
        with pytest.raises(ValueError, match="custom resources with amounts > 0"):
            RayFarm(workers=2, resources=bad)
    # custom resources from the run config (TOML list or --set) reach every actor's options
    from jaxrepair.config import load_config

    cfg = load_config(None, ["envs.backend=ray", "envs.ray_resources=docker=1,big_disk=0.5"])
    f = farm_from_config(cfg.envs, episode_caps=False)
    assert f.resources == {"docker": 1.0, "big_disk": 0.5}
    for bad in ("docker", "docker=0", "=1", "docker=x"):
        with pytest.raises(ConfigError, match="envs.ray_resources"):
            EnvsConfig(backend="ray", ray_resources=(bad,))
