"""The Ray farm on two Ray nodes (two more raylets beside the package's local cluster, Ray's
own cluster test utility): a node lost mid-build, and the validation cache shared by nodes.

Oracles: Ray removing the node that runs the build, its raylet killed and every process of
the node with it (the actor, the build), as when a machine is lost; the placement Ray reports
for each actor; the builds' own marks on disk; the cache server's own counts and directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from jaxrepair.envs import reward
from jaxrepair.envs.expert import ExpertPolicy
from jaxrepair.envs.protocol import Outcome

from .conftest import NODE_RESOURCE, make_task, sleeping_build, wait_gone

ray = pytest.importorskip("ray")
from jaxrepair.envs.ray_farm import RayFarm  # noqa: E402

ONE_PER_NODE = {NODE_RESOURCE: 1}  # only the added nodes have it: one actor on each


def test_node_lost_mid_build_is_replayed(ray_cluster, add_nodes, c_tasks, tmp_path):
    """Two actors on two nodes; the node running a build is removed mid-build. The episode's
    step is replayed from its history on the other node and scores (attempt 2), the other
    node's episode is untouched, every episode ends exactly once, and a node added later
    takes the lost actor's slot."""
    nodes = add_nodes(2)
    mark = tmp_path / "build.pid"
    # the first run of the build marks itself and sleeps; a replay finds the mark and is quick
    build = f"if [ -e {mark} ]; then true; else echo $$ > {mark}.tmp; mv {mark}.tmp {mark}; sleep 30; fi"
    task = make_task(tmp_path / "tasks", "slow-once", [build])
    good = c_tasks[0]
    answer = ExpertPolicy(good).simplified_answer()
    opts = {"unisolated": True, "workdir": str(tmp_path / "actors")}
    with RayFarm(workers=2, sandbox_opts=opts, max_attempts=2, resources=ONE_PER_NODE) as farm:
        placed = farm.placement()
        assert len(set(placed.values())) == 2  # one actor per node

        async def go():
            await farm.reset("victim", task, "simplified")
            stepping = asyncio.ensure_future(farm.step("victim", ""))
            build_procs = await sleeping_build(mark)
            actor = next(p.pid for p in build_procs[0].parents() if p.pid in placed)
            node = next(n for n in nodes if n.node_id == placed[actor])
            ray_cluster.remove_node(node, allow_graceful=False)  # the machine is lost:
            for pid in [actor, *(p.pid for p in build_procs)]:  # its processes go with it
                os.kill(pid, signal.SIGKILL)
            assert not wait_gone([actor, *(p.pid for p in build_procs)])
            other = asyncio.ensure_future(farm.reset("bystander", good, "simplified"))
            end = await stepping
            await other
            return end, await farm.step("bystander", answer), placed[actor]

        end, bystander, lost_node = asyncio.run(go())
        assert end.done and end.outcome in (Outcome.PASS, Outcome.FAIL) and end.attempts == 2
        assert bystander.outcome == Outcome.PASS and bystander.attempts == 1
        acc = farm.accounting()
        assert acc["complete"] and (acc["started"], acc["scored"], acc["infra_error"]) == (2, 2, 0)
        assert list(acc["failed_attempts"]) == ["victim"]
        assert "worker died" in acc["failed_attempts"]["victim"][0]
        met = farm.metrics()
        # (a replacement Ray still placed on the lost node before noticing it failed to start)
        assert met["worker_restarts"] >= 1 and met["retries"] == 1

        add_nodes(1)  # room for the lost actor's replacement

        async def after():
            await farm.reset("after", good, "simplified")
            return await farm.step("after", answer)

        assert asyncio.run(after()).outcome == Outcome.PASS
        deadline = time.monotonic() + 60
        while len(farm.placement()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        nodes_now = set(farm.placement().values())
        assert len(nodes_now) == 2 and lost_node not in nodes_now
        assert farm.accounting()["complete"] and farm.accounting()["started"] == 3


def test_validation_cache_is_shared_by_the_nodes(
    ray_cluster, add_nodes, c_tasks, local_sandbox, tmp_path
):
    """Two actors on two nodes, one cache served from the driver's node: two identical answers
    validated at once, one on each node, build once; the other node's is a hit. A later farm
    on the same cache directory hits too (the results are on the driver's disk)."""
    add_nodes(2)
    task = c_tasks[0]
    reward.reference_test_count(task, local_sandbox)  # so the actors build only the answers
    answer = ExpertPolicy(task).simplified_answer()
    cache = tmp_path / "cache"

    def group(farm: RayFarm, eids: list[str]) -> list:
        async def one(eid: str):
            await farm.reset(eid, task, "simplified")
            return await farm.step(eid, answer)

        async def go():
            return await asyncio.gather(*(one(e) for e in eids))

        return asyncio.run(go())

    with RayFarm(workers=2, cache_dir=cache, resources=ONE_PER_NODE) as farm:
        assert len(set(farm.placement().values())) == 2
        ends = group(farm, ["a", "b"])
        met, stats = farm.metrics(), farm.cache_stats()
    assert [e.outcome for e in ends] == [Outcome.PASS, Outcome.PASS]
    assert (met["builds"], met["cache_hits"]) == (1, 1), met
    assert stats == {"hits": 1, "misses": 1, "claims": 0}
    entries = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert [e["outcome"] for e in entries] == ["pass"]

    with RayFarm(workers=1, cache_dir=cache, resources=ONE_PER_NODE) as again:
        (end,) = group(again, ["c"])
        assert end.outcome == Outcome.PASS
        assert (again.metrics()["builds"], again.metrics()["cache_hits"]) == (0, 1)
