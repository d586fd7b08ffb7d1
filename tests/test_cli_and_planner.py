"""The console entry point and the memory planner."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.model import make_mesh
from jaxrepair.model.qwen3 import param_shapes
from jaxrepair.model.sharding import shard_params
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
    shapes = param_shapes(cfg, jnp.float32)
    params = shard_params(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), mesh)
    dev0 = jax.devices()[0]
    real = sum(
        s.data.nbytes
        for x in jax.tree.leaves(params)
        for s in x.addressable_shards
        if s.device == dev0
    )
    # the planner applies the sharding rules (norms replicated, uneven dims left whole)
    assert plan.num_params == sum(x.size for x in jax.tree.leaves(params))
    assert plan.rows["parameters (float32)"] == real
    assert plan.rows["AdamW moments (2 x float32)"] == 2 * real


def test_plan_cli_verdicts(capsys):
    from jaxrepair.cli import main

    def run(*args):
        code = main(["plan", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run(
        "--model", "qwen3-32b", "--devices", "8", "--mesh", "fsdp=8", "--seq", "8192"
    )
    assert code == 1 and "DOES NOT FIT" in out
    args = ("--model", "qwen3-32b", "--devices", "64", "--mesh", "fsdp=-1,tensor=4")
    code, out, _ = run(*args, "--seq", "32768", "--batch", "16", "--attention", "xla")
    assert code == 1 and "[B,N,T,T]" in out, out
    code, out, _ = run(*args, "--seq", "32768", "--batch", "16", "--attention", "splash")
    assert code == 0 and "fits" in out, out
    # the installed command: a malformed mesh is one line on stderr and exit status 2
    bad = subprocess.run(
        [sys.executable, "-m", "jaxrepair.cli", "plan", "--mesh", "data2"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stdout == "", bad
    assert bad.stderr.strip().splitlines() == [
        "jaxrepair plan: mesh item 'data2' is not axis=size (e.g. data=2,fsdp=-1,tensor=4)"
    ]


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
    assert "qwen3-32b (grpo)" in out.stdout and "tensor': 4" in out.stdout, out.stdout + out.stderr
    # the config's rollout engine, not the static sampler, holds the KV
    assert "engine KV pool (4096 x 64 tokens)" in out.stdout and "overlap snapshots" in out.stdout
    assert "sampler KV cache" not in out.stdout


def test_plan_counts_what_the_run_holds():
    """Each option moves the plan the way the step's buffers do."""
    from jaxrepair.planner import GIB

    base = dict(devices=64, mesh={"fsdp": -1, "tensor": 4}, global_batch=64, seq_len=32768)
    dense = plan_memory("qwen3-32b", attention_impl="xla", **base)
    flash = plan_memory("qwen3-32b", attention_impl="splash", **base)
    # one 32k row: dense scores are 16 heads x 32k x 32k x 4 bytes = 64 GiB per buffer
    assert dense.total - flash.total > 4 * 64 * GIB
    assert "packed-row segment mask [B,1,T,T] bool" not in flash.rows
    accum = plan_memory("qwen3-32b", attention_impl="splash", grad_accum=4, **base)
    assert accum.per_device_batch == flash.per_device_batch / 4
    grpo = dict(kind="grpo", generate_batch=64, max_new_tokens=8192, attention_impl="cudnn")
    off = plan_memory("qwen3-32b", overlap=False, **base, **grpo)
    on = plan_memory("qwen3-32b", overlap=True, **base, **grpo)
    snap = on.rows["overlap snapshots (2 x params: collecting + behaviour)"]
    assert snap == 2 * on.rows["parameters (float32)"]
    assert on.total > off.total + snap
    cache = next(v for k, v in on.rows.items() if k.startswith("sampler KV cache"))
    # 64 layers x 64 sequences over 16 batch devices x (24k prompt -> 32k + 8k) slots x (k, v)
    # x 8 kv heads over tensor=4 x head_dim 128 x fp32 (the params it samples with)
    assert cache == 64 * 4 * 40960 * 2 * 2 * 128 * 4
    bf16 = plan_memory("qwen3-32b", overlap=True, param_dtype="bfloat16", **base, **grpo)
    assert next(v for k, v in bf16.rows.items() if k.startswith("sampler KV cache")) == cache / 2


def test_plan_rejects_batches_the_trainer_rejects():
    from jaxrepair.config import load_config
    from jaxrepair.planner import PlanError, plan_for_config

    rc = load_config("launch/configs/qwen3-32b_sft.toml", ["optim.grad_accum=8"])
    with pytest.raises(PlanError, match="divide evenly over 64 data-parallel devices"):
        plan_for_config(rc)


def test_launch_scripts_are_valid_shell():
    for script in ("launch/slurm_gpu.sbatch", "launch/tpu_pod.sh"):
        subprocess.run(["bash", "-n", script], check=True)
