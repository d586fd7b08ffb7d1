"""The MoE grouped GEMMs: the tiled path (XLA:CPU's default) and the ragged_dot path against a
numpy reference of the per-token expert mixture, values and gradients, on one device and
under an 8-device mesh; no token is ever dropped, however unbalanced the routing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrepair.model import forward, init_params, make_mesh
from jaxrepair.model.config import ConfigError, Qwen3Config
from jaxrepair.model.moe import _tile_experts, moe, resolve_impl, tile_rows
from tests.model.hlo_text import dot_operand_types

D, M, E, K = 24, 16, 6, 2


def _cfg(impl: str, norm_topk_prob: bool = True) -> Qwen3Config:
    return Qwen3Config.preset(
        "tiny-moe",
        hidden_size=D,
        num_experts=E,
        num_experts_per_tok=K,
        moe_intermediate_size=M,
        norm_topk_prob=norm_topk_prob,
        moe_impl=impl,
    )


def _block_params(seed: int, router_bias_to: int | None = None) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    router = r.standard_normal((D, E)) * 0.3
    if router_bias_to is not None:  # every token prefers this expert: one huge group
        router[:, router_bias_to] += 5.0
    return {
        "router": router,
        "experts_gate": r.standard_normal((E, D, M)) * 0.2,
        "experts_up": r.standard_normal((E, D, M)) * 0.2,
        "experts_down": r.standard_normal((E, M, D)) * 0.2,
    }


def numpy_moe_and_grads(lp, h, norm_topk_prob):
    """float64 forward of sum(sin(moe(h))) and its hand-written backward, token by token."""
    x = h.reshape(-1, D)
    n = x.shape[0]
    logits = x @ lp["router"]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    idx = np.argsort(-p, axis=-1, kind="stable")[:, :K]
    w = np.take_along_axis(p, idx, -1)
    s = w.sum(-1, keepdims=True) if norm_topk_prob else np.ones((n, 1))
    wn = w / s
    out = np.zeros_like(x)
    cache = {}
    for i in range(n):
        for j in range(K):
            e = idx[i, j]
            g, u = x[i] @ lp["experts_gate"][e], x[i] @ lp["experts_up"][e]
            sig = 1 / (1 + np.exp(-g))
            a = g * sig * u
            y = a @ lp["experts_down"][e]
            out[i] += wn[i, j] * y
            cache[i, j] = (g, u, sig, a, y)
    dout = np.cos(out)
    grads = {name: np.zeros_like(v) for name, v in lp.items()}
    dx = np.zeros_like(x)
    dp = np.zeros_like(p)
    for i in range(n):
        dwn = np.zeros(K)
        for j in range(K):
            e = idx[i, j]
            g, u, sig, a, y = cache[i, j]
            dy = wn[i, j] * dout[i]
            dwn[j] = dout[i] @ y
            da = lp["experts_down"][e] @ dy
            grads["experts_down"][e] += np.outer(a, dy)
            dg = da * u * (sig + g * sig * (1 - sig))
            du = da * g * sig
            grads["experts_gate"][e] += np.outer(x[i], dg)
            grads["experts_up"][e] += np.outer(x[i], du)
            dx[i] += lp["experts_gate"][e] @ dg + lp["experts_up"][e] @ du
        dw = dwn / s[i] - (dwn @ w[i]) / s[i] ** 2 if norm_topk_prob else dwn
        dp[i, idx[i]] += dw
    dlogits = p * (dp - (dp * p).sum(-1, keepdims=True))
    grads["router"] = x.T @ dlogits
    dx += dlogits @ lp["router"].T
    return np.sin(out).sum(), grads, dx.reshape(h.shape)


def _loss(cfg):
    return lambda lp, h: jnp.sum(jnp.sin(moe(cfg, lp, h)))


def _assert_matches(value, grads, ref):
    ref_value, ref_grads, ref_dh = ref
    np.testing.assert_allclose(float(value), ref_value, rtol=1e-5)
    lp_grads, dh = grads
    for name, g in lp_grads.items():
        np.testing.assert_allclose(np.asarray(g), ref_grads[name], atol=2e-5, err_msg=name)
    np.testing.assert_allclose(np.asarray(dh), ref_dh, atol=2e-5)


@pytest.mark.parametrize("impl", ["tiled", "ragged"])
@pytest.mark.parametrize(
    "norm_topk_prob,bias_to,shape",
    [(True, None, (2, 13)), (False, None, (3, 7)), (True, 4, (2, 19))],
    ids=["balanced", "no-renorm", "one-expert-takes-all"],
)
def test_grouped_experts_match_numpy_values_and_gradients(impl, norm_topk_prob, bias_to, shape):
    lp = _block_params(seed=len(shape) + shape[1], router_bias_to=bias_to)
    h = np.random.default_rng(shape[1]).standard_normal((*shape, D))
    ref = numpy_moe_and_grads(lp, h, norm_topk_prob)
    cfg = _cfg(impl, norm_topk_prob)
    lp32 = {k: jnp.asarray(v, jnp.float32) for k, v in lp.items()}
    value, grads = jax.jit(jax.value_and_grad(_loss(cfg), argnums=(0, 1)))(
        lp32, jnp.asarray(h, jnp.float32)
    )
    _assert_matches(value, grads, ref)


def test_tiled_and_ragged_outputs_agree_in_float32():
    lp = {k: jnp.asarray(v, jnp.float32) for k, v in _block_params(seed=7).items()}
    h = jnp.asarray(np.random.default_rng(1).standard_normal((4, 33, D)), jnp.float32)
    tiled = moe(_cfg("tiled"), lp, h)
    ragged = moe(_cfg("ragged"), lp, h)
    np.testing.assert_allclose(np.asarray(tiled), np.asarray(ragged), atol=1e-6, rtol=1e-6)


def test_tiled_under_an_8_device_mesh_matches_numpy():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    lp = _block_params(seed=11)
    h = np.random.default_rng(3).standard_normal((4, 10, D))
    ref = numpy_moe_and_grads(lp, h, True)
    experts = NamedSharding(mesh, P("tensor", "fsdp", None))
    lp_sh = {
        k: jax.device_put(
            jnp.asarray(v, jnp.float32),
            NamedSharding(mesh, P("fsdp", None)) if k == "router" else experts,
        )
        for k, v in lp.items()
    }
    h_sh = jax.device_put(
        jnp.asarray(h, jnp.float32), NamedSharding(mesh, P(("data", "fsdp"), None, None))
    )
    value, grads = jax.jit(jax.value_and_grad(_loss(_cfg("tiled")), argnums=(0, 1)))(lp_sh, h_sh)
    _assert_matches(value, grads, ref)


@pytest.mark.slow  # ~10-20 s: two whole-model gradients; the block under a mesh stays default
def test_tiled_model_under_a_mesh_equals_ragged_model_on_one_device():
    """The whole model (scan over layers, sharded params and activations): logits and the
    gradient of a loss equal the ragged_dot path's."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    cfg = Qwen3Config.preset("tiny-moe")
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    params = init_params(cfg, jax.random.key(0))
    sharded = init_params(cfg, jax.random.key(0), mesh=mesh)
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (4, 12)))

    def loss(p, c, m):
        return jnp.mean(jax.nn.log_softmax(forward(p, c, tokens, mesh=m))[..., 5])

    ragged = cfg.replace(moe_impl="ragged")
    tiled = cfg.replace(moe_impl="tiled")
    v_ref, g_ref = jax.value_and_grad(loss)(params, ragged, None)
    v, g = jax.jit(jax.value_and_grad(lambda p: loss(p, tiled, mesh)))(sharded)
    np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)


def test_tile_rows_and_impl_choice():
    assert tile_rows(4096, 8) == 128  # the benchmark's 2048 tokens x top 2
    assert tile_rows(16, 8) == 8  # a decode step
    assert tile_rows(16384, 128) == 64  # Qwen3-30B-A3B, 2048 tokens
    assert resolve_impl("auto") == ("tiled" if jax.default_backend() == "cpu" else "ragged")
    assert resolve_impl("ragged") == "ragged"
    with pytest.raises(ConfigError, match="moe_impl='megablocks'"):
        Qwen3Config(moe_impl="megablocks")


def test_tiled_bfloat16_matches_numpy_and_keeps_bfloat16_products():
    """bf16 weights and activations: the tile loop's two forward and four backward products take
    bf16 operands (XLA:CPU runs a bf16 product with a transposed operand in float32), and
    values and gradients stay within bf16 rounding of the float64 reference computed from the
    same bf16 numbers."""
    bf = ml_dtypes.bfloat16
    lp = {k: v.astype(bf) for k, v in _block_params(seed=5).items()}
    h = np.random.default_rng(5).standard_normal((2, 13, D)).astype(bf)
    ref_value, ref_grads, ref_dh = numpy_moe_and_grads(
        {k: v.astype(np.float64) for k, v in lp.items()}, h.astype(np.float64), True
    )
    step = jax.jit(jax.value_and_grad(_loss(_cfg("tiled")), argnums=(0, 1)))
    lpb = {k: jnp.asarray(v) for k, v in lp.items()}
    value, (grads, dh) = step(lpb, jnp.asarray(h))
    np.testing.assert_allclose(float(value), ref_value, rtol=2e-2, atol=0.1)
    for name, g in {**grads, "h": dh}.items():
        want = ref_dh if name == "h" else ref_grads[name]
        assert g.dtype == jnp.bfloat16, name
        scale = np.abs(want).max()
        np.testing.assert_allclose(np.asarray(g, np.float64), want, atol=2e-2 * scale, err_msg=name)

    x = jnp.asarray(np.random.default_rng(6).standard_normal((3, 8, D)), jnp.bfloat16)
    tiles_of = jnp.asarray([1, 0, 0, 0, 2, 0], jnp.int32)
    weights = (lpb["experts_gate"], lpb["experts_up"], lpb["experts_down"])

    def loss(x, *w):
        return jnp.sum(jax.nn.silu(_tile_experts(x, *w, tiles_of)).astype(jnp.float32))

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).lower(x, *weights).compile()
    operands = dot_operand_types(hlo.as_text())
    assert len(operands) == 6, operands  # [g | u] and down; dx, d[g | u]-weights, d-down
    assert all(t == ["bf16", "bf16"] for t in operands), operands


def test_tile_loop_matches_numpy_per_expert_and_leaves_padding_tiles_zero():
    """The experts' tile loop directly: expert e owns tiles_of[e] consecutive tiles (some
    experts none), the trailing tile is padding; the SwiGLU MLP's values and gradients
    against a float64 numpy forward and hand-written backward, tile by tile."""
    rng = np.random.default_rng(9)
    tiles_of = np.array([2, 0, 3, 0, 1, 0])
    x = rng.standard_normal((7, 8, D))
    wg, wu = (rng.standard_normal((E, D, M)) * 0.3 for _ in range(2))
    wd = rng.standard_normal((E, M, D)) * 0.3
    dy = rng.standard_normal((7, 8, D))
    want = {"y": np.zeros_like(x), "x": np.zeros_like(x)}
    want.update(wg=np.zeros_like(wg), wu=np.zeros_like(wu), wd=np.zeros_like(wd))
    for i, e in enumerate(np.repeat(np.arange(E), tiles_of)):  # the used tiles' experts
        g, u = x[i] @ wg[e], x[i] @ wu[e]
        sig = 1 / (1 + np.exp(-g))
        a = g * sig * u
        want["y"][i] = a @ wd[e]
        da = dy[i] @ wd[e].T
        dg, du = da * u * (sig + g * sig * (1 - sig)), da * g * sig
        want["x"][i] = dg @ wg[e].T + du @ wu[e].T
        want["wg"][e] += x[i].T @ dg
        want["wu"][e] += x[i].T @ du
        want["wd"][e] += a.T @ dy[i]

    def run(x, wg, wu, wd):
        return _tile_experts(x, wg, wu, wd, jnp.asarray(tiles_of, jnp.int32))

    args = [jnp.asarray(a, jnp.float32) for a in (x, wg, wu, wd)]
    y = jax.jit(run)(*args)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(run(*a) * dy), argnums=(0, 1, 2, 3)))(*args)
    assert not np.asarray(y[6]).any() and not np.asarray(grads[0][6]).any()  # padding tile
    for name, got in zip(("y", "x", "wg", "wu", "wd"), (y, *grads), strict=True):
        np.testing.assert_allclose(np.asarray(got), want[name], rtol=1e-5, atol=1e-4, err_msg=name)
