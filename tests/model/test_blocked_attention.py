"""The blocked causal kernel with its own backward equals dense attention: values against a
numpy softmax reference, gradients against autodiff of JAX's own dense kernel
(`jax.nn.dot_product_attention`), on one device and sharded over 8."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxrepair.model.attention import attention, resolve_impl, segment_causal_mask
from jaxrepair.model.blocked_attention import block_size, blocked_causal_attention
from jaxrepair.model.sharding import make_mesh

B, N, K, H = 2, 4, 2, 16


def _inputs(t: int, seed: int = 0, b: int = B):
    rng = np.random.default_rng(seed)
    shapes = ((b, t, N, H), (b, t, K, H), (b, t, K, H), (b, t, N, H))
    q, k, v, w = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    seg = np.ones((b, t), np.int32)
    seg[0, t // 3 :] = 2  # a document boundary inside a block
    seg[1, t - 7 :] = 0  # a padding tail
    return q, k, v, w, seg


def _numpy_attention(q, k, v, mask):
    g = N // K
    kr, vr = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    s = np.einsum("bqnh,bsnh->bnqs", q.astype(np.float64), kr) * H**-0.5
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnqs,bsnh->bqnh", p, vr)


def _dense(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


@pytest.mark.parametrize("t,block,packed", [(37, 16, False), (200, 64, True), (130, None, True)])
def test_values_and_gradients_match_dense(t, block, packed):
    q, k, v, w, seg = _inputs(t)
    causal = np.tril(np.ones((t, t), bool))[None, None]
    mask = np.asarray(segment_causal_mask(jnp.asarray(seg))) if packed else causal
    kmask = jnp.asarray(mask) if packed else None
    out = jax.jit(blocked_causal_attention, static_argnums=4)(q, k, v, kmask, block)
    np.testing.assert_allclose(np.asarray(out), _numpy_attention(q, k, v, mask), atol=2e-6)

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * w)

    ours = jax.jit(
        jax.grad(
            lambda *a: loss(lambda q, k, v: blocked_causal_attention(q, k, v, kmask, block), *a),
            argnums=(0, 1, 2),
        )
    )(q, k, v)
    ref = jax.jit(
        jax.grad(
            lambda *a: loss(lambda q, k, v: _dense(q, k, v, jnp.asarray(mask)), *a),
            argnums=(0, 1, 2),
        )
    )(q, k, v)
    for name, a, b in zip("qkv", ours, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, err_msg=f"d{name}")


def test_sharded_over_eight_devices_equals_one_device():
    """Batch over data, heads over tensor: GSPMD partitions the kernel's dots; same values
    and gradients as the single-device run."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    t = 96
    q, k, v, w, seg = _inputs(t, seed=1, b=4)
    mask = segment_causal_mask(jnp.asarray(seg))

    def loss(q, k, v):
        return jnp.sum(blocked_causal_attention(q, k, v, mask, 32) * w)

    want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    heads = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor", None))
    qs, ks, vs = (jax.device_put(x, heads) for x in (q, k, v))
    got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(qs, ks, vs)
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-6)
    for a, b in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bfloat16_inputs_keep_a_float32_softmax():
    q, k, v, w, _ = _inputs(64, seed=2)
    causal = np.tril(np.ones((64, 64), bool))[None, None]
    out = blocked_causal_attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), None, 16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out, np.float32), _numpy_attention(q, k, v, causal), atol=3e-2
    )


def test_auto_is_blocked_on_cpu_and_dispatch_uses_it():
    assert resolve_impl("auto") == ("blocked" if jax.default_backend() == "cpu" else "xla")
    assert resolve_impl("splash") == "splash"
    q, k, v, _, seg = _inputs(48, seed=3)
    a = attention(q, k, v, None, "auto", segment_ids=jnp.asarray(seg))
    b = attention(q, k, v, None, "xla", segment_ids=jnp.asarray(seg))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)
    assert block_size(512) == 128 and block_size(8192) == 512


def test_cross_attention_shapes_are_refused():
    q, k, v, _, _ = _inputs(16)
    with pytest.raises(ValueError, match="self-attention"):
        blocked_causal_attention(q, k[:, :8], v[:, :8], None)
