"""save_hf output loads in transformers; load -> save -> load is exact; bad checkpoints are named."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM

from jaxrepair.model import (
    CheckpointMismatch,
    ConfigError,
    Qwen3Config,
    forward,
    init_params,
    load_hf,
    save_hf,
)
from tests.model.hf_oracle import hf_logits, make_hf_model


@pytest.mark.parametrize("tied", [False, True])
def test_save_hf_loads_in_transformers_with_identical_logits(tmp_path, tied):
    cfg = Qwen3Config.preset("tiny", tie_word_embeddings=tied, num_hidden_layers=3, head_dim=24)
    params = init_params(cfg, jax.random.key(1))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text('{"stand-in": true}')
    # tiny shards force the sharded layout with an index
    out = save_hf(
        tmp_path / "out",
        cfg,
        params,
        dtype="float32",
        max_shard_bytes=200_000,
        tokenizer_from=tmp_path / "src",
    )
    files = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(files) > 1 and files[0].endswith(f"-of-{len(files):05d}.safetensors")
    assert (out / "generation_config.json").is_file() and (out / "tokenizer.json").is_file()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, 19))
    ours = np.asarray(forward(params, cfg, jnp.asarray(tokens)))
    assert np.abs(hf_logits(model, tokens) - ours).max() <= 1e-4


def test_load_save_load_is_exact(tmp_path):
    make_hf_model(tmp_path / "a", num_hidden_layers=2)
    cfg, params = load_hf(tmp_path / "a", dtype=jnp.float32)
    save_hf(tmp_path / "b", cfg, params, dtype="float32")
    cfg2, params2 = load_hf(tmp_path / "b", dtype=jnp.float32)
    assert cfg2 == cfg
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and the tensors on disk are bit-identical to transformers' own save
    orig = load_file(tmp_path / "a" / "model.safetensors")
    again = {}
    for f in (tmp_path / "b").glob("model-*.safetensors"):
        again.update(load_file(f))
    assert orig.keys() == again.keys()
    for k in orig:
        np.testing.assert_array_equal(orig[k], again[k])


def test_bf16_export_round_trips(tmp_path):
    cfg = Qwen3Config.preset("tiny")
    params = init_params(cfg, jax.random.key(2), dtype=jnp.bfloat16)
    save_hf(tmp_path, cfg, params)  # bfloat16 on disk by default
    cfg2, params2 = load_hf(tmp_path, dtype=jnp.bfloat16)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def _single_file(tmp_path):
    make_hf_model(tmp_path, num_hidden_layers=1)
    return tmp_path / "model.safetensors"


def test_wrong_shaped_tensor_is_named(tmp_path):
    path = _single_file(tmp_path)
    tensors = load_file(path)
    tensors["model.layers.0.mlp.up_proj.weight"] = np.zeros((5, 64), np.float32)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(
        CheckpointMismatch, match=r"model\.layers\.0\.mlp\.up_proj\.weight.*\[5, 64\]"
    ):
        load_hf(tmp_path, dtype=jnp.float32)


def test_missing_and_unknown_tensors_are_named(tmp_path):
    path = _single_file(tmp_path)
    tensors = load_file(path)
    del tensors["model.layers.0.self_attn.k_norm.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatch, match="lacks tensor 'model.layers.0.self_attn.k_norm"):
        load_hf(tmp_path, dtype=jnp.float32)
    tensors["model.layers.0.self_attn.k_norm.weight"] = np.ones(16, np.float32)
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.ones(64, np.float32)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(
        CheckpointMismatch, match="unknown tensor 'model.layers.0.self_attn.q_proj.bias'"
    ):
        load_hf(tmp_path, dtype=jnp.float32)


def test_bad_configs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'qwen3-7b'.*qwen3-8b"):
        Qwen3Config.preset("qwen3-7b")
    with pytest.raises(ConfigError, match="num_key_value_heads=3"):
        Qwen3Config.preset("tiny", num_key_value_heads=3)
    with pytest.raises(ConfigError, match="model_type='llama'"):
        Qwen3Config.from_hf_dict({"model_type": "llama"})
    with pytest.raises(ConfigError, match="rope_type='longrope'"):
        Qwen3Config.preset("tiny", rope_scaling=(("rope_type", "longrope"), ("factor", 2.0)))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf(tmp_path)


def test_presets_have_published_sizes():
    sizes = {
        "qwen3-0.6b": 0.6e9,
        "qwen3-1.7b": 1.7e9,
        "qwen3-4b": 4.0e9,
        "qwen3-8b": 8.2e9,
        "qwen3-14b": 14.8e9,
        "qwen3-32b": 32.8e9,
    }
    for name, n in sizes.items():
        got = Qwen3Config.preset(name).num_params()
        assert abs(got - n) / n < 0.05, (name, got)
