"""The linear layers' product with its own backward (XLA:CPU's plain forms) equals the
product and its gradients computed in float64 numpy, on one device and sharded over 8; its
bfloat16 backward keeps bfloat16 products; the model uses it exactly where the remat policy
allows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxrepair.model import Qwen3Config
from jaxrepair.model.linear import product
from jaxrepair.model.qwen3 import plain_forms
from jaxrepair.model.sharding import make_mesh
from tests.model.hlo_text import dot_operand_types

M, K, N = 48, 40, 56


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(s).astype(np.float32) for s in ((M, K), (K, N), (M, N)))


def _numpy(x, w, g):
    """y = x w and the gradients of sum(y * g) in float64."""
    x, w, g = (np.asarray(a, np.float64) for a in (x, w, g))
    return x @ w, g @ w.T, x.T @ g


def _value_and_grads(x, w, g, out_dtype, plain: bool):
    def loss(x, w):
        return jnp.sum(product(x, w, out_dtype, plain_forms=plain).astype(jnp.float32) * g)

    y = jax.jit(lambda x, w: product(x, w, out_dtype, plain_forms=plain))(x, w)
    return (y, *jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w))


@pytest.mark.parametrize("plain", [True, False])
def test_float32_value_and_gradients_match_numpy(plain):
    x, w, g = _inputs()
    got = _value_and_grads(x, w, g, jnp.float32, plain)
    for a, want in zip(got, _numpy(x, w, g), strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(a), want, rtol=1e-5, atol=1e-5)


def test_bfloat16_value_and_gradients_match_numpy():
    """bf16 operands, float32 accumulation, one rounding of each result to bf16: within a
    bf16 ulp of the float64 products of the same bf16 numbers."""
    x, w, g = _inputs(1)
    bf = ml_dtypes.bfloat16
    xb, wb, gb = (a.astype(bf) for a in (x, w, g))
    got = _value_and_grads(jnp.asarray(xb), jnp.asarray(wb), jnp.asarray(gb), jnp.bfloat16, True)
    for a, want in zip(got, _numpy(xb, wb, gb), strict=True):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float64), want, rtol=2**-8, atol=1e-2)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sharded_over_eight_devices_matches_numpy(dtype):
    """Rows over data x fsdp, columns over tensor, the weight's input axis over fsdp: GSPMD
    partitions the forward and both gradient products (the sharded contractions sum in
    another order; bf16 takes the row-major copies); the same numpy values and tolerances as
    on one device."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    x, w, g = (a.astype(np.dtype(getattr(ml_dtypes, dtype, dtype))) for a in _inputs(2))
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None)))
    ws = jax.device_put(w, NamedSharding(mesh, PartitionSpec("fsdp", "tensor")))
    gs = jax.device_put(g, NamedSharding(mesh, PartitionSpec(("data", "fsdp"), "tensor")))
    got = _value_and_grads(xs, ws, gs, jnp.dtype(dtype), True)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 2**-8, "atol": 1e-2}
    for a, want in zip(got, _numpy(x, w, g), strict=True):
        assert a.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(a, np.float64), want, **tol)


def test_bfloat16_backward_runs_bfloat16_products():
    """XLA:CPU runs a bf16 product with a transposed (column-major) operand in float32, at
    half the speed: every product of the forward and backward here must take bf16 operands."""
    x, w, g = (jnp.asarray(a, jnp.bfloat16) for a in _inputs(3))

    def loss(x, w):
        y = product(x, w, jnp.bfloat16, plain_forms=True)
        return jnp.sum(jax.nn.silu(y).astype(jnp.float32) * g)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    operands = dot_operand_types(hlo)
    assert len(operands) == 3, operands
    assert all(t == ["bf16", "bf16"] for t in operands), operands


def test_model_uses_plain_forms_on_cpu_unless_remat_saves_dots():
    cfg = Qwen3Config.preset("tiny")
    assert jax.default_backend() == "cpu"
    assert plain_forms(cfg.replace(remat="none"), None)
    assert plain_forms(cfg.replace(remat="full"), None)
    assert not plain_forms(cfg.replace(remat="save_dots"), None)
