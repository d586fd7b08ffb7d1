"""Qwen3-MoE against transformers' Qwen3MoeForCausalLM: logits, greedy generation, HF
import/export with one tensor per expert, gradients of the grouped-GEMM experts, sharding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from jaxrepair.model import forward, load_hf, make_mesh, save_hf
from jaxrepair.model.hf import hf_tensor_names
from jaxrepair.model.moe import moe
from jaxrepair.model.sampler import generate
from tests.model.hf_oracle import hf_logits, randomize


def make_hf_moe(out_dir, *, seed=0, norm_topk_prob=True, tie=False) -> Qwen3MoeForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=6,
        num_experts_per_tok=2,
        norm_topk_prob=norm_topk_prob,
        tie_word_embeddings=tie,
        max_position_embeddings=256,
        attn_implementation="eager",
    )
    model = randomize(Qwen3MoeForCausalLM(cfg).eval(), 0.1)
    model.save_pretrained(out_dir)
    return model


@pytest.mark.parametrize("norm_topk_prob,tie", [(True, False), (False, True)])
def test_moe_logits_and_export_match_transformers(tmp_path, norm_topk_prob, tie):
    hf = make_hf_moe(tmp_path / "hf", seed=1, norm_topk_prob=norm_topk_prob, tie=tie)
    cfg, params = load_hf(tmp_path / "hf", dtype=jnp.float32)
    assert cfg.is_moe and cfg.norm_topk_prob == norm_topk_prob
    assert params["layers"]["experts_gate"].shape == (2, 6, 32, 24)
    tokens = np.random.default_rng(0).integers(0, 96, (2, 21))
    ours = np.asarray(forward(params, cfg, jnp.asarray(tokens)))
    ref = hf_logits(hf, tokens)
    assert np.abs(ours - ref).max() <= 1e-4
    # export: one tensor per expert, loads in transformers with the same logits
    out = save_hf(tmp_path / "out", cfg, params, dtype="float32")
    assert "model.layers.1.mlp.experts.5.down_proj.weight" in hf_tensor_names(cfg)
    back = Qwen3MoeForCausalLM.from_pretrained(out).eval()
    assert np.abs(hf_logits(back, tokens) - ref).max() <= 1e-5


def test_moe_greedy_generation_matches_transformers(tmp_path):
    hf = make_hf_moe(tmp_path / "hf", seed=2)
    cfg, params = load_hf(tmp_path / "hf", dtype=jnp.float32)
    prompts = [[5, 9, 2, 7], [3, 4, 5, 6, 7, 8, 9, 10, 11]]
    out = generate(params, cfg, prompts, max_new_tokens=8, temperature=0.0)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False, pad_token_id=0)[
                0, len(p) :
            ].tolist()
        assert out.tokens[i].tolist() == ref


def test_moe_expert_gradients_match_a_dense_reference(tmp_path):
    """The grouped GEMMs (ragged_dot over tokens sorted by expert) against every expert run
    on every token and masked by the routing weights: same values and gradients."""
    make_hf_moe(tmp_path / "hf", seed=3)
    cfg, params = load_hf(tmp_path / "hf", dtype=jnp.float32)
    lp = jax.tree.map(lambda a: a[0], params["layers"])
    h = jax.random.normal(jax.random.key(0), (2, 7, 32))

    def dense(lp, h):
        flat = h.reshape(-1, 32)
        probs = jax.nn.softmax(flat @ lp["router"], axis=-1)
        w, idx = jax.lax.top_k(probs, cfg.num_experts_per_tok)
        w = w / w.sum(-1, keepdims=True)
        combine = jnp.zeros_like(probs).at[jnp.arange(flat.shape[0])[:, None], idx].set(w)
        g = jnp.einsum("nd,edm->nem", flat, lp["experts_gate"])
        u = jnp.einsum("nd,edm->nem", flat, lp["experts_up"])
        y = jnp.einsum("nem,emd->ned", jax.nn.silu(g) * u, lp["experts_down"])
        return jnp.einsum("ned,ne->nd", y, combine).reshape(h.shape)

    loss = lambda f: lambda lp, h: jnp.sum(jnp.sin(f(lp, h)))  # noqa: E731
    ours = jax.value_and_grad(loss(lambda lp, h: moe(cfg, lp, h)), argnums=(0, 1))(lp, h)
    ref = jax.value_and_grad(loss(dense), argnums=(0, 1))(lp, h)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(ref[1]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # MoE numerics vs transformers stay in the default suite
def test_moe_sharded_equals_unsharded(tmp_path):
    make_hf_moe(tmp_path / "hf", seed=4)
    cfg, params = load_hf(tmp_path / "hf", dtype=jnp.float32)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 96, (4, 16)))
    ref = np.asarray(forward(params, cfg, tokens))
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    _, sharded = load_hf(tmp_path / "hf", mesh=mesh, dtype=jnp.float32)
    assert sharded["layers"]["experts_gate"].sharding.spec[2] == "fsdp"
    out = np.asarray(jax.jit(lambda p, t: forward(p, cfg, t, mesh=mesh))(sharded, tokens))
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # and the gradient (a training step) partitions to the same values
    loss = lambda p, m: jnp.mean(jax.nn.log_softmax(forward(p, cfg, tokens, mesh=m))[..., 3])  # noqa: E731
    g_ref = jax.grad(loss)(params, None)
    g = jax.jit(jax.grad(lambda p: loss(p, mesh)))(sharded)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)
