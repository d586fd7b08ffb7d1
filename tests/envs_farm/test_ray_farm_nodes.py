"""A Ray node lost mid-build, on a three-node Ray cluster on this machine (Ray's own cluster
test utility: one raylet per node). Slow tier: starting the nodes takes tens of seconds.

Oracle: Ray removing the node that runs the build (its raylet and every worker on it die, as
when a machine is lost); the accounting must still end every episode exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from jaxrepair.envs.expert import ExpertPolicy
from jaxrepair.envs.protocol import Outcome

from .conftest import sleeping_build, sleeping_build_task

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from jaxrepair.envs.ray_farm import RayFarm  # noqa: E402


@pytest.fixture
def cluster(private_cache):
    """A head node with no CPU (no actor lands there) and two one-CPU nodes."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def test_node_lost_mid_build(cluster, c_tasks, tmp_path):
    c, nodes = cluster
    task, mark = sleeping_build_task(tmp_path)
    good = c_tasks[0]
    answer = ExpertPolicy(good).simplified_answer()
    orphans: list[int] = []
    # actors keep their directories under tmp_path: the lost node's cannot be swept by the farm
    opts = {"unisolated": True, "workdir": str(tmp_path / "actors")}
    with RayFarm(workers=2, sandbox_opts=opts, max_attempts=1) as farm:
        assert len(set(farm.placement().values())) == 2  # one actor per node

        async def go():
            victim = asyncio.ensure_future(farm.reset("victim", task, "simplified"))
            await victim
            stepping = asyncio.ensure_future(farm.step("victim", ""))
            build = await sleeping_build(mark)
            orphans.extend(p.pid for p in build)
            actor = next(p.pid for p in build[0].parents() if p.pid in farm.placement())
            node = next(n for n in nodes if n.node_id == farm.placement()[actor])
            c.remove_node(node, allow_graceful=False)
            return await stepping

        end = asyncio.run(go())
        assert end.done and end.outcome == Outcome.INFRA_ERROR and "worker died" in end.infra_error
        acc = farm.accounting()
        assert acc["complete"] and acc["started"] == 1 and acc["infra_error"] == 1

        c.add_node(num_cpus=1)  # room for the lost actor's replacement

        async def after():
            await farm.reset("after", good, "simplified")
            return await farm.step("after", answer)

        assert asyncio.run(after()).outcome == Outcome.PASS
        acc = farm.accounting()
        assert acc["complete"] and (acc["started"], acc["infra_error"], acc["passed"]) == (2, 1, 1)
        assert list(acc["infra_errors"]) == ["victim"]
        assert farm.metrics()["worker_restarts"] == 1
    for pid in orphans:  # a lost machine takes its builds along; here they outlive the node
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
