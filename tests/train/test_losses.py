"""Chunked log-probs / cross-entropy vs a full-logits reference (values in numpy, and gradients)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.model import Qwen3Config, forward, init_params
from jaxrepair.train.losses import chunked_cross_entropy, logprobs_from_hidden, token_logprobs


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


_forward = jax.jit(lambda p, cfg, t, s: forward(p, cfg, t, None, s), static_argnums=1)


@pytest.fixture(scope="module")
def setup():
    cfg = Qwen3Config.preset("tiny", tie_word_embeddings=False, vocab_size=300)
    params = init_params(cfg, jax.random.key(1))
    # larger weights so the distribution is far from uniform
    params = jax.tree.map(lambda p: p * 3.0, params)
    rng = np.random.default_rng(0)
    b, t = 2, 23
    tokens = rng.integers(0, cfg.vocab_size, (b, t))
    targets = rng.integers(0, cfg.vocab_size, (b, t))
    seg = np.ones((b, t), np.int32)
    seg[0, 10:] = 2
    seg[1, 20:] = 0
    mask = (rng.random((b, t)) < 0.6).astype(np.float32) * (seg > 0)
    return cfg, params, tokens, targets, seg, mask


@pytest.mark.parametrize(("chunk", "temperature"), [(1, 1.0), (5, 0.7), (23, 1.0), (None, 0.7)])
def test_token_logprobs_match_full_logits(setup, chunk, temperature):
    cfg, params, tokens, targets, seg, _ = setup
    fn = jax.jit(token_logprobs, static_argnums=(1, 6, 7))
    got = fn(params, cfg, tokens, None, seg, targets, temperature, chunk)
    logits = np.asarray(_forward(params, cfg, tokens, seg)) / temperature
    ref = np.take_along_axis(_np_log_softmax(logits), targets[..., None], -1)[..., 0]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-5, rtol=1e-5)


def test_entropy_matches_full_logits(setup):
    cfg, params, tokens, targets, seg, _ = setup
    fn = jax.jit(
        lambda p, t, s, y: token_logprobs(p, cfg, t, None, s, y, 1.0, 6, return_entropy=True)
    )
    _, ent = fn(params, tokens, seg, targets)
    ls = _np_log_softmax(np.asarray(_forward(params, cfg, tokens, seg)))
    ref = -(np.exp(ls) * ls).sum(-1)
    np.testing.assert_allclose(np.asarray(ent), ref, atol=2e-5, rtol=1e-5)


@partial(jax.jit, static_argnums=1)
def _chunked_vg(params, cfg, tokens, seg, targets, mask):
    def loss(p):
        return chunked_cross_entropy(p, cfg, tokens, None, seg, targets, mask, chunk=4)[0]

    return jax.value_and_grad(loss)(params)


def test_chunked_cross_entropy_values_and_grads(setup):
    cfg, params, tokens, targets, seg, mask = setup

    def full_ce(p):
        logits = forward(p, cfg, tokens, None, seg)
        lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), targets[..., None], -1)[..., 0]
        return -jnp.sum(lp * mask) / jnp.sum(mask)

    ref_v, ref_g = jax.jit(jax.value_and_grad(full_ce))(params)
    got_v, got_g = _chunked_vg(params, cfg, tokens, seg, targets, mask)
    # value also against numpy
    ls = _np_log_softmax(np.asarray(_forward(params, cfg, tokens, seg)))
    np_v = -(np.take_along_axis(ls, targets[..., None], -1)[..., 0] * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(got_v), np_v, rtol=1e-5)
    np.testing.assert_allclose(float(got_v), float(ref_v), rtol=1e-6)
    flat_ref, _ = jax.tree.flatten_with_path(ref_g)
    flat_got = jax.tree.leaves(got_g)
    for (path, r), g in zip(flat_ref, flat_got, strict=True):
        scale = float(jnp.max(jnp.abs(r))) + 1e-12
        np.testing.assert_allclose(
            np.asarray(g),
            np.asarray(r),
            atol=1e-5 * scale,
            rtol=1e-4,
            err_msg=jax.tree_util.keystr(path),
        )
    assert float(jnp.max(jnp.abs(ref_g["lm_head"]))) > 0


def test_empty_mask_and_bad_shapes(setup):
    cfg, params, tokens, targets, seg, mask = setup
    loss, grads = _chunked_vg(params, cfg, tokens, seg, targets, 0 * mask)  # same compiled fn
    assert float(loss) == 0.0
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="targets shape"):
        token_logprobs(params, cfg, tokens, None, seg, targets[:, :-1], 1.0, 4)
    with pytest.raises(ValueError, match="chunk"):
        token_logprobs(params, cfg, tokens, None, seg, targets, 1.0, 0)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(params, cfg, tokens, None, seg, targets, -1.0, 4)


@pytest.mark.parametrize("chunk", [3, None])
def test_logprob_gradients_match_numpy(setup, chunk):
    """d/dhidden and d/dlm_head of sum(w * log p(target)) against the closed form in numpy:
    dz = w (onehot - softmax(z)), dh = dz W^T, dW = h^T dz."""
    cfg, params, _, _, _, _ = setup
    rng = np.random.default_rng(3)
    b, t, d = 2, 7, cfg.hidden_size
    hidden = rng.standard_normal((b, t, d)).astype(np.float32)
    targets = rng.integers(0, cfg.vocab_size, (b, t))
    w = rng.standard_normal((b, t)).astype(np.float32)

    def loss(head, h):
        p = {**params, "lm_head": head}
        return jnp.sum(w * logprobs_from_hidden(p, cfg, h, jnp.asarray(targets), 1.0, chunk))

    g_head, g_h = jax.jit(jax.grad(loss, argnums=(0, 1)))(params["lm_head"], hidden)
    head = np.asarray(params["lm_head"], np.float64)
    z = hidden.astype(np.float64) @ head
    dz = w[..., None] * (np.eye(cfg.vocab_size)[targets] - np.exp(_np_log_softmax(z)))
    np.testing.assert_allclose(np.asarray(g_h), dz @ head.T, atol=1e-5, rtol=1e-4)
    want_head = np.einsum("btd,btv->dv", hidden.astype(np.float64), dz)
    np.testing.assert_allclose(np.asarray(g_head), want_head, atol=1e-5, rtol=1e-4)
