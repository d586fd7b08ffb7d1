"""The memory planner's LoRA rows against XLA's buffer assignment of the LoRA train step, and
the shipped 32B LoRA config fits one 8-GPU node."""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrepair.config import LoraConfig, load_config
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import param_shapes
from jaxrepair.model.sharding import make_mesh
from jaxrepair.planner import plan_for_config, plan_memory
from jaxrepair.train.sft import sft_loss_fn
from jaxrepair.train.trainer import LoraRun, Trainer, make_optimizer

FAST_CODEGEN = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
LORA = LoraConfig(enabled=True, rank=16, alpha=32.0)
ROOT = Path(__file__).resolve().parents[2]


def _xla_lora_step_bytes(preset: str, batch: int, seq: int) -> int:
    cfg = Qwen3Config.preset(preset, remat="full")
    mesh = make_mesh({"fsdp": -1})
    b = {
        "tokens": np.zeros((batch, seq), np.int32),
        "targets": np.zeros((batch, seq), np.int32),
        "loss_mask": np.ones((batch, seq), np.float32),
        "segment_ids": np.ones((batch, seq), np.int32),
        "positions": np.zeros((batch, seq), np.int32),
    }
    base = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(cfg))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            cfg,
            None,
            sft_loss_fn(cfg, min(1024, seq), mesh),
            make_optimizer(1e-3, 10),
            mesh=mesh,
            out_dir=out,
            tensorboard=False,
            progress=False,
            async_checkpoint=False,
        )
        try:
            trainer.use_lora(LoraRun(LORA, lambda: base, {"kind": "random", "fingerprint": "x"}))
            trainer.set_params(base)
            step = trainer._compile(b)
            lowered = step.lower(trainer.state, trainer.base, b, jax.random.key(0))
            ma = lowered.compile(compiler_options=FAST_CODEGEN).memory_analysis()
        finally:
            trainer.close()
    return (
        ma.temp_size_in_bytes
        + ma.argument_size_in_bytes
        + ma.output_size_in_bytes
        - (ma.alias_size_in_bytes)
    )


@pytest.mark.slow
def test_lora_plan_is_within_1_to_1_5_of_xla():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    measured = _xla_lora_step_bytes("toy", 8, 1024)
    plan = plan_memory(
        "toy",
        devices=8,
        mesh={"fsdp": -1},
        global_batch=8,
        seq_len=1024,
        remat="full",
        param_dtype="float32",
        compute_dtype="float32",
        lora=LORA,
    )
    ratio = plan.total / measured
    print(f"\nLoRA plan {plan.total / 2**20:.1f} MiB, XLA {measured / 2**20:.1f} MiB: {ratio:.2f}x")
    assert 1.0 <= ratio <= 1.5, (plan.rows, measured)


def test_32b_lora_config_fits_one_node_with_frozen_base_rows():
    rc = load_config(ROOT / "launch" / "configs" / "qwen3-32b_lora_sft.toml")
    plan = plan_for_config(rc)
    assert plan.fits and rc.mesh.devices == 8 and rc.mesh.hbm_gib == 80
    rows = plan.rows
    assert "frozen base (bfloat16, no grads or moments)" in rows
    assert not any(k.startswith("AdamW moments (2 x bfloat16") for k in rows)
    # adapters' moments are 2x the adapters, the base has none; full fine-tuning with fp32
    # master weights and moments does not fit the node
    assert rows["AdamW moments (2 x float32, adapters)"] == 2 * rows["LoRA adapters (float32)"]
    full = plan_for_config(rc.with_overrides(["lora.enabled=false", "model.param_dtype=float32"]))
    assert not full.fits and plan.total < full.total / 2
