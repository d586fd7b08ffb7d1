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


def test_plan_from_run_config():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxrepair.cli",
            "plan",
            "--config",
            "launch/configs/qwen3-32b_grpo.toml",
            "--devices",
            "256",
        ],
        capture_output=True,
        text=True,
    )
    assert "qwen3-32b" in out.stdout and "tensor': 4" in out.stdout, out.stdout + out.stderr


def test_launch_detection_from_environment():
    from jaxrepair.distributed import launch_kind

    assert launch_kind({}) is None
    assert launch_kind({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}) == "slurm"
    assert launch_kind({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert launch_kind({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == "tpu_pod"
    assert launch_kind({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}) == "explicit"


def test_launch_scripts_are_valid_shell():
    for script in ("launch/slurm_gpu.sbatch", "launch/tpu_pod.sh"):
        subprocess.run(["bash", "-n", script], check=True)
