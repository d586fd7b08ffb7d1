"""The JAX Qwen3 against transformers' Qwen3ForCausalLM on tiny random models."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.model import forward, load_hf
from tests.model.hf_oracle import hf_logits, make_hf_model

CONFIGS = {
    "untied-2layers": dict(num_hidden_layers=2, tie_word_embeddings=False),
    "tied-1layer": dict(num_hidden_layers=1, tie_word_embeddings=True),
    # head_dim (24) differs from hidden/heads (64/4 = 16), and 3 layers
    "headdim24-3layers": dict(num_hidden_layers=3, head_dim=24, num_key_value_heads=1),
    "mha-tied-3layers": dict(
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
    ),
    "yarn": dict(
        num_hidden_layers=2,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers(tmp_path, name):
    hf = make_hf_model(tmp_path, seed=len(name), **CONFIGS[name])
    cfg, params = load_hf(tmp_path, dtype=jnp.float32)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, 37))
    ours = np.asarray(forward(params, cfg, jnp.asarray(tokens)))
    ref = hf_logits(hf, tokens)
    assert ours.shape == ref.shape == (2, 37, cfg.vocab_size)
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max()


def test_remat_and_unscanned_paths_agree(tmp_path):
    hf = make_hf_model(tmp_path, num_hidden_layers=2)
    cfg, params = load_hf(tmp_path, dtype=jnp.float32)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, size=(1, 20)))
    ref = hf_logits(hf, np.asarray(tokens))
    for variant in (
        cfg.replace(remat="full"),
        cfg.replace(remat="save_dots"),
        cfg.replace(scan_layers=True),
        cfg.replace(scan_layers=False),
        cfg.replace(attention_impl="reference"),
    ):
        out = np.asarray(forward(params, variant, tokens))
        assert np.abs(out - ref).max() <= 1e-4, variant


@pytest.mark.parametrize("scan_layers", [None, True])
def test_gradients_match_transformers_autograd(tmp_path, scan_layers):
    """Whole-model gradients of the next-token loss equal torch autograd through
    transformers, for the layer loop CPU picks by default (unrolled) and the scanned one."""
    import jax
    import torch

    from jaxrepair.model.hf import _hf_tensors
    from jaxrepair.model.qwen3 import scans_layers

    hf = make_hf_model(tmp_path, num_hidden_layers=3, tie_word_embeddings=False)
    cfg, params = load_hf(tmp_path, dtype=jnp.float32)
    cfg = cfg.replace(scan_layers=scan_layers)
    assert scans_layers(cfg, None) == bool(scan_layers)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, size=(2, 40))

    def loss_fn(p):
        logp = jax.nn.log_softmax(forward(p, cfg, jnp.asarray(tokens[:, :-1])), axis=-1)
        return -jnp.take_along_axis(logp, jnp.asarray(tokens[:, 1:, None]), axis=-1).mean()

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    hf.zero_grad(set_to_none=True)
    logits = hf(input_ids=torch.as_tensor(tokens[:, :-1])).logits.float()
    ref = -torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(tokens[:, 1:, None])).mean()
    ref.backward()
    assert abs(float(loss) - ref.item()) <= 1e-5
    hf_grads = {n: p.grad.numpy() for n, p in hf.named_parameters()}
    ours = dict(_hf_tensors(cfg, grads, "float32"))
    assert ours.keys() == hf_grads.keys()
    for name, g in ours.items():
        scale = np.abs(hf_grads[name]).max()
        assert np.abs(g - hf_grads[name]).max() <= 1e-4 * scale + 1e-7, name


def test_bfloat16_forward_close_to_transformers_bf16(tmp_path):
    import torch

    hf = make_hf_model(tmp_path, num_hidden_layers=2, dtype=torch.bfloat16)
    cfg, params = load_hf(tmp_path, dtype=jnp.bfloat16)
    assert params["layers"]["q_proj"].dtype == jnp.bfloat16
    tokens = np.random.default_rng(2).integers(0, cfg.vocab_size, size=(2, 16))
    ours = np.asarray(forward(params, cfg, jnp.asarray(tokens)))
    ref = hf_logits(hf, tokens)
    # bf16 rounding differs between XLA and torch kernels; agreement at bf16 precision.
    assert np.abs(ours - ref).max() <= 0.05 * max(1.0, np.abs(ref).max())
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() > 0.9


def test_packed_batch_equals_documents_alone(tmp_path):
    make_hf_model(tmp_path, num_hidden_layers=2)
    cfg, params = load_hf(tmp_path, dtype=jnp.float32)
    rng = np.random.default_rng(3)
    doc_a = rng.integers(1, cfg.vocab_size, size=11)
    doc_b = rng.integers(1, cfg.vocab_size, size=7)
    pad = 6
    row = np.concatenate([doc_a, doc_b, np.zeros(pad, int)])[None]
    seg = np.concatenate([np.full(11, 1), np.full(7, 2), np.zeros(pad, int)])[None]
    packed = np.asarray(forward(params, cfg, jnp.asarray(row), segment_ids=jnp.asarray(seg)))
    alone_a = np.asarray(forward(params, cfg, jnp.asarray(doc_a[None])))
    alone_b = np.asarray(forward(params, cfg, jnp.asarray(doc_b[None])))
    assert np.abs(packed[0, :11] - alone_a[0]).max() <= 1e-5
    assert np.abs(packed[0, 11:18] - alone_b[0]).max() <= 1e-5
    assert np.isfinite(packed).all()


def test_config_reads_legacy_and_current_hf_formats(tmp_path):
    from jaxrepair.model import Qwen3Config

    make_hf_model(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    current = Qwen3Config.from_hf_dict(raw)
    legacy = dict(raw)
    legacy.pop("rope_parameters")
    legacy.pop("dtype", None)
    legacy["rope_theta"] = 10000.0
    legacy["torch_dtype"] = "float32"
    assert Qwen3Config.from_hf_dict(legacy) == current
    assert current.rope_theta == 10000.0 and current.head_dim == 16
