"""Attention kernels agree inside the model: blocked (causal block skipping, own backward) vs
dense, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.model import Qwen3Config, forward, init_params
from jaxrepair.model.blocked_attention import block_size


def test_blocked_attention_matches_dense_on_packed_rows():
    cfg = Qwen3Config.preset("tiny", num_hidden_layers=2)
    params = init_params(cfg, jax.random.key(0))
    t = 2 * block_size(300) + 37  # several blocks and a ragged last one
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, size=(2, t)))
    seg = np.ones((2, t), np.int32)
    seg[0, 300:] = 2  # a document boundary inside a block
    seg[1, t - 50 :] = 0  # padding
    seg = jnp.asarray(seg)

    def loss(p, impl):
        c = cfg.replace(attention_impl=impl)
        return (forward(p, c, tokens, segment_ids=seg) ** 2).mean()

    for impl in ("blocked", "xla"):
        out = forward(params, cfg.replace(attention_impl=impl), tokens, segment_ids=seg)
        ref = forward(params, cfg.replace(attention_impl="reference"), tokens, segment_ids=seg)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5, rtol=1e-5)
    g_blocked = jax.jit(jax.grad(loss), static_argnums=1)(params, "blocked")
    g_ref = jax.jit(jax.grad(loss), static_argnums=1)(params, "reference")
    for a, b in zip(jax.tree.leaves(g_blocked), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-4)
    # plain causal (no segment ids) too
    plain_b = forward(params, cfg.replace(attention_impl="blocked"), tokens)
    plain_r = forward(params, cfg.replace(attention_impl="reference"), tokens)
    np.testing.assert_allclose(np.asarray(plain_b), np.asarray(plain_r), atol=2e-5, rtol=1e-5)
    assert jnp.isfinite(plain_b).all()
