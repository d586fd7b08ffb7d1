"""One GRPO step of `run_grpo` with its environments on the Ray farm (``envs.backend="ray"``,
a local Ray cluster this module starts and stops), on the tiny random model and a real corpus
task in the simplified pipeline.

Oracle: the same step with the process farm (``envs.backend="local"``): the same seed samples
the same answers, so every episode must end with the same outcome and reward, and both farms'
accounting must be complete. Slow tier (two tiny GRPO runs, each compiling its own step).
"""

from __future__ import annotations

import json

import pytest

from jaxrepair.config import load_config
from jaxrepair.train.grpo_trainer import run_grpo
from jaxrepair.train.trainer import single_device_mesh

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # two GRPO runs: about 80 s on 2 cores


@pytest.fixture(scope="module")
def ray_local():
    """A one-machine Ray cluster with room for the farm's two actors."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _config(out_dir, backend: str):
    return load_config(
        None,
        [
            "grpo.tasks=recipes-config-002",  # one prompt length: one compiled train step
            "grpo.group_size=2",
            "grpo.tasks_per_step=1",
            "grpo.max_new_tokens=8",
            "grpo.submit_unfinished=on",  # unfinished answers are built and scored
            "grpo.overlap=off",
            "envs.workers=2",
            f"envs.backend={backend}",
            "train.steps=1",
            "train.checkpoint_every=0",
            f"train.out_dir={out_dir}",
            "data.seq_len=1024",
        ],
    )


def _episodes(out_dir) -> list[tuple]:
    rows = [json.loads(x) for x in (out_dir / "rollouts.jsonl").read_text().splitlines()]
    return sorted(
        (r["task_id"], r["outcome"], r["reward"], r["messages"][-1]["content"]) for r in rows
    )


def test_one_grpo_step_through_the_ray_farm(ray_local, tmp_path):
    mesh = single_device_mesh()
    got = run_grpo(_config(tmp_path / "ray", "ray"), mesh=mesh, progress=False)
    want = run_grpo(_config(tmp_path / "local", "local"), mesh=mesh, progress=False)
    for s in (got, want):
        assert s["step"] == 1 and s["optimizer_updates"] == 1
        acc, fa = s["accounting"], s["farm_accounting"]
        assert acc["complete"] and acc["started"] == 2 and acc["infra_error"] == 0
        assert fa["complete"] and fa["started"] == fa["scored"] == 2
    assert ray.is_initialized()  # the farm used the running cluster and left it running
    assert _episodes(tmp_path / "ray") == _episodes(tmp_path / "local")
