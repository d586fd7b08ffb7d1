"""LoRA export: merged full weights load in transformers with the merged JAX model's logits,
and the PEFT adapter directory loads with `peft` on the transformers base to the same logits."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from transformers import AutoModelForCausalLM

from jaxrepair.cli import main
from jaxrepair.config import LoraConfig
from jaxrepair.model import forward, load_hf
from jaxrepair.train.checkpoint import CheckpointError, base_pointer, export_hf
from jaxrepair.train.sft import sft_loss_fn
from jaxrepair.train.trainer import LoraRun, Trainer
from tests.model.hf_oracle import hf_logits, make_hf_model

peft = pytest.importorskip("peft")

LORA = LoraConfig(enabled=True, rank=4, alpha=8.0, targets=("q", "k", "v", "o", "gate", "down"))


def _lora_run(tmp_path):
    """A LoRA checkpoint on a transformers base, after two SGD steps (B no longer zero)."""
    hf_dir = tmp_path / "hf"
    make_hf_model(hf_dir, seed=3)
    cfg, base = load_hf(hf_dir, dtype=jnp.float32)
    trainer = Trainer(
        cfg,
        None,
        sft_loss_fn(cfg, chunk=None),
        (optax.sgd(5.0), lambda step: 5.0),
        out_dir=tmp_path / "run",
        progress=False,
        tensorboard=False,
        async_checkpoint=False,
    )
    ptr = base_pointer("hf", str(hf_dir), cfg, 0)
    trainer.use_lora(LoraRun(LORA, lambda: load_hf(hf_dir, dtype=jnp.float32)[1], ptr))
    trainer.set_params(base)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (2, 16)).astype(np.int32)
    batch = {
        "tokens": tokens,
        "targets": np.roll(tokens, -1, axis=1),
        "loss_mask": np.ones((2, 16), np.float32),
        "segment_ids": np.ones((2, 16), np.int32),
        "positions": np.tile(np.arange(16, dtype=np.int32), (2, 1)),
    }
    for _ in range(2):
        trainer.train_step(batch)
    trainer.save(None)
    trainer.ckpt.wait()
    assert any(np.any(np.asarray(ab["b"])) for ab in trainer.trainable["layers"].values())
    merged = jax.tree.map(np.asarray, trainer.params)
    trainer.close()
    return hf_dir, cfg, merged, tokens


def test_merged_and_peft_exports_match_the_merged_jax_model(tmp_path):
    hf_dir, cfg, merged, tokens = _lora_run(tmp_path)
    ours = np.asarray(forward(merged, cfg, tokens))

    export_hf(tmp_path / "run", tmp_path / "merged")
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", attn_implementation="eager")
    np.testing.assert_allclose(hf_logits(full.eval(), tokens), ours, atol=1e-4, rtol=1e-4)

    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "peft"), "--peft"]) == 0
    conf = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert conf["r"] == 4 and conf["lora_alpha"] == 8.0
    assert sorted(conf["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    )
    base = AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager")
    base_logits = hf_logits(base.eval(), tokens)
    model = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    got = hf_logits(model, tokens)
    np.testing.assert_allclose(got, ours, atol=1e-4, rtol=1e-4)
    assert np.abs(got - base_logits).max() > 1e-3  # the adapters matter


def test_peft_export_needs_a_hugging_face_base(tmp_path):
    from jaxrepair.model import Qwen3Config, init_params

    cfg = Qwen3Config.preset("tiny")
    trainer = Trainer(
        cfg,
        None,
        sft_loss_fn(cfg, chunk=None),
        (optax.sgd(1.0), lambda step: 1.0),
        out_dir=tmp_path / "run",
        progress=False,
        tensorboard=False,
        async_checkpoint=False,
    )
    ptr = base_pointer("random", None, cfg, 0)
    base = init_params(cfg, jax.random.key(0))
    trainer.use_lora(LoraRun(LORA, lambda: base, ptr))
    trainer.set_params(base)
    trainer.save(None)
    trainer.close()
    with pytest.raises(CheckpointError, match="export merged weights instead"):
        export_hf(tmp_path / "run", tmp_path / "peft", peft=True)
