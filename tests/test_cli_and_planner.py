"""The console entry point and the memory planner."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp

from jaxrepair.model import init_params, make_mesh
from jaxrepair.planner import plan_memory


def test_console_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "jaxrepair.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for cmd in ("demo", "sft", "grpo", "eval", "import-hf", "export-hf", "envs", "plan"):
        assert cmd in out


def test_planner_parameter_bytes_match_real_shards():
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    plan = plan_memory(
        "tiny",
        devices=8,
        mesh={"fsdp": 4, "tensor": 2},
        global_batch=8,
        seq_len=64,
        param_dtype="float32",
    )
    from jaxrepair.model import Qwen3Config

    cfg = Qwen3Config.preset("tiny")
    params = init_params(cfg, jax.random.key(0), mesh=mesh, dtype=jnp.float32)
    dev0 = jax.devices()[0]
    real = sum(
        s.data.nbytes
        for x in jax.tree.leaves(params)
        for s in x.addressable_shards
        if s.device == dev0
    )
    # the planner assumes every tensor is split 8 ways (norms are in fact replicated)
    assert plan.num_params == sum(x.size for x in jax.tree.leaves(params))
    assert abs(real - plan.rows["parameters"]) / real < 0.1


def test_plan_cli_verdicts():
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "jaxrepair.cli", "plan", *args], capture_output=True, text=True
        )

    small = run("--model", "qwen3-32b", "--devices", "8", "--mesh", "fsdp=8", "--seq", "8192")
    assert small.returncode == 1 and "DOES NOT FIT" in small.stdout
    big = run(
        "--model", "qwen3-32b", "--devices", "64", "--mesh", "fsdp=-1,tensor=4", "--batch", "16"
    )
    assert big.returncode == 0 and "fits" in big.stdout, big.stdout
